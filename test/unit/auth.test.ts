/**
 * Credentials: challenge parsing, where auth files are looked up, docker's
 * and containers' file shapes, credential helpers (a stand-in helper script
 * speaking docker's helper protocol, since no real helper works offline here).
 */
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { findCredentials, readPaths, removeCredentials, saveCredentials, writePath } from '../../src/auth/authfile.js';
import { parseChallenges } from '../../src/auth/challenge.js';
import { backoff, isRetryableStatus, parseRetryAfter } from '../../src/content/retry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('auth');
test.after.each(cleanupTmp);

const b64 = (s: string) => Buffer.from(s).toString('base64');

test('challenges: bearer with quoted params, basic, several in one header', () => {
  assert.equal(parseChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' } },
  ]);
  assert.equal(parseChallenges('Basic realm="x \\"y\\""'), [{ scheme: 'basic', params: { realm: 'x "y"' } }]);
  assert.equal(parseChallenges('Basic realm=a, Bearer realm="b",service=s').map((c) => c.scheme), ['basic', 'bearer']);
  assert.equal(parseChallenges(''), []);
});

test('lookup order: --authfile alone; else REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, DOCKER_CONFIG, ~/.docker', () => {
  assert.equal(readPaths({ authFile: '/a.json', env: { REGISTRY_AUTH_FILE: '/r.json' } }), ['/a.json']);
  assert.equal(readPaths({ env: { HOME: '/h', REGISTRY_AUTH_FILE: '/r.json', XDG_RUNTIME_DIR: '/run/u', DOCKER_CONFIG: '/d' } }), [
    '/r.json', '/run/u/containers/auth.json', '/d/config.json', '/h/.docker/config.json',
  ]);
  assert.is(writePath({ env: { HOME: '/h', XDG_RUNTIME_DIR: '/run/u' } }), '/run/u/containers/auth.json');
  assert.is(writePath({ env: { HOME: '/h' } }), '/h/.docker/config.json');
});

test('the first file with an entry wins; docker.io is found under its docker key', async () => {
  const home = await tmpDir();
  const xdg = await tmpDir();
  await writeFile(join(home, 'config.json'), JSON.stringify({ auths: {
    'https://index.docker.io/v1/': { auth: b64('hubuser:hubpass') },
    'r.example.com:5000': { auth: b64('docker:fromdocker') },
  } }));
  const { mkdir } = await import('node:fs/promises');
  await mkdir(join(xdg, 'containers'));
  await writeFile(join(xdg, 'containers', 'auth.json'), JSON.stringify({ auths: { 'r.example.com:5000': { auth: b64('podman:pw:with:colons') } } }));
  const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: xdg, DOCKER_CONFIG: home };
  assert.equal(await findCredentials('r.example.com:5000', { env }), { username: 'podman', password: 'pw:with:colons' });
  assert.equal(await findCredentials('docker.io', { env }), { username: 'hubuser', password: 'hubpass' });
  assert.is(await findCredentials('other.example.com', { env }), undefined);
  await writeFile(join(home, 'config.json'), '{not json');
  try {
    await findCredentials('other.example.com', { env });
    assert.unreachable('a broken file is reported');
  } catch (e) {
    assert.match((e as Error).message, join(home, 'config.json'));
  }
});

test('save writes 0600 and keeps other settings; remove takes the entry out', async () => {
  const dir = await tmpDir();
  const file = join(dir, 'config.json');
  await writeFile(file, JSON.stringify({ auths: { 'keep.example.com': { auth: b64('k:k') } }, detachKeys: 'ctrl-p' }));
  const where = await saveCredentials('r.example.com', { username: 'u', password: 'p' }, { authFile: file, env: {} });
  assert.is(where, file);
  assert.is((await stat(file)).mode & 0o777, 0o600);
  const doc = JSON.parse(await readFile(file, 'utf8'));
  assert.is(doc.detachKeys, 'ctrl-p');
  assert.is(doc.auths['keep.example.com'].auth, b64('k:k'));
  assert.equal(await findCredentials('r.example.com', { authFile: file, env: {} }), { username: 'u', password: 'p' });
  assert.is(await removeCredentials('r.example.com', { authFile: file, env: {} }), true);
  assert.is(await findCredentials('r.example.com', { authFile: file, env: {} }), undefined);
  assert.is(await removeCredentials('r.example.com', { authFile: file, env: {} }), false);
});

