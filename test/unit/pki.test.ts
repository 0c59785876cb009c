/**
 * Certificates checked by openssl, as an operator would: they verify against
 * their CA, carry the SANs kubeadm needs, and last 99 years; kubeconfigs hold
 * client certificates the cluster CA signed.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { fileMode, type PkiFiles } from '../../src/runner/pki-files.js';
import { PkiBuilder } from '../../src/runner/pki.js';
import { ok } from '../helpers/cli.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('pki (openssl checks)');
test.after(cleanupTmp);

const masters = [
  { name: 'master-0', ip: '10.77.0.11' },
  { name: 'master-1', ip: '10.77.0.12' },
];
let files: PkiFiles;
let dir: string;

test.before(async () => {
  files = await new PkiBuilder({ masters, vip: '10.103.97.2', altNames: ['api.example.com', '192.0.2.10'], kubeVersion: 'v1.30.2' }).build();
  dir = await tmpDir();
  for (const [rel, content] of files) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), content, { mode: fileMode(rel) });
  }
});

const openssl = (...args: string[]) => ok('openssl', args);

test('every leaf verifies against its CA', async () => {
  const pairs: Array<[string, string]> = [
    ['pki/ca.crt', 'pki/apiserver.crt'],
    ['pki/ca.crt', 'pki/apiserver-kubelet-client.crt'],
    ['pki/front-proxy-ca.crt', 'pki/front-proxy-client.crt'],
    ['pki/etcd/ca.crt', 'pki/etcd/server.crt'],
    ['pki/etcd/ca.crt', 'pki/etcd/peer.crt'],
    ['pki/etcd/ca.crt', 'pki/etcd/healthcheck-client.crt'],
    ['pki/etcd/ca.crt', 'pki/apiserver-etcd-client.crt'],
  ];
  for (const [ca, leaf] of pairs) {
    const out = await openssl('verify', '-CAfile', join(dir, ca), join(dir, leaf));
    assert.match(out, `${join(dir, leaf)}: OK`);
  }
  const wrong = await import('../helpers/cli.js').then((m) => m.run('openssl', ['verify', '-CAfile', join(dir, 'pki/etcd/ca.crt'), join(dir, 'pki/apiserver.crt')]));
  assert.is.not(wrong.code, 0, 'a leaf does not verify against another CA');
});

test('the apiserver certificate names every master, the VIP, the service IP and the extra names', async () => {
  const text = await openssl('x509', '-in', join(dir, 'pki/apiserver.crt'), '-noout', '-ext', 'subjectAltName');
  for (const want of ['DNS:master-0', 'DNS:master-1', 'IP Address:10.77.0.11', 'IP Address:10.77.0.12', 'IP Address:10.103.97.2', 'DNS:apiserver.cluster.local', 'DNS:kubernetes.default.svc.cluster.local', 'DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:10.96.0.1', 'DNS:api.example.com', 'IP Address:192.0.2.10']) {
    assert.ok(text.includes(want), `missing ${want} in ${text}`);
  }
});

test('certificates last 99 years and keys are private', async () => {
  const end = (await openssl('x509', '-in', join(dir, 'pki/apiserver.crt'), '-noout', '-enddate')).trim().replace('notAfter=', '');
  const years = (Date.parse(end) - Date.now()) / (365.25 * 24 * 3600 * 1000);
  assert.ok(years > 98.9 && years < 99.1, `expires in ${years} years`);
  for (const ca of ['pki/ca.crt', 'pki/etcd/ca.crt', 'pki/front-proxy-ca.crt']) {
    await openssl('x509', '-in', join(dir, ca), '-noout', '-checkend', String(98 * 365 * 24 * 3600));
  }
  await openssl('rsa', '-in', join(dir, 'pki/sa.key'), '-check', '-noout');
  assert.is(fileMode('pki/ca.key'), 0o600);
  assert.is(fileMode('admin.conf'), 0o600);
});

test('kubeconfigs hold client certificates the cluster CA signed, with kubeadm subjects', async () => {
  for (const [conf, subject] of [['admin.conf', 'CN = kubernetes-admin, O = kubeadm:cluster-admins'], ['kubelet.conf', 'O = system:nodes, CN = system:node:master-0'], ['scheduler.conf', 'CN = system:kube-scheduler']] as const) {
    const kc = parse(files.get(conf)!);
    assert.is(kc.clusters[0].cluster.server, 'https://apiserver.cluster.local:6443');
    const cert = join(dir, `${conf}.crt`);
    await writeFile(cert, Buffer.from(kc.users[0].user['client-certificate-data'], 'base64'));
    assert.match(await openssl('verify', '-CAfile', join(dir, 'pki/ca.crt'), cert), ': OK');
    const subj = await openssl('x509', '-in', cert, '-noout', '-subject', '-nameopt', 'sep_comma_plus_space');
    const norm = (x: string) => x.replace(/\s*=\s*/g, '=').split(', ').sort().join(', ');
    assert.is(norm(subj.replace(/^subject=\s*/, '').trim()), norm(subject));
  }
});

test('a rebuild keeps the CAs and the service-account key', async () => {
  const again = await new PkiBuilder({ masters, vip: '10.103.97.2', kubeVersion: 'v1.28.14' }).build(files);
  for (const f of ['pki/ca.crt', 'pki/ca.key', 'pki/etcd/ca.crt', 'pki/front-proxy-ca.key', 'pki/sa.key', 'pki/sa.pub']) assert.is(again.get(f), files.get(f), f);
  assert.is.not(again.get('pki/apiserver.crt'), files.get('pki/apiserver.crt'));
});

test.run();
