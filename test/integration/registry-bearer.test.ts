/**
 * Bearer tokens against the real registry configured with `auth: token`, and
 * a token server the test runs (a real JWT flow with a key made here).
 */
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { RemoteStore } from '../../src/content/remote.js';
import { isSealimgError } from '../../src/errors.js';
import { makeImage } from '../helpers/images.js';
import { sealimg } from '../helpers/cli.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startTokenServer, type TokenServer } from '../helpers/token-server.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry: bearer tokens (auth: token)');
let reg: TestRegistry;
let tokens: TokenServer;
let home: string;
let authfile: string;
const env = () => ({ HOME: home, XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' });

test.before(async () => {
  tokens = await startTokenServer({ bob: 'b0b-pass' }, { 'refresh-for-bob': 'bob' });
  reg = await startRegistry({ token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertFile: tokens.certFile } });
  home = await tmpDir();
  authfile = join(home, 'auth.json');
});
test.after(async () => {
  await reg?.stop();
  await tokens?.stop();
  await cleanupTmp();
});

test('login with a wrong password is refused by the token server; a right one is saved', async () => {
  const root = await tmpDir();
  const bad = await sealimg(root, ['login', '--plain-http', '-u', 'bob', '--password-stdin', '--authfile', authfile, reg.host], { env: env(), input: 'nope' });
  assert.is.not(bad.code, 0);
  assert.match(bad.stderr, /AUTH_FAILED/);
  const good = await sealimg(root, ['login', '--plain-http', '-u', 'bob', '--password-stdin', '--authfile', authfile, reg.host], { env: env(), input: 'b0b-pass' });
  assert.is(good.code, 0, good.stderr);
});

test('push and pull with tokens: one token per scope set, reused across requests', async () => {
  const root = await tmpDir();
  const local = await OciLayoutStore.open(root, { create: true });
  const img = await makeImage(local, { layers: ['one', 'two', 'three'], tag: `${reg.host}/tok/app:v1` });
  const before = tokens.requests.length;
  const pushed = await sealimg(root, ['push', '--plain-http', '--authfile', authfile, `${reg.host}/tok/app:v1`], { env: env() });
  assert.is(pushed.code, 0, pushed.stderr);
  const asked = tokens.requests.slice(before);
  assert.ok(asked.length >= 1 && asked.length <= 2, `token requests for one push: ${JSON.stringify(asked)}`);
  assert.ok(asked.every((r) => r.user === 'bob'));
  assert.ok(asked.some((r) => r.scopes.includes('repository:tok/app:pull,push')), JSON.stringify(asked));

  const root2 = await tmpDir();
  const pulled = await sealimg(root2, ['pull', '--plain-http', '--authfile', authfile, `${reg.host}/tok/app:v1`], { env: env() });
  assert.is(pulled.code, 0, pulled.stderr);
  assert.match(pulled.stdout, img.manifest.digest);
});

test('a token the registry refuses is fetched again (refresh on 401)', async () => {
  const store = await RemoteStore.open(`${reg.host}/tok/app`, { plainHttp: true, authFile: authfile, env: env() }, 'pull');
  try {
    tokens.emptyGrants = 1; // the first token grants nothing: the registry answers 401 to it
    const before = tokens.requests.length;
    assert.ok((await store.resolve('v1')).digest.startsWith('sha256:'));
    assert.ok(tokens.requests.length - before >= 2, 'a second token was asked for');
  } finally {
    await store.close();
  }
});

test('an identity token (docker\'s identitytoken) is traded for access tokens with a refresh-token POST', async () => {
  const { writeFile } = await import('node:fs/promises');
  const file = join(home, 'identity.json');
  await writeFile(file, JSON.stringify({ auths: { [reg.host]: { auth: '', identitytoken: 'refresh-for-bob' } } }));
  const store = await RemoteStore.open(`${reg.host}/tok/app`, { plainHttp: true, authFile: file, env: env() }, 'pull');
  try {
    const before = tokens.requests.length;
    assert.ok((await store.resolve('v1')).digest.startsWith('sha256:'));
    assert.ok(tokens.requests.slice(before).some((r) => r.method === 'POST' && r.user === 'bob'));
  } finally {
    await store.close();
  }
  await writeFile(file, JSON.stringify({ auths: { [reg.host]: { auth: '', identitytoken: 'stolen' } } }));
  const bad = await RemoteStore.open(`${reg.host}/tok/app`, { plainHttp: true, authFile: file, env: env() }, 'pull');
  try {
    await bad.resolve('v1');
    assert.unreachable('a wrong refresh token worked');
  } catch (e) {
    assert.ok(isSealimgError(e, 'AUTH_FAILED'), String(e));
  } finally {
    await bad.close();
  }
});

test('anonymous access gets a token with no rights: AUTH_FAILED', async () => {
  const store = await RemoteStore.open(`${reg.host}/tok/app`, { plainHttp: true, authFile: join(home, 'none.json'), env: env() }, 'pull');
  try {
    await store.resolve('v1');
    assert.unreachable('resolved without credentials');
  } catch (e) {
    assert.ok(isSealimgError(e, 'AUTH_FAILED'), String(e));
  } finally {
    await store.close();
  }
});

test.run();
