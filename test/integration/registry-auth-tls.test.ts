/**
 * sealimg against the real CNCF registry with htpasswd users, over TLS with a
 * CA made in the test; skopeo as the independent client on the other side.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { RemoteStore } from '../../src/content/remote.js';
import { isSealimgError } from '../../src/errors.js';
import { makeImage } from '../helpers/images.js';
import { ok, run, sealimg } from '../helpers/cli.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const PASSWORD = 'correct-horse-9431';
const test = suite('registry: htpasswd over TLS, with skopeo');
let reg: TestRegistry;
let root: string;
let home: string;
let authfile: string;
let env: NodeJS.ProcessEnv;

test.before(async () => {
  reg = await startRegistry({ tls: true, users: { alice: PASSWORD } });
  root = await tmpDir();
  home = await tmpDir();
  authfile = join(home, 'auth.json');
  env = { HOME: home, XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
});
test.after(async () => {
  await reg?.stop();
  await cleanupTmp();
});

const tlsFlags = () => ['--ca-file', reg.caFile!];

async function skopeoDigest(ref: string): Promise<string> {
  const out = await ok('skopeo', ['inspect', '--cert-dir', reg.certDir!, '--authfile', authfile, `docker://${ref}`], { env });
  return (JSON.parse(out) as { Digest: string }).Digest;
}

test('login with a wrong password fails with AUTH_FAILED and saves nothing', async () => {
  const r = await sealimg(root, ['login', '-u', 'alice', '--password-stdin', '--authfile', authfile, ...tlsFlags(), reg.host], { env, input: 'wrong\n' });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /AUTH_FAILED/);
  assert.match(r.stderr, /alice/);
  await stat(authfile).then(() => assert.unreachable('auth file was written'), () => undefined);
});

test('login without trusting the CA fails with a TLS hint', async () => {
  const r = await sealimg(root, ['login', '-u', 'alice', '--password-stdin', '--authfile', authfile, reg.host], { env, input: PASSWORD });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /NETWORK/);
  assert.match(r.stderr, /--ca-file/);
});

test('login checks and saves credentials 0600; the password is never printed', async () => {
  const r = await sealimg(root, ['login', '-u', 'alice', '--password-stdin', '--authfile', authfile, ...tlsFlags(), reg.host], { env, input: `${PASSWORD}\n` });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /Login Succeeded/);
  assert.not.match(r.stdout + r.stderr, PASSWORD);
  assert.is((await stat(authfile)).mode & 0o777, 0o600);
  const doc = JSON.parse(await readFile(authfile, 'utf8')) as { auths: Record<string, { auth: string }> };
  assert.is(Buffer.from(doc.auths[reg.host]!.auth, 'base64').toString(), `alice:${PASSWORD}`);
});

test('-p works but warns', async () => {
  const file = join(home, 'other.json');
  const r = await sealimg(root, ['login', '-u', 'alice', '-p', PASSWORD, '--authfile', file, ...tlsFlags(), reg.host], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /WARNING.*insecure/);
});

test('push an image sealimg holds; skopeo inspect and skopeo copy see the same digests', async () => {
  const local = await OciLayoutStore.open(root, { create: true });
  const img = await makeImage(local, { layers: ['a'.repeat(3000), Buffer.alloc(200_000, 7)], tag: `${reg.host}/team/app:v1` });
  const r = await sealimg(root, ['push', '--authfile', authfile, ...tlsFlags(), '--chunk-size', '64KiB', `${reg.host}/team/app:v1`], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, img.manifest.digest);
  assert.is(await skopeoDigest(`${reg.host}/team/app:v1`), img.manifest.digest);
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--src-cert-dir', reg.certDir!, '--authfile', authfile, `docker://${reg.host}/team/app:v1`, `oci:${out}:x`], { env });
  const copied = await OciLayoutStore.open(out);
  assert.is((await copied.resolve('x')).digest, img.manifest.digest);
  for (const l of img.layers) assert.ok(await copied.exists(l), `skopeo got layer ${l.digest}`);
});

test('pull an image skopeo pushed', async () => {
  const src = await tmpDir();
  const origin = await OciLayoutStore.open(src, { create: true });
  await makeImage(origin, { layers: [Buffer.alloc(50_000, 3)], tag: 'src' });
  await ok('skopeo', ['copy', '--dest-cert-dir', reg.certDir!, '--authfile', authfile, `oci:${src}:src`, `docker://${reg.host}/from/skopeo:v2`], { env });
  const want = await skopeoDigest(`${reg.host}/from/skopeo:v2`);
  const r = await sealimg(root, ['pull', '--authfile', authfile, ...tlsFlags(), `${reg.host}/from/skopeo:v2`], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, want);
  const local = await OciLayoutStore.open(root);
  assert.is((await local.resolve(`${reg.host}/from/skopeo:v2`)).digest, want);
});

test('pull a Docker schema2 image (skopeo --format v2s2) and one platform out of a multi-arch index', async () => {
  const src = await tmpDir();
  const origin = await OciLayoutStore.open(src, { create: true });
  await makeImage(origin, { layers: [Buffer.alloc(10_000, 5)], tag: 'd' });
  await ok('skopeo', ['copy', '--format', 'v2s2', '--dest-cert-dir', reg.certDir!, '--authfile', authfile, `oci:${src}:d`, `docker://${reg.host}/from/docker:v1`], { env });
  const raw = JSON.parse(await ok('skopeo', ['inspect', '--raw', '--cert-dir', reg.certDir!, '--authfile', authfile, `docker://${reg.host}/from/docker:v1`], { env })) as { mediaType: string };
  assert.is(raw.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  const want = await skopeoDigest(`${reg.host}/from/docker:v1`);
  const r = await sealimg(root, ['pull', '--authfile', authfile, ...tlsFlags(), `${reg.host}/from/docker:v1`], { env });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, want);

  const { makeIndex } = await import('../helpers/images.js');
  const { index, images } = await makeIndex(origin, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  await ok('skopeo', ['copy', '--all', '--dest-cert-dir', reg.certDir!, '--authfile', authfile, `oci:${src}:multi`, `docker://${reg.host}/from/multi:v1`], { env });
  const one = await sealimg(root, ['pull', '--authfile', authfile, ...tlsFlags(), '--platform', 'linux/arm64', `${reg.host}/from/multi:v1`], { env });
  assert.is(one.code, 0, one.stderr);
  assert.match(one.stdout, images[1]!.manifest.digest);
  const local = await OciLayoutStore.open(root);
  assert.is(await local.exists(images[0]!.config), false, 'the amd64 image stayed behind');
  const all = await sealimg(root, ['pull', '--authfile', authfile, ...tlsFlags(), `${reg.host}/from/multi:v1`], { env });
  assert.is(all.code, 0, all.stderr);
  assert.match(all.stdout, index.digest);
  assert.ok(await local.exists(images[0]!.config), 'without --platform the whole index came');
});

test('a push with a wrong saved password fails with AUTH_FAILED and stores nothing', async () => {
  const bad = join(home, 'bad.json');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(bad, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:nope').toString('base64') } } }));
  const local = await OciLayoutStore.open(root, { create: true });
  await makeImage(local, { tag: `${reg.host}/team/denied:v1` });
  const r = await sealimg(root, ['push', '--authfile', bad, ...tlsFlags(), `${reg.host}/team/denied:v1`], { env });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /AUTH_FAILED/);
  const store = await RemoteStore.open(`${reg.host}/team/denied`, { caFile: reg.caFile, authFile: authfile, env }, 'pull');
  try {
    await store.resolve('v1');
    assert.unreachable('the image reached the registry');
  } catch (e) {
    assert.ok(isSealimgError(e, 'MANIFEST_UNKNOWN') || isSealimgError(e, 'NAME_UNKNOWN'), String(e));
  } finally {
    await store.close();
  }
});

test('--tls-verify=false reaches a registry whose CA is not trusted', async () => {
  const r = await sealimg(root, ['pull', '--authfile', authfile, '--tls-verify=false', `${reg.host}/team/app:v1`], { env });
  assert.is(r.code, 0, r.stderr);
});

test('logout removes the entry; a second logout says so', async () => {
  const r = await sealimg(root, ['logout', '--authfile', authfile, reg.host], { env });
  assert.is(r.code, 0, r.stderr);
  const doc = JSON.parse(await readFile(authfile, 'utf8')) as { auths: Record<string, unknown> };
  assert.not.ok(reg.host in doc.auths);
  const again = await run(process.execPath, [(await import('../helpers/cli.js')).SEALIMG, 'logout', '--authfile', authfile, reg.host], { env });
  assert.is.not(again.code, 0);
  assert.match(again.stderr, /not logged in/);
});

test.run();
