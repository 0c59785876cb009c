/**
 * `sealimg run` installing Kubernetes on 3 masters + 2 nodes (test hosts,
 * test/helpers/hosts.ts). No kubelet or ipvs can run here, so the test image
 * (test/fixtures/cluster-kube) carries stand-ins NAMED as such for kubeadm,
 * kubectl, ipvsadm and systemctl, which record their calls and the configs
 * they were given. Everything else is real: sealimg's certificates are
 * checked with openssl on the hosts, and the nodes' load balancer is Debian's
 * haproxy, run with sealimg's configuration in front of three stand-in
 * apiservers (TLS servers on the masters' :6443 with sealimg's apiserver
 * certificate).
 */
import { cp, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, parseAllDocuments } from 'yaml';
import { SEALIMG, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, type TestHost, type TestHosts } from '../helpers/hosts.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg run: kubeadm, certificates, load balancer');
const FIXTURE = new URL('../../../test/fixtures/cluster-kube/', import.meta.url).pathname;
const ctx = {} as { hosts: TestHosts; root: string; home: string; clusterfile: string };

const host = (i: number) => ctx.hosts.hosts[i]!;
const M = [0, 1, 2];
const N = [3, 4];

function runSealimg(args: string[]) {
  return ctx.hosts.operatorRun(process.execPath, [SEALIMG, '--root', ctx.root, ...args], { env: { SEALIMG_HOME: ctx.home }, timeoutMs: 180_000 });
}

interface Call {
  t: number;
  host: string;
  tool: string;
  args: string;
}

async function calls(i: number): Promise<Call[]> {
  const r = await host(i).sh('cat /var/lib/sealimg-standin/calls.log 2>/dev/null || true');
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [t, h, tool, ...args] = l.split(' ');
      return { t: Number(t), host: h!, tool: tool!, args: args.join(' ') };
    });
}

const allCalls = async () => (await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)))).flat().sort((a, b) => a.t - b.t);

async function sh(h: TestHost, script: string): Promise<string> {
  const r = await h.sh(script);
  assert.is(r.code, 0, `${h.hostname}: ${script}: ${r.stderr}`);
  return r.stdout;
}

async function status() {
  return JSON.parse((await runSealimg(['status', '--cluster', 'default', '--format', 'json'])).stdout) as { phase: string; conditions: Array<{ type: string; status: string; message: string }> };
}

test.before(async () => {
  await cleanupStaleHosts();
  ctx.root = await tmpDir();
  ctx.home = await tmpDir();
  const context = join(await tmpDir(), 'cluster-kube');
  await cp(FIXTURE, context, { recursive: true });
  await copyFile('/usr/sbin/haproxy', join(context, 'bin', 'haproxy'));
  // The same image at other Kubernetes versions: an upgrade, and a downgrade to refuse.
  for (const v of ['v1.28.3', 'v1.29.1', 'v1.27.9']) {
    const sealfile = (await readFile(join(FIXTURE, 'Sealfile'), 'utf8')).replace('version=v1.28.3', `version=${v}`);
    await writeFile(join(context, 'Sealfile'), sealfile);
    await writeFile(join(context, 'bin', 'VERSION'), `${v}\n`);
    const b = await sealimg(ctx.root, ['build', '-q', '-t', `example.com/kube-standins:${v}`, context]);
    assert.is(b.code, 0, b.stderr + b.stdout);
  }
  // Hosts 0-2 masters, 3-4 nodes, 5 added later.
  ctx.hosts = await createTestHosts({ count: 6 });
  const ips = ctx.hosts.hosts.map((h) => h.ip);
  // A sealos-shaped Clusterfile with kubeadm documents overriding the defaults.
  ctx.clusterfile = join(await tmpDir(), 'Clusterfile');
  await writeFile(
    ctx.clusterfile,
    [
      'apiVersion: apps.sealos.io/v1beta1',
      'kind: Cluster',
      'metadata: {name: default}',
      'spec:',
      '  hosts:',
      `  - ips: [${M.map((i) => ips[i]).join(', ')}]`,
      '    roles: [master, amd64]',
      `  - ips: [${N.map((i) => ips[i]).join(', ')}]`,
      '    roles: [node, amd64]',
      '  image: [example.com/kube-standins:v1.28.3]',
      `  ssh: {user: root, passwd: '${ctx.hosts.rootPassword}'}`,
      '---',
      'apiVersion: kubeadm.k8s.io/v1beta3',
      'kind: ClusterConfiguration',
      'networking:',
      '  podSubnet: 172.30.0.0/16',
      'apiServer:',
      '  certSANs: [api.example.test]',
      '',
    ].join('\n'),
  );
});

