/**
 * Bearer token auth: skopeo gets a token from a token service and pushes and
 * pulls; tokens that are expired, for another audience, signed by another key
 * or lacking the action are refused. No token service is packaged for this
 * machine, so the test runs a small one that signs ES256 tokens.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Readable } from 'node:stream';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { digestOf } from '../../src/oci/digest.js';
import { DistributionStorage } from '../../src/content/distribution/storage.js';
import { RepositoryStore } from '../../src/content/distribution/store.js';
import { ok, run } from '../helpers/cli.js';
import { makeImage } from '../helpers/images.js';
import { serveRegistry, type ServedRegistry } from '../helpers/sealimg-registry.js';
import { http } from '../helpers/http.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry bearer token auth');
const SERVICE = 'sealimg-test';
const ISSUER = 'test-token-service';
let reg: ServedRegistry | undefined;
let tokens: Server | undefined;
let key: KeyObject;
let root = '';

function jwt(claims: Record<string, unknown>, signer = key): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'ES256', typ: 'JWT' })}.${enc(claims)}`;
  return `${body}.${sign('sha256', Buffer.from(body), { key: signer, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

function claims(access: Array<{ type: string; name: string; actions: string[] }>, extra: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: ISSUER, sub: 'alice', aud: SERVICE, exp: now + 300, nbf: now - 10, iat: now, access, ...extra };
}

/** Grants what is asked, to alice with her password; pull only on readonly/*. */
function tokenService(): Promise<string> {
  tokens = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (req.headers.authorization !== `Basic ${Buffer.from('alice:pw').toString('base64')}`) {
      res.writeHead(401).end();
      return;
    }
    const access = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).map((s) => {
      const [type, name, actions] = s.split(':');
      const asked = (actions ?? '').split(',');
      return { type: type!, name: name!, actions: name!.startsWith('readonly/') ? asked.filter((a) => a === 'pull') : asked };
    });
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token: jwt(claims(access)) }));
  });
  return new Promise((r) => tokens!.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(tokens!.address() as { port: number }).port}/token`)));
}

test.before.each(async () => {
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  key = pair.privateKey;
  const dir = await tmpDir();
  await writeFile(join(dir, 'token.pem'), pair.publicKey.export({ type: 'spki', format: 'pem' }));
  const realm = await tokenService();
  root = await tmpDir();
  reg = await serveRegistry(root, ['--token-realm', realm, '--token-service', SERVICE, '--token-issuer', ISSUER, '--token-key', join(dir, 'token.pem')]);
});
test.after.each(async () => {
  await reg?.stop();
  await new Promise((r) => (tokens ? tokens.close(r) : r(undefined)));
  tokens?.closeAllConnections();
  reg = undefined;
  tokens = undefined;
  await cleanupTmp();
});

test('skopeo follows the challenge to the token service, pushes and pulls', async () => {
  const dir = await tmpDir();
  const img = await makeImage(await OciLayoutStore.open(dir, { create: true }), { tag: 'one' });
  await ok('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:pw', `oci:${dir}:one`, `docker://${reg!.addr}/team/app:v1`]);
  const digest = (await ok('skopeo', ['inspect', '--tls-verify=false', '--creds', 'alice:pw', '--format', '{{.Digest}}', `docker://${reg!.addr}/team/app:v1`])).trim();
  assert.is(digest, img.manifest.digest);
  const denied = await run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:pw', `oci:${dir}:one`, `docker://${reg!.addr}/readonly/app:v1`]);
  assert.is.not(denied.code, 0, 'a token without push does not push');
});

test('the challenge names realm, service and scope; bad tokens are refused', async () => {
  const none = await http(reg!.url, 'GET', '/v2/team/app/tags/list');
  assert.is(none.status, 401);
  assert.match(String(none.headers['www-authenticate']), /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="sealimg-test",scope="repository:team\/app:pull"$/);
  const pull = [{ type: 'repository', name: 'team/app', actions: ['pull'] }];
  const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
  assert.is((await http(reg!.url, 'GET', '/v2/', { headers: bearer(jwt(claims([]))) })).status, 200);
  assert.is((await http(reg!.url, 'GET', '/v2/team/app/tags/list', { headers: bearer(jwt(claims(pull))) })).status, 404, 'allowed in: the repository is just empty');
  assert.is((await http(reg!.url, 'POST', '/v2/team/app/blobs/uploads/', { headers: bearer(jwt(claims(pull))) })).status, 401, 'pull does not allow push');
  const expired = jwt(claims(pull, { exp: Math.floor(Date.now() / 1000) - 600 }));
  assert.is((await http(reg!.url, 'GET', '/v2/team/app/tags/list', { headers: bearer(expired) })).status, 401);
  assert.is((await http(reg!.url, 'GET', '/v2/team/app/tags/list', { headers: bearer(jwt(claims(pull, { aud: 'other' }))) })).status, 401);
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  assert.is((await http(reg!.url, 'GET', '/v2/team/app/tags/list', { headers: bearer(jwt(claims(pull), stranger)) })).status, 401);
  assert.is((await http(reg!.url, 'GET', '/v2/_catalog', { headers: bearer(jwt(claims(pull))) })).status, 401, 'the catalog needs registry:catalog:*');
});

test('a mount needs pull on the source repository, else it is an ordinary upload', async () => {
  const store = new RepositoryStore(await DistributionStorage.open(root), 'secret/x');
  const bytes = Buffer.from('secret layer');
  const digest = digestOf(bytes);
  await store.push({ mediaType: 'application/octet-stream', digest, size: bytes.length }, Readable.from([bytes]));
  const push = jwt(claims([{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]));
  const denied = await http(reg!.url, 'POST', `/v2/team/app/blobs/uploads/?mount=${digest}&from=secret/x`, { headers: { Authorization: `Bearer ${push}` } });
  assert.is(denied.status, 202, 'no pull on secret/x: an upload session, not a mount');
  const anon = await http(reg!.url, 'POST', `/v2/team/app/blobs/uploads/?mount=${digest}`, { headers: { Authorization: `Bearer ${push}` } });
  assert.is(anon.status, 202, 'no anonymous mounts when auth is on');
  const both = jwt(claims([{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }, { type: 'repository', name: 'secret/x', actions: ['pull'] }]));
  const mounted = await http(reg!.url, 'POST', `/v2/team/app/blobs/uploads/?mount=${digest}&from=secret/x`, { headers: { Authorization: `Bearer ${both}` } });
  assert.is(mounted.status, 201);
});

test.run();
