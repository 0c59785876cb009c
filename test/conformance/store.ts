/**
 * The store contract, as tests: every Store implementation runs this suite
 * (`storeConformance('name', open)`), so a new place to keep images behaves
 * like the others under copy().
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copy } from '../../src/content/copy.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { fetchAll, type Store } from '../../src/content/store.js';
import { isSealimgError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { OCI_LAYER } from '../../src/oci/mediatypes.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

export interface StoreUnderTest {
  store: Store;
  /** Stops servers or removes files the store needed. */
  cleanup?: () => Promise<void>;
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(isSealimgError(e), `expected a SealimgError ${code}, got ${String(e)}`);
    assert.is((e as { code: string }).code, code, (e as Error).message);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

export function storeConformance(name: string, open: () => Promise<StoreUnderTest>): void {
  const test = suite(`store conformance: ${name}`);
  let current: StoreUnderTest | undefined;
  const fresh = async () => (current = await open()).store;
  test.after.each(async () => {
    await current?.cleanup?.();
    current = undefined;
    await cleanupTmp();
  });

  test('push then fetch gives the same bytes; exists tells', async () => {
    const store = await fresh();
    const bytes = randomBytes(300_000);
    const desc = { mediaType: OCI_LAYER, digest: digestOf(bytes), size: bytes.length };
    assert.is(await store.exists(desc), false);
    await store.push(desc, Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]));
    assert.is(await store.exists(desc), true);
    assert.ok((await fetchAll(store, desc)).equals(bytes));
  });

  test('a body that does not match its digest is refused and nothing is stored', async () => {
    const store = await fresh();
    const bytes = randomBytes(1000);
    const desc = { mediaType: OCI_LAYER, digest: digestOf(bytes), size: bytes.length };
    const flipped = Buffer.from(bytes);
    flipped[10] ^= 1;
    await rejects(store.push(desc, Readable.from([flipped])), 'DIGEST_MISMATCH');
    assert.is(await store.exists(desc), false);
  });

  test('a body longer or shorter than its size is refused', async () => {
    const store = await fresh();
    const bytes = randomBytes(1000);
    const desc = { mediaType: OCI_LAYER, digest: digestOf(bytes), size: bytes.length };
    await rejects(store.push(desc, Readable.from([bytes, Buffer.from('x')])), 'SIZE_MISMATCH');
    await rejects(store.push(desc, Readable.from([bytes.subarray(1)])), 'SIZE_MISMATCH');
    assert.is(await store.exists(desc), false);
  });

  test('tag and resolve; re-tagging moves the tag', async () => {
    const store = await fresh();
    const a = await makeImage(store, { tag: 'example.com/app:v1' });
    const b = await makeImage(store);
    assert.equal((await store.resolve('example.com/app:v1')).digest, a.manifest.digest);
    await store.tag(b.manifest, 'example.com/app:v1');
    assert.equal((await store.resolve('example.com/app:v1')).digest, b.manifest.digest);
    assert.equal((await store.resolve(a.manifest.digest)).digest, a.manifest.digest);
  });

  test('unknown tags and blobs are reported as unknown', async () => {
    const store = await fresh();
    await rejects(store.resolve('example.com/none:x'), 'MANIFEST_UNKNOWN');
    const bytes = randomBytes(10);
    await rejects(store.fetch({ mediaType: OCI_LAYER, digest: digestOf(bytes), size: 10 }), 'BLOB_UNKNOWN');
  });

  test('copy in and out again keeps every digest, index and shared layers included', async () => {
    const dir = await tmpDir();
    const origin = await OciLayoutStore.open(dir, { create: true });
    const shared = randomBytes(5000);
    const one = await makeImage(origin, { layers: [shared, randomBytes(100)], tag: 'one' });
    const two = await makeImage(origin, { layers: [shared], tag: 'two' });
    const { index } = await makeIndex(origin, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
    const store = await fresh();
    for (const [ref, want] of [['one', one.manifest], ['two', two.manifest], ['multi', index]] as const) {
      const got = await copy(origin, ref, store, `example.com/x:${ref}`);
      assert.is(got.digest, want.digest);
      assert.is((await store.resolve(`example.com/x:${ref}`)).digest, want.digest);
    }
    const back = await OciLayoutStore.open(await tmpDir(), { create: true });
    const again = await copy(store, 'example.com/x:multi', back, 'multi');
    assert.is(again.digest, index.digest);
    assert.ok(await back.exists(one.layers[0]!) === false, 'copy brought only what the index reaches');
  });

  test.run();
}
