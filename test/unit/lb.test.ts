/**
 * The load balancer's rendered files (lvscare static pod, ipvs rules, haproxy
 * configuration checked by haproxy itself) and the CA hash kubeadm pins,
 * checked against openssl's.
 */
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { caCertHash } from '../../src/runner/kube.js';
import { haproxyConfig, ipvsCommands, lbFiles, lvscareArgs } from '../../src/runner/lb.js';
import { PkiBuilder } from '../../src/runner/pki.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('load balancer and join credentials');
const masters = ['10.0.0.11', '10.0.0.12', '10.0.0.13'];

test.after(cleanupTmp);

test("lvscare: sealos' arguments, the image from the embedded registry, ipvs rules for every master", () => {
  assert.equal(lvscareArgs('10.103.97.2', masters.slice(0, 2)), ['care', '--vs', '10.103.97.2:6443', '--health-path', '/healthz', '--health-schem', 'https', '--rs', '10.0.0.11:6443', '--rs', '10.0.0.12:6443']);
  const { files, apply } = lbFiles({ mode: 'lvscare', cluster: 'c', vip: '10.103.97.2', masters, registry: 'sealos.hub:5000', bin: '/x/bin' });
  assert.is(files.length, 1);
  assert.is(files[0]!.path, '/etc/kubernetes/manifests/kube-sealimg-lvscare.yaml');
  const pod = parse(files[0]!.content);
  assert.is(pod.kind, 'Pod');
  assert.ok(pod.spec.hostNetwork);
  assert.match(pod.spec.containers[0].image, /^sealos\.hub:5000\//);
  assert.equal(pod.spec.containers[0].args, lvscareArgs('10.103.97.2', masters));
  assert.ok(apply.endsWith(ipvsCommands('10.103.97.2', masters)), apply);
  assert.match(apply, 'systemctl disable --now sealimg-lb-c', 'a switch from haproxy stops it');
  for (const m of masters) assert.match(apply, `ipvsadm -a -t 10.103.97.2:6443 -r ${m}:6443 -m`);
  assert.ok(apply.indexOf('ipvsadm -A') < apply.indexOf('ipvsadm -a'), 'the virtual server before its real servers');
});

test('haproxy: every master a checked server, /healthz over TLS; haproxy accepts the file', async () => {
  const cfg = haproxyConfig(masters);
  assert.match(cfg, 'option httpchk GET /healthz');
  assert.match(cfg, 'bind 127.0.0.1:6443');
  for (const [i, m] of masters.entries()) assert.match(cfg, `server master${i} ${m}:6443`);
  const file = join(await tmpDir(), 'haproxy.cfg');
  await writeFile(file, cfg);
  execFileSync('haproxy', ['-c', '-q', '-f', file]);
});

test("the CA hash is the sha256 of the CA's SubjectPublicKeyInfo, as openssl computes it", async () => {
  const files = await new PkiBuilder({ masters: [{ name: 'm0', ip: '10.0.0.11' }], vip: '10.103.97.2', kubeVersion: 'v1.28.0' }).build();
  const ca = join(await tmpDir(), 'ca.crt');
  await writeFile(ca, files.get('pki/ca.crt')!);
  const hex = execFileSync('sh', ['-c', `openssl x509 -pubkey -noout -in ${ca} | openssl pkey -pubin -outform der | sha256sum`]).toString().split(' ')[0];
  assert.is(caCertHash(files.get('pki/ca.crt')!), `sha256:${hex}`);
});

test.run();
