/**
 * The default load balancer (lvscare, as sealos) on a small cluster: the ipvs
 * rules set with ipvsadm before the node's join, the lvscare static pod with
 * sealos' arguments, apiserver.cluster.local on the VIP; adding a master
 * updates the node's rules and pod; reset removes them. ipvsadm, kubeadm and
 * systemctl are the stand-ins of test/fixtures/cluster-kube (no ipvs here).
 */
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { SEALIMG, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, type TestHosts } from '../helpers/hosts.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg run: the lvscare load balancer');
const FIXTURE = new URL('../../../test/fixtures/cluster-kube/', import.meta.url).pathname;
const ctx = {} as { hosts: TestHosts; root: string; home: string };
const host = (i: number) => ctx.hosts.hosts[i]!;
const VIP = '10.103.97.2';

function runSealimg(args: string[]) {
  return ctx.hosts.operatorRun(process.execPath, [SEALIMG, '--root', ctx.root, ...args], { env: { SEALIMG_HOME: ctx.home, SEALIMG_SSH_PASSWORD: ctx.hosts.rootPassword }, timeoutMs: 180_000 });
}

const calls = async (i: number) =>
  (await host(i).sh('cat /var/lib/sealimg-standin/calls.log 2>/dev/null || true')).stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ').slice(2).join(' '));

const pod = async () => parse((await host(1).sh('cat /etc/kubernetes/manifests/kube-sealimg-lvscare.yaml')).stdout);

test.before(async () => {
  await cleanupStaleHosts();
  ctx.root = await tmpDir();
  ctx.home = await tmpDir();
  const context = join(await tmpDir(), 'cluster-kube');
  await cp(FIXTURE, context, { recursive: true });
  const b = await sealimg(ctx.root, ['build', '-q', '-t', 'example.com/kube-standins:v1.28.3', context]);
  assert.is(b.code, 0, b.stderr + b.stdout);
  // Host 0 master, host 1 node, host 2 added as a master.
  ctx.hosts = await createTestHosts({ count: 3 });
});

test.after(async () => {
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

test('the node gets the ipvs rules before its join, the lvscare pod and the VIP as apiserver.cluster.local', async () => {
  const r = await runSealimg(['run', 'example.com/kube-standins:v1.28.3', '--masters', host(0).ip, '--nodes', host(1).ip]);
  assert.is(r.code, 0, r.stderr);
  const c = await calls(1);
  const rules = c.filter((l) => l.startsWith('ipvsadm'));
  assert.equal(rules, [`ipvsadm -D -t ${VIP}:6443`, `ipvsadm -A -t ${VIP}:6443 -s rr`, `ipvsadm -a -t ${VIP}:6443 -r ${host(0).ip}:6443 -m`]);
  assert.ok(c.indexOf(rules[2]!) < c.findIndex((l) => l.startsWith('kubeadm join')), c.join('\n'));
  const p = await pod();
  assert.equal(p.spec.containers[0].args, ['care', '--vs', `${VIP}:6443`, '--health-path', '/healthz', '--health-schem', 'https', '--rs', `${host(0).ip}:6443`]);
  assert.match(p.spec.containers[0].image, /^sealos\.hub:5000\/labring\/lvscare:/);
  assert.match((await host(1).sh('grep apiserver.cluster.local /etc/hosts')).stdout, `${VIP} apiserver.cluster.local`);
  assert.match((await host(0).sh('grep apiserver.cluster.local /etc/hosts')).stdout, `${host(0).ip} apiserver.cluster.local`);
  assert.equal((await calls(0)).filter((l) => l.startsWith('ipvsadm')), [], 'no LB on a master');
});

test('adding a master updates the node: rules and pod name both masters', async () => {
  const r = await runSealimg(['add', '--masters', host(2).ip]);
  assert.is(r.code, 0, r.stderr);
  assert.ok((await calls(2)).some((l) => l.startsWith('kubeadm join')));
  assert.equal((await pod()).spec.containers[0].args.filter((a: string) => a.endsWith(':6443')).slice(1), [`${host(0).ip}:6443`, `${host(2).ip}:6443`]);
  const c = await calls(1);
  assert.is(c.filter((l) => l.startsWith('kubeadm join')).length, 1, 'the node did not join again');
  assert.ok(c.lastIndexOf(`ipvsadm -a -t ${VIP}:6443 -r ${host(2).ip}:6443 -m`) > c.findIndex((l) => l.startsWith('kubeadm join')));
});

test('reset removes the lvscare pod', async () => {
  const r = await runSealimg(['reset']);
  assert.is(r.code, 0, r.stderr);
  assert.is((await host(1).sh('test -e /etc/kubernetes/manifests/kube-sealimg-lvscare.yaml && echo left || echo gone')).stdout.trim(), 'gone');
});

test.run();
