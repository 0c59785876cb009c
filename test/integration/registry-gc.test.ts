/**
 * `sealimg registry gc`: what no kept manifest reaches goes, what is kept
 * still pulls through the CNCF registry afterwards, young blobs are spared.
 */
import { randomBytes } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copy } from '../../src/content/copy.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { digestOf } from '../../src/oci/digest.js';
import { DistributionStorage } from '../../src/content/distribution/storage.js';
import { DistributionStore } from '../../src/content/distribution/store.js';
import { Uploads } from '../../registry/uploads.js';
import { startRegistry } from '../../registry/server.js';
import { OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { ok, sealimg } from '../helpers/cli.js';
import { startRegistry as startDistribution, type TestRegistry as RunningRegistry } from '../helpers/registry.js';
import { makeImage } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg registry gc');
let server: RunningRegistry | undefined;
test.after.each(async () => {
  await server?.stop();
  server = undefined;
  await cleanupTmp();
});

async function fixture() {
  const src = await OciLayoutStore.open(await tmpDir(), { create: true });
  const shared = randomBytes(3000);
  const a = await makeImage(src, { layers: [shared, randomBytes(100)], tag: 'a' });
  const b = await makeImage(src, { layers: [shared, randomBytes(200)], tag: 'b' });
  const root = await tmpDir();
  const dist = await DistributionStore.open(root, { create: true });
  const repo = dist.repository('team/app');
  await copy(src, 'a', repo, 'a');
  await copy(src, 'b', repo, 'b');
  await repo.untag('b');
  const orphan = randomBytes(500);
  const storage = await DistributionStorage.open(root);
  await storage.ingest({ digest: digestOf(orphan), size: orphan.length }, Readable.from([orphan]));
  return { root, a, b, storage, orphan: digestOf(orphan) };
}

test('dry run deletes nothing; young blobs are spared by default', async () => {
  const f = await fixture();
  const dry = await sealimg(f.root, ['registry', 'gc', '--dry-run', '--grace', '0']);
  assert.is(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`would delete blob ${f.orphan}`));
  assert.is(await f.storage.blobSize(f.orphan), 500);
  const young = await sealimg(f.root, ['registry', 'gc']);
  assert.match(young.stdout, /deleted 0 blob\(s\).*spared 1/);
  assert.is(await f.storage.blobSize(f.orphan), 500);
});

test('keeps every revision by default, sweeps orphans; --delete-untagged drops the untagged image but not shared layers', async () => {
  const f = await fixture();
  const first = await sealimg(f.root, ['registry', 'gc', '--grace', '0']);
  assert.is(first.code, 0, first.stderr);
  assert.match(first.stdout, /deleted 1 blob\(s\), 500 bytes, 0 manifest/);
  assert.is(await f.storage.blobSize(f.orphan), undefined);
  assert.ok(await f.storage.repository('team/app').hasManifest(f.b.manifest.digest), 'untagged revision kept without --delete-untagged');

  const second = await sealimg(f.root, ['registry', 'gc', '--grace', '0', '--delete-untagged']);
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stdout, new RegExp(`deleted manifest team/app@${f.b.manifest.digest}`));
  for (const d of [f.b.manifest, f.b.config, f.b.layers[1]!]) assert.is(await f.storage.blobSize(d.digest), undefined, d.digest);
  for (const d of [f.a.manifest, f.a.config, ...f.a.layers]) assert.is(await f.storage.blobSize(d.digest), d.size, d.digest);

  server = await startDistribution({ root: f.root });
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--src-tls-verify=false', `docker://${server.host}/team/app:a`, `oci:${out}:a`]);
  const gone = await fetch(`http://${server.host}/v2/team/app/manifests/${f.b.manifest.digest}`);
  assert.is(gone.status, 404);
});

test('gc beside a running server: blobs of a push in progress are spared, and the push completes', async () => {
  const root = await tmpDir();
  const reg = await startRegistry({ addr: '127.0.0.1:0', root });
  try {
    const layer = randomBytes(2000);
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    for (const b of [layer, config]) {
      const r = await fetch(`${reg.url}/v2/busy/app/blobs/uploads/?digest=${digestOf(b)}`, { method: 'POST', body: b });
      assert.is(r.status, 201);
    }
    const gc = await sealimg(root, ['registry', 'gc', '--delete-untagged']);
    assert.is(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, /deleted 0 blob\(s\).*spared 2/);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digestOf(layer), size: layer.length }],
    });
    const put = await fetch(`${reg.url}/v2/busy/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.is(put.status, 201);
    const blob = Buffer.from(await (await fetch(`${reg.url}/v2/busy/app/blobs/${digestOf(layer)}`)).arrayBuffer());
    assert.ok(blob.equals(layer));
  } finally {
    await reg.close();
  }
});

test('abandoned upload sessions are purged after their max age; a live one stays', async () => {
  const f = await fixture();
  const uploads = new Uploads(f.storage);
  const old = await uploads.start('team/new');
  const live = await uploads.start('team/new');
  const week = new Date(Date.now() - 8 * 86_400_000);
  await utimes(join(f.storage.layout.uploadDir('team/new', old), 'data'), week, week);
  const r = await sealimg(f.root, ['registry', 'gc']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /1 abandoned upload/);
  assert.is(await uploads.size('team/new', live), 0, 'the live session is kept');
  try {
    await uploads.size('team/new', old);
    assert.unreachable('the old session is gone');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'BLOB_UPLOAD_UNKNOWN');
  }
});

test.run();