test.after(async () => {
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

test('a failing kubeadm join on one node is reported with that host and step', async () => {
  await sh(host(4), 'mkdir -p /var/lib/sealimg-standin && touch /var/lib/sealimg-standin/fail-join');
  const r = await runSealimg(['run', '-f', ctx.clusterfile, '--lb', 'haproxy']);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, `Error: ${host(4).ip}: kubeadm join: command exited with code 1`);
  assert.match(r.stderr, 'the stand-in was made to fail');
  const st = await status();
  assert.is(st.phase, 'ClusterInProgress');
  const cond = (h: number) => st.conditions.find((c) => c.type === `Kube/Join/${host(h).ip}`);
  assert.is(cond(4)?.status, 'False');
  assert.is(cond(3)?.status, 'True', 'the other node joined');
});

test('re-running after the fix completes the join without touching the other hosts', async () => {
  const before = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  await sh(host(4), 'rm /var/lib/sealimg-standin/fail-join');
  const r = await runSealimg(['run', '-f', ctx.clusterfile]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'Cluster default is ready');
  const after = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  for (const i of [1, 2, 3]) assert.equal(after[i], before[i], `${host(i).hostname} was not touched`);
  // master0 only made the fresh join token.
  assert.equal(after[0]!.slice(before[0]!.length).map((c) => `${c.tool} ${c.args.split(' ').slice(0, 2).join(' ')}`), ['kubeadm token create']);
  const n2 = after[4]!.slice(before[4]!.length).map((c) => `${c.tool} ${c.args.split(' ')[0]}`);
  assert.equal(n2, ['kubeadm join'], 'the failed join was tried again (after a reset only if it had left files)');
  assert.is((await status()).phase, 'ClusterSuccess');
});

test("the steps ran in sealos' order: init on master0, masters join one at a time, then each node's LB before its join", async () => {
  const seq = (await allCalls())
    .filter((c) => (c.tool === 'kubeadm' && /^(init|join)/.test(c.args)) || (c.tool === 'systemctl' && c.args.startsWith('restart')))
    .map((c) => `${c.host} ${c.tool} ${c.args.split(' ')[0]}`);
  const first = (s: string) => seq.indexOf(s);
  const [m0, m1, m2, n1, n2] = ctx.hosts.hosts.map((h) => h.hostname);
  assert.equal(seq.slice(0, 3), [`${m0} kubeadm init`, `${m1} kubeadm join`, `${m2} kubeadm join`], seq.join('\n'));
  for (const n of [n1, n2]) {
    assert.ok(first(`${n} systemctl restart`) > 2, `${n}: LB after the masters`);
    assert.ok(first(`${n} systemctl restart`) < first(`${n} kubeadm join`), `${n}: LB before its join\n${seq.join('\n')}`);
  }
  const init = (await calls(0)).find((c) => c.args.startsWith('init'))!;
  assert.match(init.args, '--skip-phases=certs,kubeconfig');
});

test('kubeadm configuration: API version, endpoint, SANs, registry, Clusterfile overrides, join credentials', async () => {
  const docs = parseAllDocuments(await sh(host(0), 'cat /var/lib/sealimg-standin/kubeadm-init-kubeadm-init.yaml')).map((d) => d.toJS());
  const cluster = docs.find((d) => d.kind === 'ClusterConfiguration');
  assert.is(cluster.apiVersion, 'kubeadm.k8s.io/v1beta3');
  assert.is(cluster.kubernetesVersion, 'v1.28.3');
  assert.is(cluster.controlPlaneEndpoint, 'apiserver.cluster.local:6443');
  assert.is(cluster.imageRepository, 'sealos.hub:5000');
  assert.is(cluster.networking.podSubnet, '172.30.0.0/16', 'the Clusterfile overrides the default');
  assert.is(cluster.networking.serviceSubnet, '10.96.0.0/22', 'fields it does not name keep their defaults');
  for (const san of [...M.map((i) => host(i).ip), '10.103.97.2', 'apiserver.cluster.local', 'api.example.test', '127.0.0.1']) assert.ok(cluster.apiServer.certSANs.includes(san), san);
  assert.is(docs.find((d) => d.kind === 'InitConfiguration').localAPIEndpoint.advertiseAddress, host(0).ip);

  const hash = (await sh(host(0), 'openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt | openssl pkey -pubin -outform der | sha256sum')).split(' ')[0];
  const nodeJoin = parse(await sh(host(3), 'cat /var/lib/sealimg-standin/kubeadm-join-kubeadm-join-node.yaml'));
  assert.is(nodeJoin.kind, 'JoinConfiguration');
  assert.equal(nodeJoin.discovery.bootstrapToken.caCertHashes, [`sha256:${hash}`]);
  assert.match(nodeJoin.discovery.bootstrapToken.token, /^[a-z0-9]{6}\.[a-z0-9]{16}$/);
  assert.is(nodeJoin.discovery.bootstrapToken.apiServerEndpoint, 'apiserver.cluster.local:6443');
  assert.is(nodeJoin.nodeRegistration.name, host(3).hostname);
  assert.is(nodeJoin.controlPlane, undefined);
  const masterJoin = parse(await sh(host(1), 'cat /var/lib/sealimg-standin/kubeadm-join-kubeadm-join-master.yaml'));
  assert.is(masterJoin.controlPlane.localAPIEndpoint.advertiseAddress, host(1).ip);
  const tokens = (await calls(0)).filter((c) => c.args.startsWith('token create')).map((c) => c.args.split(' ')[2]);
  assert.ok(tokens.includes(nodeJoin.discovery.bootstrapToken.token), 'the token was made on master0');

  // apiserver.cluster.local: each master itself (master0's IP while joining), the local LB on nodes.
  for (const i of M) assert.match(await sh(host(i), 'grep apiserver.cluster.local /etc/hosts'), `${host(i).ip} apiserver.cluster.local`);
  for (const i of N) assert.match(await sh(host(i), 'grep apiserver.cluster.local /etc/hosts'), '127.0.0.1 apiserver.cluster.local');
});

test('certificates verify against their CAs on every master, last 99 years, and the CAs are shared', async () => {
  const year = new Date().getUTCFullYear();
  const caSums = new Set<string>();
  for (const i of M) {
    const h = host(i);
    const v = await sh(
      h,
      'cd /etc/kubernetes/pki && openssl verify -CAfile ca.crt apiserver.crt apiserver-kubelet-client.crt && openssl verify -CAfile etcd/ca.crt etcd/server.crt etcd/peer.crt apiserver-etcd-client.crt && openssl verify -CAfile front-proxy-ca.crt front-proxy-client.crt',
    );
    assert.is(v.match(/: OK/g)?.length, 6, v);
    const end = await sh(h, 'openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -enddate');
    const endYear = Number(/(\d{4}) GMT/.exec(end)![1]);
    assert.ok(endYear >= year + 98 && endYear <= year + 99, end);
    const sans = await sh(h, 'openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -ext subjectAltName');
    for (const j of M) assert.match(sans, `IP Address:${host(j).ip}`);
    assert.match(sans, 'DNS:api.example.test');
    // Each master's etcd serving certificate is its own.
    assert.match(await sh(h, 'openssl x509 -in /etc/kubernetes/pki/etcd/server.crt -noout -subject'), `CN = ${h.hostname}`);
    caSums.add(await sh(h, 'cat /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/ca.key /etc/kubernetes/pki/sa.key | sha256sum'));
  }
  assert.is(caSums.size, 1, 'one CA and service-account key on every master');
  // The admin kubeconfig copied back to the operator: its client certificate verifies against the cluster CA.
  const admin = parse(await readFile(join(ctx.home, 'default', 'etc', 'admin.conf'), 'utf8'));
  assert.is(admin.clusters[0].cluster.server, 'https://apiserver.cluster.local:6443');
  const dir = await tmpDir();
  await writeFile(join(dir, 'ca.crt'), Buffer.from(admin.clusters[0].cluster['certificate-authority-data'], 'base64'));
  await writeFile(join(dir, 'admin.crt'), Buffer.from(admin.users[0].user['client-certificate-data'], 'base64'));
  const r = await ctx.hosts.operatorRun('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'admin.crt')]);
  assert.is(r.code, 0, r.stderr);
  assert.is((await readFile(join(dir, 'ca.crt'), 'utf8')).trim(), (await sh(host(0), 'cat /etc/kubernetes/pki/ca.crt')).trim());
});

/** A stand-in apiserver: TLS with sealimg's apiserver certificate on the master's :6443, /healthz answers its hostname. */
const APISERVER = `
const https = require('node:https'); const fs = require('node:fs'); const os = require('node:os');
https.createServer({ cert: fs.readFileSync('/etc/kubernetes/pki/apiserver.crt'), key: fs.readFileSync('/etc/kubernetes/pki/apiserver.key') },
  (q, s) => { s.writeHead(q.url === '/healthz' ? 200 : 404); s.end('ok ' + os.hostname()); }).listen(6443, process.argv[2]);
`;

test("haproxy on a node reaches every master's apiserver and keeps working when one stops", async () => {
  for (const i of M) {
    await host(i).sh(`cat > /root/apiserver.js\nsetsid nohup ${process.execPath} /root/apiserver.js ${host(i).ip} > /var/log/standin-apiserver.log 2>&1 < /dev/null & echo $! > /run/standin-apiserver.pid`, { input: APISERVER });
  }
  // Each stand-in is listening before the node's haproxy is asked (its health checks then mark it up within ~2 s).
  for (const i of M) {
    let up = false;
    for (let k = 0; k < 100 && !up; k++) {
      up = (await host(i).sh(`curl -sk --max-time 2 https://${host(i).ip}:6443/healthz`)).stdout.startsWith('ok');
      if (!up) await new Promise((r) => setTimeout(r, 200));
    }
    if (!up) assert.unreachable(`${host(i).hostname}: the stand-in apiserver did not start: ${(await host(i).sh('cat /var/log/standin-apiserver.log; ss -ltnp')).stdout}`);
  }
  const node = host(3);
  await node.sh('cat > /root/ca.crt', { input: await sh(host(0), 'cat /etc/kubernetes/pki/ca.crt') });
  // Through the node's local endpoint, by name, verified against the cluster CA: what kubelet does.
  const get = async () => (await node.sh('curl -sS --max-time 5 --cacert /root/ca.crt https://apiserver.cluster.local:6443/healthz')).stdout;
  const seen = new Set<string>();
  let last = '';
  for (let k = 0; k < 120 && seen.size < 3; k++) {
    const r = await node.sh('curl -sS --max-time 5 --cacert /root/ca.crt https://apiserver.cluster.local:6443/healthz');
    if (r.stdout.startsWith('ok ')) seen.add(r.stdout.slice(3));
    else {
      last = r.stderr;
      await new Promise((res) => setTimeout(res, 250));
    }
  }
  const why = () => Promise.all([node.sh('cat /var/log/standin-sealimg-lb-default.log; ps aux | grep -c [h]aproxy'), host(0).sh('cat /var/log/standin-apiserver.log')]).then((rs) => rs.map((r) => r.stdout + r.stderr).join('\n'));
  assert.equal([...seen].sort(), M.map((i) => host(i).hostname).sort(), `round robin over every master; last error: ${last}; ${seen.size < 3 ? await why() : ''}`);
  assert.match(await sh(node, `cat /etc/sealimg/default/haproxy.cfg`), `server master2 ${host(2).ip}:6443`);

  await sh(host(0), 'kill $(cat /run/standin-apiserver.pid)');
  const answers: string[] = [];
  for (let k = 0; k < 12; k++) answers.push(await get());
  assert.ok(answers.every((a) => /^ok node[23]$/.test(a)), answers.join('\n'));
});

test('the same run again does nothing', async () => {
  const before = await allCalls();
  const r = await runSealimg(['run', '-f', ctx.clusterfile]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'nothing to do');
  assert.equal(await allCalls(), before);
});

const cfHosts = async () => {
  const cf = parseAllDocuments(await readFile(join(ctx.home, 'default', 'Clusterfile'), 'utf8'))[0]!.toJS();
  return (cf.spec.hosts as Array<{ ips: string[]; roles: string[] }>).flatMap((h) => h.ips.map((ip) => `${ip} ${h.roles.includes('master') ? 'master' : 'node'}`)).sort();
};

test('add a node: it gets the LB to every master and joins; other hosts only see the fresh token made', async () => {
  const before = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  const r = await runSealimg(['add', '--nodes', host(5).ip]);
  assert.is(r.code, 0, r.stderr);
  const after = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  for (const i of [1, 2, 3, 4]) assert.equal(after[i], before[i], `${host(i).hostname} was not touched`);
  assert.equal(after[5]!.filter((c) => /^(restart|join)/.test(c.args)).map((c) => `${c.tool} ${c.args.split(' ')[0]}`), ['systemctl restart', 'kubeadm join']);
  for (const m of M) assert.match(await sh(host(5), 'cat /etc/sealimg/default/haproxy.cfg'), `${host(m).ip}:6443`);
  assert.ok((await cfHosts()).includes(`${host(5).ip} node`));
  const again = await runSealimg(['run']);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stderr, 'nothing to do');
});

test('cert --alt-names: a new apiserver certificate with the names on every master, apiserver restarted, kept in the Clusterfile', async () => {
  const r = await runSealimg(['cert', '--alt-names', 'api2.example.test,192.0.2.77']);
  assert.is(r.code, 0, r.stderr);
  for (const i of M) {
    const h = host(i);
    const sans = await sh(h, 'openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -ext subjectAltName');
    for (const want of ['DNS:api2.example.test', 'IP Address:192.0.2.77', 'DNS:api.example.test', `IP Address:${h.ip}`]) assert.match(sans, want, `${h.hostname}: ${want}`);
    assert.match(await sh(h, 'cd /etc/kubernetes/pki && openssl verify -CAfile ca.crt apiserver.crt'), 'apiserver.crt: OK');
    assert.ok((await calls(i)).some((c) => c.tool === 'crictl' && c.args.startsWith('stop')), `${h.hostname}: apiserver restarted`);
  }
  assert.ok((await calls(0)).some((c) => c.args.startsWith('init phase upload-config kubeadm')));
  const meta = parseAllDocuments(await readFile(join(ctx.home, 'default', 'Clusterfile'), 'utf8'))[0]!.toJS().metadata;
  assert.is(meta.annotations['sealimg.io/alt-names'], 'api2.example.test,192.0.2.77');
  const again = await runSealimg(['cert', '--alt-names', 'api2.example.test']);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stderr, 'already has');
});

