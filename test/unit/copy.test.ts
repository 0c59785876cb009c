/**
 * copy() over real layout stores, observed through a recording wrapper:
 * children before parents, tag last, what exists is skipped, concurrency is
 * bounded, and a failure says which side it came from.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CopyError, copy } from '../../src/content/copy.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import type { Store } from '../../src/content/store.js';
import type { Descriptor } from '../../src/oci/types.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('copy');
test.after.each(cleanupTmp);

/** Forwards to a real store and records what was asked of it. */
class Recorder implements Store {
  log: string[] = [];
  active = 0;
  maxActive = 0;
  failPush?: string;
  constructor(readonly inner: Store) {}
  delete(d: Descriptor) {
    return (this.inner as OciLayoutStore).delete(d);
  }
  resolve(ref: string) {
    return this.inner.resolve(ref);
  }
  fetch(d: Descriptor) {
    return this.inner.fetch(d);
  }
  exists(d: Descriptor) {
    return this.inner.exists(d);
  }
  async push(d: Descriptor, body: Readable) {
    if (d.digest === this.failPush) throw new Error('disk full');
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      await new Promise((r) => setTimeout(r, 5));
      await this.inner.push(d, body);
      this.log.push(`push ${d.digest}`);
    } finally {
      this.active--;
    }
  }
  async tag(d: Descriptor, ref: string) {
    await this.inner.tag(d, ref);
    this.log.push(`tag ${ref}`);
  }
}

const layout = async () => OciLayoutStore.open(await tmpDir(), { create: true });

test('children before parents, the tag last, each blob once', async () => {
  const src = await layout();
  const { index, images } = await makeIndex(src, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  const dst = new Recorder(await layout());
  await copy(src, 'multi', dst, 'copied');
  const at = (digest: string) => dst.log.indexOf(`push ${digest}`);
  for (const im of images) {
    assert.ok(at(im.config.digest) >= 0 && at(im.config.digest) < at(im.manifest.digest));
    for (const l of im.layers) assert.ok(at(l.digest) >= 0 && at(l.digest) < at(im.manifest.digest));
    assert.ok(at(im.manifest.digest) < at(index.digest));
  }
  assert.is(dst.log[dst.log.length - 1], 'tag copied');
  assert.is(new Set(dst.log).size, dst.log.length, 'nothing pushed twice');
});

test('what the destination has is skipped', async () => {
  const src = await layout();
  const common = randomBytes(1000);
  const a = await makeImage(src, { layers: [common, randomBytes(10)], tag: 'a' });
  const b = await makeImage(src, { layers: [common, randomBytes(10)], tag: 'b' });
  const dst = new Recorder(await layout());
  await copy(src, 'a', dst, 'a');
  dst.log = [];
  await copy(src, 'b', dst, 'b');
  assert.not.ok(dst.log.includes(`push ${a.layers[0]!.digest}`), 'shared layer not sent again');
  assert.ok(dst.log.includes(`push ${b.layers[1]!.digest}`));
  dst.log = [];
  await copy(src, 'b', dst, 'b2');
  assert.equal(dst.log, ['tag b2'], 'an image the destination has is only tagged');
});

test('concurrency is bounded', async () => {
  const src = await layout();
  await makeImage(src, { layers: Array.from({ length: 12 }, () => randomBytes(50)), tag: 'many' });
  for (const n of [1, 3]) {
    const dst = new Recorder(await layout());
    await copy(src, 'many', dst, 'x', { concurrency: n });
    assert.ok(dst.maxActive <= n, `max ${dst.maxActive} > ${n}`);
    assert.ok(dst.maxActive === n, `used ${dst.maxActive} of ${n}`);
  }
});

test('failures say which side failed; no tag is written', async () => {
  const src = await layout();
  const img = await makeImage(src, { tag: 'a' });
  const dst = new Recorder(await layout());
  dst.failPush = img.layers[0]!.digest;
  try {
    await copy(src, 'a', dst, 'a');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, CopyError);
    assert.is((e as CopyError).side, 'destination');
    assert.match((e as Error).message, `destination failed to push ${img.layers[0]!.digest}: disk full`);
  }
  assert.not.ok(dst.log.some((l) => l.startsWith('tag')));
  try {
    await copy(src, 'missing', dst, 'a');
    assert.unreachable();
  } catch (e) {
    assert.is((e as CopyError).side, 'source');
    assert.is((e as CopyError).code, 'MANIFEST_UNKNOWN');
  }
});

test('with rollback, a failed copy leaves the destination as it was', async () => {
  const src = await layout();
  const before = await makeImage(src, { tag: 'old' });
  const img = await makeImage(src, { layers: [randomBytes(10), randomBytes(10), randomBytes(10)], tag: 'new' });
  const inner = await layout();
  await copy(src, 'old', inner, 'old');
  const dst = new Recorder(inner);
  dst.failPush = img.layers[2]!.digest;
  try {
    await copy(src, 'new', dst, 'new', { rollback: true, concurrency: 1 });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, CopyError);
  }
  assert.ok(dst.log.some((l) => l.startsWith('push')), 'something was pushed before the failure');
  for (const d of [img.config, ...img.layers]) assert.not.ok(await inner.exists(d), `${d.digest} was rolled back`);
  for (const d of [before.manifest, before.config, ...before.layers]) assert.ok(await inner.exists(d), 'what was there stays');
});

test('--platform picks one manifest out of an index', async () => {
  const src = await layout();
  const { images } = await makeIndex(src, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  const dst = new Recorder(await layout());
  const got = await copy(src, 'multi', dst, 'arm', { platform: { os: 'linux', architecture: 'arm64' } });
  assert.is(got.digest, images[1]!.manifest.digest);
  assert.not.ok(dst.log.includes(`push ${images[0]!.manifest.digest}`));
  try {
    await copy(src, 'multi', dst, 'x', { platform: { os: 'linux', architecture: 's390x' } });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'no manifest for linux/s390x');
  }
});

test.run();
