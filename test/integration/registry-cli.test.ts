/**
 * `sealimg registry serve` with real clients: skopeo pushes and pulls through
 * it, with htpasswd auth (file made by `htpasswd -B`) and with TLS, and the
 * CNCF registry serves the same directory at the same time, both ways.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { ok, run, sealimg } from '../helpers/cli.js';
import { startRegistry as startDistribution, type TestRegistry as RunningRegistry } from '../helpers/registry.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { serveRegistry } from '../helpers/sealimg-registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg registry serve');
const running: Array<{ stop(): Promise<unknown> }> = [];
const track = <T extends { stop(): Promise<unknown> }>(s: T): T => (running.push(s), s);

test.after.each(async () => {
  for (const s of running.splice(0)) await s.stop();
  await cleanupTmp();
});

async function sourceLayout(): Promise<{ dir: string; digest: string; index: string }> {
  const dir = await tmpDir();
  const store = await OciLayoutStore.open(dir, { create: true });
  const img = await makeImage(store, { layers: ['one', 'two'], tag: 'one' });
  const { index } = await makeIndex(store, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  return { dir, digest: img.manifest.digest, index: index.digest };
}

const digestOf = async (args: string[]) => (await ok('skopeo', ['inspect', '--format', '{{.Digest}}', ...args])).trim();

test('skopeo pushes and pulls through it; a log line per request; multi-arch kept whole', async () => {
  const src = await sourceLayout();
  const reg = track(await serveRegistry(await tmpDir()));
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${reg.addr}/team/app:v1`]);
  await ok('skopeo', ['copy', '--all', '--dest-tls-verify=false', `oci:${src.dir}:multi`, `docker://${reg.addr}/team/multi:v1`]);
  assert.is(await digestOf(['--tls-verify=false', `docker://${reg.addr}/team/app:v1`]), src.digest);
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${reg.addr}/team/multi:v1`, `oci:${out}:m`]);
  assert.is(JSON.parse(await readFile(join(out, 'index.json'), 'utf8')).manifests[0].digest, src.index);
  assert.match(reg.log(), /PUT \/v2\/team\/app\/manifests\/v1 201/);
  assert.match(reg.log(), /GET \/v2\/team\/multi\/manifests\/v1 200 \d+B/);
});

test("sealimg's own client pushes to it and pulls back, digest for digest", async () => {
  const src = await sourceLayout();
  const reg = track(await serveRegistry(await tmpDir()));
  const root = await tmpDir();
  const push = await sealimg(root, ['copy', '-q', '--plain-http', `oci:${src.dir}:multi`, `${reg.addr}/own/client:v1`]);
  assert.is(push.code, 0, push.stderr);
  assert.is(push.stdout.trim(), src.index);
  const out = await tmpDir();
  const pull = await sealimg(root, ['copy', '-q', '--plain-http', `${reg.addr}/own/client:v1`, `oci:${out}:back`]);
  assert.is(pull.code, 0, pull.stderr);
  assert.is(JSON.parse(await readFile(join(out, 'index.json'), 'utf8')).manifests[0].digest, src.index);
});

test('htpasswd (bcrypt, made by htpasswd -B): no or wrong credentials are refused, right ones work', async () => {
  const src = await sourceLayout();
  const dir = await tmpDir();
  const file = join(dir, 'htpasswd');
  await ok('htpasswd', ['-B', '-b', '-c', file, 'alice', 's3cret']);
  const reg = track(await serveRegistry(await tmpDir(), ['--htpasswd', file]));
  const dest = `docker://${reg.addr}/secure/app:v1`;
  const anon = await run('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, dest]);
  assert.is.not(anon.code, 0);
  assert.match(anon.stderr, /unauthorized|authentication required/i);
  const wrong = await run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:nope', `oci:${src.dir}:one`, dest]);
  assert.is.not(wrong.code, 0);
  await ok('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:s3cret', `oci:${src.dir}:one`, dest]);
  assert.is(await digestOf(['--tls-verify=false', '--creds', 'alice:s3cret', dest]), src.digest);
  const res = await fetch(`${reg.url}/v2/`);
  assert.is(res.status, 401);
  assert.is(res.headers.get('www-authenticate'), 'Basic realm="sealimg"');
  assert.match(reg.log(), /user=alice/);
});

test('TLS with --tls-cert/--tls-key: skopeo verifies against the test CA', async () => {
  const src = await sourceLayout();
  const pki = await tmpDir();
  const sh = (args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'pipe' });
  sh(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.crt']);
  sh(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr']);
  await writeFile(join(pki, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  sh(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'ext.cnf', '-out', 'server.crt']);
  const certDir = await tmpDir();
  await writeFile(join(certDir, 'ca.crt'), await readFile(join(pki, 'ca.crt')));
  const reg = track(await serveRegistry(await tmpDir(), ['--tls-cert', join(pki, 'server.crt'), '--tls-key', join(pki, 'server.key')]));
  assert.ok(reg.url.startsWith('https://'));
  await ok('skopeo', ['copy', '--dest-cert-dir', certDir, `oci:${src.dir}:one`, `docker://${reg.addr}/tls/app:v1`]);
  assert.is(await digestOf(['--cert-dir', certDir, `docker://${reg.addr}/tls/app:v1`]), src.digest);
});

test('docker-registry and sealimg serve one directory at once, each serving what the other stored', async () => {
  const src = await sourceLayout();
  const root = await tmpDir();
  const ours = track(await serveRegistry(root));
  const theirs: RunningRegistry = track(await startDistribution({ root: root }));
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${ours.addr}/from/sealimg:v1`]);
  await ok('skopeo', ['copy', '--all', '--dest-tls-verify=false', `oci:${src.dir}:multi`, `docker://${theirs.host}/from/cncf:v1`]);
  assert.is(await digestOf(['--tls-verify=false', `docker://${theirs.host}/from/sealimg:v1`]), src.digest);
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--src-tls-verify=false', `docker://${theirs.host}/from/sealimg:v1`, `oci:${out}:a`]);
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${ours.addr}/from/cncf:v1`, `oci:${out}:b`]);
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
  assert.equal(index.manifests.map((m: { digest: string }) => m.digest).sort(), [src.digest, src.index].sort());
  const cat = await (await fetch(`${ours.url}/v2/_catalog`)).json();
  assert.equal(cat, await (await fetch(`http://${theirs.host}/v2/_catalog`)).json());
});

test('kill -9 during an upload: after restart no partial blob is visible and the upload goes on', async () => {
  const root = await tmpDir();
  let reg = await serveRegistry(root);
  track(reg);
  const bytes = randomBytes(200_000);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const post = await fetch(`${reg.url}/v2/crash/app/blobs/uploads/`, { method: 'POST' });
  const loc = post.headers.get('location')!;
  // Send half the chunk, then kill the server while the request is still open.
  const req = request(`${reg.url}${loc}`, { method: 'PATCH', headers: { 'Content-Length': bytes.length, 'Content-Type': 'application/octet-stream' } });
  req.on('error', () => undefined);
  req.write(bytes.subarray(0, 100_000));
  let received = 0;
  for (let i = 0; i < 250 && received < 100_000; i++) {
    await new Promise((r) => setTimeout(r, 20));
    received = Number(((await fetch(`${reg.url}${loc}`)).headers.get('range') ?? '0-0').split('-')[1]) + 1;
  }
  assert.is(received, 100_000);
  await reg.stop('SIGKILL');
  req.destroy();
  reg = track(await serveRegistry(root));
  assert.is((await fetch(`${reg.url}/v2/crash/app/blobs/${digest}`, { method: 'HEAD' })).status, 404);
  const status = await fetch(`${reg.url}${loc}`);
  assert.is(status.status, 204);
  const have = Number(status.headers.get('range')!.split('-')[1]) + 1;
  const rest = await fetch(`${reg.url}${loc}`, { method: 'PATCH', body: bytes.subarray(have), headers: { 'Content-Range': `${have}-${bytes.length - 1}` } });
  assert.is(rest.status, 202);
  assert.is((await fetch(`${reg.url}${loc}?digest=${digest}`, { method: 'PUT' })).status, 201);
  const back = Buffer.from(await (await fetch(`${reg.url}/v2/crash/app/blobs/${digest}`)).arrayBuffer());
  assert.ok(back.equals(bytes));
});

test('32 concurrent clients pushing and pulling for 3 s: no errors, every blob verifies', async () => {
  const src = await sourceLayout();
  const reg = track(await serveRegistry(await tmpDir(), ['--log-level', 'error']));
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${reg.addr}/bench/app:v1`]);
  const load = fileURLToPath(new URL('../../bench/registry-load.js', import.meta.url));
  const out = JSON.parse(await ok(process.execPath, [load, reg.url, '32', '3']));
  assert.is(out.errors, 0, out.firstErrors.join('\n'));
  assert.is(out.badDigests, 0);
  assert.ok(out.rounds > 0, "no round finished");
});

test('exits cleanly on SIGTERM; a bad flag is a usage error', async () => {
  const reg = await serveRegistry(await tmpDir());
  assert.is(await reg.stop('SIGTERM'), 0);
  const bad = await run(process.execPath, [(await import('../helpers/cli.js')).SEALIMG, 'registry', 'serve', '--addr', 'nonsense']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--addr "nonsense"/);
});

test.run();