test('upgrade: a newer version upgrades master0 with kubeadm upgrade apply, then every host one by one with drain and uncordon', async () => {
  const before = await allCalls();
  const r = await runSealimg(['run', 'example.com/kube-standins:v1.29.1']);
  assert.is(r.code, 0, r.stderr);
  const seq = (await allCalls())
    .slice(before.length)
    .map((c) => ({ ...c, args: c.args.replace('--kubeconfig /etc/kubernetes/admin.conf ', '') }))
    .filter((c) => /^(drain|upgrade|restart kubelet|uncordon)/.test(c.args))
    .map((c) => `${c.host} ${c.tool} ${c.args.split(' --')[0]}`);
  const names = ctx.hosts.hosts.map((h) => h.hostname);
  const want = [0, 1, 2, 3, 4, 5].flatMap((i) => [
    `${names[0]} kubectl drain ${names[i]}`,
    i === 0 ? `${names[0]} kubeadm upgrade apply v1.29.1 -y` : `${names[i]} kubeadm upgrade node`,
    `${names[i]} systemctl restart kubelet`,
    `${names[0]} kubectl uncordon ${names[i]}`,
  ]);
  assert.equal(seq, want);
  const meta = parseAllDocuments(await readFile(join(ctx.home, 'default', 'Clusterfile'), 'utf8'))[0]!.toJS().metadata;
  assert.is(meta.annotations['sealimg.io/kubernetes-version'], 'v1.29.1');
  const again = await runSealimg(['run']);
  assert.match(again.stderr, 'nothing to do');
});

