/**
 * `sealimg registry serve --proxy`: a pull-through mirror in front of the
 * CNCF registry (and of sealimg's own), checked with skopeo: cached images
 * still pull with the upstream stopped, one download per blob however many
 * clients ask, tags re-checked after the TTL, several upstreams by host.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { digestOf } from '../../src/oci/digest.js';
import { OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { startRegistry } from '../../registry/server.js';
import type { RequestLog } from '../../registry/handler.js';
import { ok } from '../helpers/cli.js';
import { startRegistry as startDistribution } from '../helpers/registry.js';
import { http } from '../helpers/http.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { serveRegistry } from '../helpers/sealimg-registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry pull-through mirror');
const running: Array<{ stop?(): Promise<unknown>; close?(): Promise<unknown> }> = [];
const track = <T extends { stop?(): Promise<unknown>; close?(): Promise<unknown> }>(s: T): T => (running.push(s), s);

test.after.each(async () => {
  for (const s of running.splice(0).reverse()) await (s.stop ?? s.close)!.call(s);
  await cleanupTmp();
});

async function source() {
  const dir = await tmpDir();
  const store = await OciLayoutStore.open(dir, { create: true });
  const one = await makeImage(store, { layers: [randomBytes(40_000), 'b'], tag: 'one' });
  const two = await makeImage(store, { layers: ['other'], tag: 'two' });
  const { index } = await makeIndex(store, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  return { dir, one: one.manifest.digest, two: two.manifest.digest, index: index.digest };
}

const inspect = async (ref: string) => (await ok('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', ref])).trim();

test('pulls through from docker-registry; with the upstream stopped the cached images still pull', async () => {
  const src = await source();
  const upstream = track(await startDistribution());
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${upstream.host}/team/app:v1`]);
  await ok('skopeo', ['copy', '--all', '--dest-tls-verify=false', `oci:${src.dir}:multi`, `docker://${upstream.host}/team/multi:v1`]);
  const mirror = track(await serveRegistry(await tmpDir(), ['--proxy', `http://${upstream.host}`, '--proxy-tag-ttl', '0']));
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--src-tls-verify=false', `docker://${mirror.addr}/team/app:v1`, `oci:${out}:a`]);
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${mirror.addr}/team/multi:v1`, `oci:${out}:m`]);
  await upstream.stop();
  const again = await tmpDir();
  await ok('skopeo', ['copy', '--src-tls-verify=false', `docker://${mirror.addr}/team/app:v1`, `oci:${again}:a`]);
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${mirror.addr}/team/multi:v1`, `oci:${again}:m`]);
  const index = JSON.parse(await readFile(join(again, 'index.json'), 'utf8'));
  assert.equal(index.manifests.map((m: { digest: string }) => m.digest).sort(), [src.one, src.index].sort());
  assert.match(mirror.log(), /serving team\/app:v1 from cache: upstream/);
  const push = await run405(mirror.url);
  assert.is(push, 405, 'a mirror takes no pushes');
});

async function run405(base: string): Promise<number> {
  return (await http(base, 'POST', '/v2/team/app/blobs/uploads/')).status;
}

test('several upstreams, picked by registry host in the path or by ?ns=', async () => {
  const src = await source();
  const a = track(await startDistribution());
  const b = track(await startRegistry({ addr: '127.0.0.1:0', root: await tmpDir() }));
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${a.host}/team/app:v1`]);
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:two`, `docker://${b.host}/team/app:v1`]);
  const mirror = track(await serveRegistry(await tmpDir(), ['--proxy', `a.example=http://${a.host}`, '--proxy', `b.example=http://${b.host}`]));
  assert.is(await inspect(`docker://${mirror.addr}/a.example/team/app:v1`), src.one);
  assert.is(await inspect(`docker://${mirror.addr}/b.example/team/app:v1`), src.two);
  const ns = await http(mirror.url, 'GET', '/v2/team/app/manifests/v1?ns=b.example', { headers: { Accept: OCI_MANIFEST } });
  assert.is(ns.headers['docker-content-digest'], src.two);
  const none = await http(mirror.url, 'GET', '/v2/team/app/manifests/v1');
  assert.is(none.status, 404, 'a name no upstream serves is looked up locally only');
});

test('one upstream download for many concurrent readers of a blob; tags re-checked after the TTL', async () => {
  const seen: RequestLog[] = [];
  const upstream = track(await startRegistry({ addr: '127.0.0.1:0', root: await tmpDir(), log: (e) => seen.push(e) }));
  const src = await source();
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:one`, `docker://${upstream.host}/team/app:v1`]);
  const cache = await tmpDir();
  const mirror = track(await startRegistry({ addr: '127.0.0.1:0', root: cache, proxy: [upstream.url], proxyTagTtlMs: 60_000 }));
  const manifest = JSON.parse((await http(mirror.url, 'GET', '/v2/team/app/manifests/v1')).body.toString());
  const layer = manifest.layers[0];
  seen.length = 0;
  const bodies = await Promise.all(Array.from({ length: 8 }, () => http(mirror.url, 'GET', `/v2/team/app/blobs/${layer.digest}`)));
  for (const r of bodies) {
    assert.is(r.status, 200);
    assert.is(digestOf(r.body), layer.digest);
  }
  // The upstream logs a request once its response has finished, which may come a moment after our readers are done.
  const blobGets = () => seen.filter((e) => e.method === 'GET' && e.path.includes('/blobs/')).length;
  for (let i = 0; i < 40 && blobGets() === 0; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 100));
  assert.is(blobGets(), 1);
  const ranged = await http(mirror.url, 'GET', `/v2/team/app/blobs/${layer.digest}`, { headers: { Range: 'bytes=0-9' } });
  assert.is(ranged.status, 206, 'later reads come from disk, with Range');

  // Move the tag upstream: within the TTL the mirror keeps the old one.
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${src.dir}:two`, `docker://${upstream.host}/team/app:v1`]);
  assert.is((await http(mirror.url, 'HEAD', '/v2/team/app/manifests/v1')).headers['docker-content-digest'], src.one);
  // The same cache with a TTL already passed: the tag is checked upstream and follows it.
  const fresh = track(await startRegistry({ addr: '127.0.0.1:0', root: cache, proxy: [upstream.url], proxyTagTtlMs: 0 }));
  assert.is((await http(fresh.url, 'HEAD', '/v2/team/app/manifests/v1')).headers['docker-content-digest'], src.two);
});

test.run();
