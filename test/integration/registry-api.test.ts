/**
 * sealimg's registry against distribution-spec v1.1.0, endpoint by endpoint:
 * status codes, headers and error codes a client relies on.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { digestOf } from '../../src/oci/digest.js';
import { OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { startRegistry, type RunningServer } from '../../registry/server.js';
import { http } from '../helpers/http.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry API (distribution-spec v1.1.0)');
let server: RunningServer | undefined;
let root = '';

async function start(opts: { readOnly?: boolean } = {}): Promise<string> {
  server = await startRegistry({ addr: '127.0.0.1:0', root, ...opts });
  return server.url;
}

test.before.each(async () => {
  root = await tmpDir();
});
test.after.each(async () => {
  await server?.close();
  server = undefined;
  await cleanupTmp();
});

function errorCode(r: { json(): any }): string {
  return r.json().errors[0].code;
}

async function pushBlob(base: string, name: string, bytes: Buffer): Promise<string> {
  const digest = digestOf(bytes);
  const r = await http(base, 'POST', `/v2/${name}/blobs/uploads/?digest=${digest}`, { body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.is(r.status, 201, r.body.toString());
  return digest;
}

function manifestFor(config: Buffer, layers: Buffer[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: digestOf(l), size: l.length })),
      ...extra,
    }),
  );
}

async function pushImage(base: string, name: string, tag: string): Promise<{ digest: string; bytes: Buffer }> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(4).toString('hex') }));
  const layer = randomBytes(1000);
  await pushBlob(base, name, config);
  await pushBlob(base, name, layer);
  const bytes = manifestFor(config, [layer]);
  const r = await http(base, 'PUT', `/v2/${name}/manifests/${tag}`, { body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(r.status, 201, r.body.toString());
  return { digest: r.headers['docker-content-digest'] as string, bytes };
}

test('/v2/ answers 200 with the API version header', async () => {
  const base = await start();
  const r = await http(base, 'GET', '/v2/');
  assert.is(r.status, 200);
  assert.is(r.headers['docker-distribution-api-version'], 'registry/2.0');
});

test('monolithic upload, HEAD and ranged GET of a blob', async () => {
  const base = await start();
  const bytes = randomBytes(5000);
  const digest = await pushBlob(base, 'app/one', bytes);
  const head = await http(base, 'HEAD', `/v2/app/one/blobs/${digest}`);
  assert.is(head.status, 200);
  assert.is(head.headers['content-length'], '5000');
  assert.is(head.headers['docker-content-digest'], digest);
  const full = await http(base, 'GET', `/v2/app/one/blobs/${digest}`);
  assert.ok(full.body.equals(bytes));
  const part = await http(base, 'GET', `/v2/app/one/blobs/${digest}`, { headers: { Range: 'bytes=100-199' } });
  assert.is(part.status, 206);
  assert.is(part.headers['content-range'], 'bytes 100-199/5000');
  assert.ok(part.body.equals(bytes.subarray(100, 200)));
  const tail = await http(base, 'GET', `/v2/app/one/blobs/${digest}`, { headers: { Range: 'bytes=4990-' } });
  assert.ok(tail.body.equals(bytes.subarray(4990)));
  const bad = await http(base, 'GET', `/v2/app/one/blobs/${digest}`, { headers: { Range: 'bytes=6000-7000' } });
  assert.is(bad.status, 416);
  const other = await http(base, 'HEAD', `/v2/app/two/blobs/${digest}`);
  assert.is(other.status, 404, 'a blob belongs to the repository it was pushed to');
});

test('a blob bigger than the send buffers comes back whole and by range; a client that leaves mid-body does not upset the server', async () => {
  const base = await start();
  const bytes = randomBytes((9 << 20) + 12345);
  const digest = await pushBlob(base, 'app/big', bytes);
  const full = await http(base, 'GET', `/v2/app/big/blobs/${digest}`);
  assert.ok(full.body.equals(bytes), 'the whole blob, byte for byte');
  const part = await http(base, 'GET', `/v2/app/big/blobs/${digest}`, { headers: { Range: `bytes=${(1 << 20) - 10}-${(5 << 20) + 10}` } });
  assert.is(part.status, 206);
  assert.ok(part.body.equals(bytes.subarray((1 << 20) - 10, (5 << 20) + 11)), 'a range across buffers');
  // Take a little of the body, then hang up.
  await new Promise<void>((resolve, reject) => {
    const req = request(`${base}/v2/app/big/blobs/${digest}`, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
    req.end();
  });
  const again = await http(base, 'GET', `/v2/app/big/blobs/${digest}`, { headers: { Range: 'bytes=0-99' } });
  assert.ok(again.body.equals(bytes.subarray(0, 100)), 'the server goes on serving');
});

test('POST then PUT with the body, and streamed PATCH then PUT', async () => {
  const base = await start();
  const bytes = randomBytes(3000);
  const digest = digestOf(bytes);
  const post = await http(base, 'POST', '/v2/app/blobs/uploads/');
  assert.is(post.status, 202);
  const loc = post.headers.location as string;
  assert.ok(loc.startsWith('/v2/app/blobs/uploads/'));
  const put = await http(base, 'PUT', `${loc}?digest=${digest}`, { body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.is(put.status, 201);
  assert.is(put.headers.location, `/v2/app/blobs/${digest}`);

  const b2 = randomBytes(4000);
  const post2 = await http(base, 'POST', '/v2/app/blobs/uploads/');
  const patch = await http(base, 'PATCH', post2.headers.location as string, { body: b2, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.is(patch.status, 202);
  assert.is(patch.headers.range, '0-3999');
  const put2 = await http(base, 'PUT', `${patch.headers.location}?digest=${digestOf(b2)}`);
  assert.is(put2.status, 201);
  assert.ok((await http(base, 'GET', `/v2/app/blobs/${digestOf(b2)}`)).body.equals(b2));
});

test('chunked upload: an out-of-order chunk gets 416, the status tells where to go on', async () => {
  const base = await start();
  const bytes = randomBytes(30_000);
  const post = await http(base, 'POST', '/v2/app/blobs/uploads/');
  const loc = post.headers.location as string;
  const chunk = (start: number, end: number) =>
    http(base, 'PATCH', loc, { body: bytes.subarray(start, end), headers: { 'Content-Range': `${start}-${end - 1}`, 'Content-Type': 'application/octet-stream' } });
  assert.is((await chunk(0, 10_000)).status, 202);
  const skipped = await chunk(20_000, 30_000);
  assert.is(skipped.status, 416);
  assert.is(errorCode(skipped), 'BLOB_UPLOAD_INVALID');
  const status = await http(base, 'GET', loc);
  assert.is(status.status, 204);
  assert.is(status.headers.range, '0-9999');
  assert.is((await chunk(10_000, 20_000)).status, 202);
  assert.is((await chunk(20_000, 30_000)).status, 202);
  const put = await http(base, 'PUT', `${loc}?digest=${digestOf(bytes)}`);
  assert.is(put.status, 201);
  assert.ok((await http(base, 'GET', `/v2/app/blobs/${digestOf(bytes)}`)).body.equals(bytes));
});

test('a wrong digest is refused with DIGEST_INVALID and nothing is stored', async () => {
  const base = await start();
  const bytes = randomBytes(100);
  const wrong = digestOf(randomBytes(100));
  const r = await http(base, 'POST', `/v2/app/blobs/uploads/?digest=${wrong}`, { body: bytes });
  assert.is(r.status, 400);
  assert.is(errorCode(r), 'DIGEST_INVALID');
  assert.is((await http(base, 'HEAD', `/v2/app/blobs/${wrong}`)).status, 404);
  assert.is((await http(base, 'HEAD', `/v2/app/blobs/${digestOf(bytes)}`)).status, 404);
  const bad = await http(base, 'GET', '/v2/app/blobs/sha256:nothex');
  assert.is(bad.status, 400);
  assert.is(errorCode(bad), 'DIGEST_INVALID');
});

test('sha512 digests work for blob uploads and manifests', async () => {
  const base = await start();
  const bytes = randomBytes(3000);
  const d512 = digestOf(bytes, 'sha512');
  const r = await http(base, 'POST', `/v2/app/blobs/uploads/?digest=${d512}`, { body: bytes });
  assert.is(r.status, 201, r.body.toString());
  const back = await http(base, 'GET', `/v2/app/blobs/${d512}`);
  assert.ok(back.body.equals(bytes));
  const { bytes: manifest } = await pushImage(base, 'app', 'v1');
  const m512 = digestOf(manifest, 'sha512');
  const put = await http(base, 'PUT', `/v2/app/manifests/${m512}`, { body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(put.status, 201);
  assert.is(put.headers['docker-content-digest'], m512);
  assert.ok((await http(base, 'GET', `/v2/app/manifests/${m512}`)).body.equals(manifest));
});

test('cancelling an upload forgets it', async () => {
  const base = await start();
  const post = await http(base, 'POST', '/v2/app/blobs/uploads/');
  const loc = post.headers.location as string;
  assert.is((await http(base, 'DELETE', loc)).status, 204);
  const gone = await http(base, 'GET', loc);
  assert.is(gone.status, 404);
  assert.is(errorCode(gone), 'BLOB_UPLOAD_UNKNOWN');
});

test('cross-repository mount, anonymous mount, and a mount of a missing blob', async () => {
  const base = await start();
  const bytes = randomBytes(2000);
  const digest = await pushBlob(base, 'src/repo', bytes);
  const m = await http(base, 'POST', `/v2/dst/repo/blobs/uploads/?mount=${digest}&from=src/repo`);
  assert.is(m.status, 201);
  assert.is(m.headers['docker-content-digest'], digest);
  assert.is((await http(base, 'HEAD', `/v2/dst/repo/blobs/${digest}`)).status, 200);
  const anon = await http(base, 'POST', `/v2/third/blobs/uploads/?mount=${digest}`);
  assert.is(anon.status, 201);
  const none = await http(base, 'POST', `/v2/dst/repo/blobs/uploads/?mount=${digestOf(randomBytes(8))}&from=src/repo`);
  assert.is(none.status, 202, 'a failed mount opens an upload session instead');
  assert.ok(String(none.headers.location).startsWith('/v2/dst/repo/blobs/uploads/'));
});

test('manifests: MANIFEST_BLOB_UNKNOWN, then push, get by tag and digest, head, delete', async () => {
  const base = await start();
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = randomBytes(500);
  const bytes = manifestFor(config, [layer]);
  const early = await http(base, 'PUT', '/v2/app/manifests/v1', { body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(errorCode(early), 'MANIFEST_BLOB_UNKNOWN');
  assert.is((await http(base, 'GET', '/v2/app/manifests/v1')).status, 404, 'nothing was stored');
  await pushBlob(base, 'app', config);
  await pushBlob(base, 'app', layer);
  const put = await http(base, 'PUT', '/v2/app/manifests/v1', { body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(put.status, 201);
  const digest = digestOf(bytes);
  assert.is(put.headers['docker-content-digest'], digest);
  const byTag = await http(base, 'GET', '/v2/app/manifests/v1', { headers: { Accept: OCI_MANIFEST } });
  assert.ok(byTag.body.equals(bytes));
  assert.is(byTag.headers['content-type'], OCI_MANIFEST);
  assert.is(byTag.headers['docker-content-digest'], digest);
  const head = await http(base, 'HEAD', `/v2/app/manifests/${digest}`);
  assert.is(head.status, 200);
  assert.is(head.headers['content-length'], String(bytes.length));
  const mismatch = await http(base, 'PUT', `/v2/app/manifests/${digestOf('other')}`, { body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(errorCode(mismatch), 'DIGEST_INVALID');
  const invalid = await http(base, 'PUT', '/v2/app/manifests/v2', { body: '{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '"}', headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(errorCode(invalid), 'MANIFEST_INVALID');
  assert.is((await http(base, 'DELETE', `/v2/app/manifests/${digest}`)).status, 202);
  const gone = await http(base, 'GET', `/v2/app/manifests/${digest}`);
  assert.is(errorCode(gone), 'MANIFEST_UNKNOWN');
  assert.is((await http(base, 'GET', '/v2/app/manifests/v1')).status, 404, 'tags of a deleted manifest go with it');
});

test('manifests over 4 MiB are refused and not stored', async () => {
  const base = await start();
  const big = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } }));
  const r = await http(base, 'PUT', '/v2/app/manifests/big', { body: big, headers: { 'Content-Type': OCI_INDEX } });
  assert.is(r.status, 413);
  assert.is(errorCode(r), 'MANIFEST_INVALID');
  assert.is((await http(base, 'GET', '/v2/app/manifests/big')).status, 404);
  const chunked = await new Promise<number>((resolve, reject) => {
    // No Content-Length: the limit is found while reading, and still answered with 413.
    const req = request(`${base}/v2/app/manifests/big`, { method: 'PUT', headers: { 'Content-Type': OCI_INDEX, 'Transfer-Encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    for (let i = 0; i < big.length; i += 1 << 20) req.write(big.subarray(i, i + (1 << 20)));
    req.end();
  });
  assert.is(chunked, 413);
});

test('tags/list pages with n and last and a Link header; unknown repository is NAME_UNKNOWN', async () => {
  const base = await start();
  const { bytes } = await pushImage(base, 'app', 't1');
  for (const t of ['t5', 't3', 't2', 't4']) {
    assert.is((await http(base, 'PUT', `/v2/app/manifests/${t}`, { body: bytes, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
  }
  const all = await http(base, 'GET', '/v2/app/tags/list');
  assert.equal(all.json(), { name: 'app', tags: ['t1', 't2', 't3', 't4', 't5'] });
  const seen: string[] = [];
  let next: string | undefined = '/v2/app/tags/list?n=2';
  for (let i = 0; next && i < 10; i++) {
    const r = await http(base, 'GET', next);
    assert.ok(r.json().tags.length <= 2);
    seen.push(...r.json().tags);
    const link = r.headers.link as string | undefined;
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
  }
  assert.equal(seen, ['t1', 't2', 't3', 't4', 't5']);
  assert.equal((await http(base, 'GET', '/v2/app/tags/list?last=t3')).json().tags, ['t4', 't5']);
  const none = await http(base, 'GET', '/v2/nothing/tags/list');
  assert.is(none.status, 404);
  assert.is(errorCode(none), 'NAME_UNKNOWN');
});

test('_catalog lists repositories, in pages', async () => {
  const base = await start();
  for (const name of ['c/three', 'a/one', 'b/two']) await pushImage(base, name, 'latest');
  assert.equal((await http(base, 'GET', '/v2/_catalog')).json(), { repositories: ['a/one', 'b/two', 'c/three'] });
  const first = await http(base, 'GET', '/v2/_catalog?n=2');
  assert.equal(first.json().repositories, ['a/one', 'b/two']);
  assert.is(first.headers.link, '</v2/_catalog?n=2&last=b%2Ftwo>; rel="next"');
  assert.equal((await http(base, 'GET', '/v2/_catalog?n=2&last=b%2Ftwo')).json().repositories, ['c/three']);
});

test('referrers: a manifest with a subject is listed, filtered by artifactType, with OCI-Subject on push', async () => {
  const base = await start();
  const image = await pushImage(base, 'app', 'v1');
  const empty = Buffer.from('{}');
  await pushBlob(base, 'app', empty);
  const sbom = Buffer.from('{"sbom":true}');
  await pushBlob(base, 'app', sbom);
  const art = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: OCI_EMPTY, digest: digestOf(empty), size: 2 },
      layers: [{ mediaType: 'application/json', digest: digestOf(sbom), size: sbom.length }],
      subject: { mediaType: OCI_MANIFEST, digest: image.digest, size: image.bytes.length },
      annotations: { 'org.example': 'yes' },
    }),
  );
  const put = await http(base, 'PUT', `/v2/app/manifests/${digestOf(art)}`, { body: art, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.is(put.status, 201);
  assert.is(put.headers['oci-subject'], image.digest);
  const r = await http(base, 'GET', `/v2/app/referrers/${image.digest}`);
  assert.is(r.status, 200);
  assert.is(r.headers['content-type'], OCI_INDEX);
  assert.equal(r.json().manifests, [
    { mediaType: OCI_MANIFEST, digest: digestOf(art), size: art.length, artifactType: 'application/vnd.example.sbom', annotations: { 'org.example': 'yes' } },
  ]);
  const filtered = await http(base, 'GET', `/v2/app/referrers/${image.digest}?artifactType=application/vnd.example.sig`);
  assert.equal(filtered.json().manifests, []);
  assert.is(filtered.headers['oci-filters-applied'], 'artifactType');
  const none = await http(base, 'GET', `/v2/app/referrers/${digestOf('nothing')}`);
  assert.equal(none.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  assert.is((await http(base, 'DELETE', `/v2/app/manifests/${digestOf(art)}`)).status, 202);
  assert.equal((await http(base, 'GET', `/v2/app/referrers/${image.digest}`)).json().manifests, []);
});

test('bad names and references are refused with NAME_INVALID / TAG_INVALID', async () => {
  const base = await start();
  for (const path of ['/v2/Upper/tags/list', '/v2/a/../b/tags/list', '/v2/a/..%2fb/manifests/x', '/v2/a//b/manifests/x', `/v2/${'a'.repeat(256)}/tags/list`, '/v2/-a/blobs/uploads/']) {
    const method = path.endsWith('uploads/') ? 'POST' : 'GET';
    const r = await http(base, method, path);
    assert.is(r.status, 400, path);
    assert.is(errorCode(r), 'NAME_INVALID', path);
  }
  const tag = await http(base, 'GET', '/v2/app/manifests/-bad');
  assert.is(tag.status, 400);
  assert.is(errorCode(tag), 'TAG_INVALID');
});

test('an upload session outlives a restart of the server', async () => {
  let base = await start();
  const bytes = randomBytes(50_000);
  const post = await http(base, 'POST', '/v2/app/blobs/uploads/');
  const loc = post.headers.location as string;
  await http(base, 'PATCH', loc, { body: bytes.subarray(0, 20_000), headers: { 'Content-Range': '0-19999' } });
  await server!.close();
  base = await start();
  const status = await http(base, 'GET', loc);
  assert.is(status.headers.range, '0-19999');
  await http(base, 'PATCH', loc, { body: bytes.subarray(20_000), headers: { 'Content-Range': '20000-49999' } });
  assert.is((await http(base, 'PUT', `${loc}?digest=${digestOf(bytes)}`)).status, 201);
  assert.ok((await http(base, 'GET', `/v2/app/blobs/${digestOf(bytes)}`)).body.equals(bytes));
});

test('read-only mode serves pulls and refuses pushes', async () => {
  let base = await start();
  const image = await pushImage(base, 'app', 'v1');
  await server!.close();
  base = await start({ readOnly: true });
  assert.is((await http(base, 'GET', '/v2/app/manifests/v1')).status, 200);
  const r = await http(base, 'POST', '/v2/app/blobs/uploads/');
  assert.is(r.status, 405);
  assert.is(errorCode(r), 'UNSUPPORTED');
  assert.is((await http(base, 'DELETE', `/v2/app/manifests/${image.digest}`)).status, 405);
});

test.run();