test('a downgrade is refused and changes nothing', async () => {
  const before = await allCalls();
  const r = await runSealimg(['run', 'example.com/kube-standins:v1.27.9']);
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, 'runs Kubernetes v1.29.1; an image with version v1.27.9 would downgrade it');
  assert.equal(await allCalls(), before);
  const again = await runSealimg(['run']);
  assert.is(again.code, 0, again.stderr);
  assert.ok(again.stderr.includes('nothing to do'), again.stderr);
});

test('delete a master: drained on master0, reset, its etcd member checked, every LB updated, the Clusterfile updated', async () => {
  // What etcdctl member list would print on master0 if kubeadm reset had not taken the member out.
  await host(0).sh('cat > /var/lib/sealimg-standin/etcd-members', {
    input: M.map((i) => `${i}a${i}b${i}c, started, ${host(i).hostname}, https://${host(i).ip}:2380, https://${host(i).ip}:2379, false\n`).join(''),
  });
  const before = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  const r = await runSealimg(['delete', '--masters', host(2).ip]);
  assert.is(r.code, 0, r.stderr);
  const after = await Promise.all(ctx.hosts.hosts.map((_, i) => calls(i)));
  const m0new = after[0]!.slice(before[0]!.length).map((c) => `${c.tool} ${c.args}`);
  assert.match(m0new[0]!, `kubectl --kubeconfig /etc/kubernetes/admin.conf drain ${host(2).hostname} --ignore-daemonsets`);
  assert.match(m0new[1]!, `delete node ${host(2).hostname}`);
  assert.match(m0new[2]!, /etcdctl .* member list$/);
  assert.match(m0new[3]!, /etcdctl .* member remove 2a2b2c$/, 'the deleted master\'s member, by the ID etcd gave');
  assert.is(m0new.filter((l) => l.includes('member remove')).length, 1);
  assert.ok(after[2]!.slice(before[2]!.length).some((c) => c.tool === 'kubeadm' && c.args.startsWith('reset')), 'kubeadm reset on the deleted master');
  assert.is((await host(2).sh('ls /etc/kubernetes/pki 2>&1; grep -c sealimg /etc/hosts; ls /var/lib/sealimg/data 2>&1')).stdout.includes('ca.crt'), false);
  for (const i of [3, 4, 5]) {
    const cfg = await sh(host(i), 'cat /etc/sealimg/default/haproxy.cfg');
    assert.not.match(cfg, `${host(2).ip}:6443`, `${host(i).hostname}: LB no longer sends to the deleted master`);
    assert.match(cfg, `${host(1).ip}:6443`);
    assert.ok(after[i]!.slice(before[i]!.length).some((c) => c.args.startsWith('restart')), `${host(i).hostname}: LB restarted`);
  }
  assert.equal(after[1], before[1], 'the other master was not touched');
  assert.equal(await cfHosts(), [0, 1, 3, 4, 5].map((i) => `${host(i).ip} ${i < 3 ? 'master' : 'node'}`).sort());
  // master0's stand-in was stopped above: the node still reaches the one master left.
  const out = await sh(host(3), 'curl -sS --max-time 5 --cacert /root/ca.crt https://apiserver.cluster.local:6443/healthz');
  assert.is(out, `ok ${host(1).hostname}`);
  const again = await runSealimg(['run']);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stderr, 'nothing to do');
});