test('credHelpers and credsStore go through docker-credential-NAME get/store/erase', async () => {
  const bin = await tmpDir();
  const state = join(bin, 'store.json');
  // A helper speaking docker's protocol over stdin/stdout, keeping secrets in a JSON file.
  await writeFile(join(bin, 'docker-credential-sealtest'), `#!/usr/bin/env node
const fs = require('fs');
const file = ${JSON.stringify(state)};
const db = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
const input = fs.readFileSync(0, 'utf8').trim();
const action = process.argv[2];
if (action === 'get') {
  if (!db[input]) { process.stdout.write('credentials not found in native keychain'); process.exit(1); }
  process.stdout.write(JSON.stringify({ ServerURL: input, ...db[input] }));
} else if (action === 'store') {
  const r = JSON.parse(input); db[r.ServerURL] = { Username: r.Username, Secret: r.Secret };
  fs.writeFileSync(file, JSON.stringify(db));
} else if (action === 'erase') {
  if (!db[input]) { process.stdout.write('credentials not found in native keychain'); process.exit(1); }
  delete db[input]; fs.writeFileSync(file, JSON.stringify(db));
}
`);
  await chmod(join(bin, 'docker-credential-sealtest'), 0o755);
  const oldPath = process.env.PATH;
  process.env.PATH = `${bin}:${oldPath}`;
  try {
    const cfg = join(bin, 'config.json');
    await writeFile(cfg, JSON.stringify({ credHelpers: { 'helped.example.com': 'sealtest' } }));
    const opts = { authFile: cfg, env: {} };
    assert.is(await findCredentials('helped.example.com', opts), undefined);
    assert.is(await saveCredentials('helped.example.com', { username: 'hu', password: 'hp' }, opts), 'docker-credential-sealtest');
    assert.not.match(await readFile(cfg, 'utf8'), 'hp', 'the secret stays out of the file');
    assert.equal(await findCredentials('helped.example.com', opts), { username: 'hu', password: 'hp' });
    // credsStore covers every host; an identity token comes back as one.
    await writeFile(cfg, JSON.stringify({ credsStore: 'sealtest' }));
    await saveCredentials('tok.example.com', { username: '', identityToken: 'refresh-123' }, opts);
    assert.equal(await findCredentials('tok.example.com', opts), { username: '', identityToken: 'refresh-123' });
    assert.is(await removeCredentials('tok.example.com', opts), true);
    assert.is(await findCredentials('tok.example.com', opts), undefined);
  } finally {
    process.env.PATH = oldPath;
  }
});

test('retries: which statuses, Retry-After in seconds or a date, bounded jittered backoff', () => {
  for (const s of [408, 429, 500, 502, 503, 504]) assert.ok(isRetryableStatus(s), String(s));
  for (const s of [400, 401, 403, 404, 416, 501]) assert.not.ok(isRetryableStatus(s), String(s));
  assert.is(parseRetryAfter('3'), 3000);
  assert.is(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  assert.is(parseRetryAfter('soon'), undefined);
  const policy = { times: 5, baseMs: 100, maxMs: 1000 };
  assert.is(backoff(policy, 1, undefined, () => 0), 50);
  assert.is(backoff(policy, 1, undefined, () => 1), 100);
  assert.is(backoff(policy, 3, undefined, () => 1), 400);
  assert.is(backoff(policy, 10, undefined, () => 1), 1000, 'capped');
  assert.is(backoff(policy, 1, 120_000), 1000, 'Retry-After is honoured up to the cap');
});

test.run();