test('a host deleted can be added back as a node; joining after the upgrade, it runs the new binaries', async () => {
  const r = await runSealimg(['add', '--nodes', host(2).ip]);
  assert.is(r.code, 0, r.stderr);
  assert.is((await sh(host(2), 'cat /var/lib/sealimg-standin/joined-with')).trim(), 'v1.29.1', "sealos' issue #4856: not the first image's version");
  const cfg = await sh(host(2), 'cat /etc/sealimg/default/haproxy.cfg');
  assert.match(cfg, `${host(0).ip}:6443`);
  assert.match(cfg, `${host(1).ip}:6443`);
  assert.not.match(cfg, `${host(2).ip}:6443`);
  assert.match(await sh(host(2), 'grep apiserver.cluster.local /etc/hosts'), '127.0.0.1 apiserver.cluster.local');
  assert.ok((await cfHosts()).includes(`${host(2).ip} node`));
});

test('reset undoes Kubernetes and the LB on every host', async () => {
  const r = await runSealimg(['reset']);
  assert.is(r.code, 0, r.stderr);
  for (const i of [0, 1, 2, 3, 4, 5]) {
    const h = host(i);
    assert.is((await h.sh('ls /etc/kubernetes/manifests /etc/kubernetes/pki /etc/sealimg/default 2>/dev/null | wc -l')).stdout.trim(), '0', h.hostname);
    assert.is((await h.sh('grep -c sealimg /etc/hosts || true')).stdout.trim(), '0');
  }
  assert.is((await host(3).sh('pgrep -x haproxy || echo none')).stdout.trim(), 'none', 'the LB service is stopped');
});

test.run();
