import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { OFF_THREAD_MIN_SIZE, VerifyStream, digestOf, parseDigest } from '../../src/oci/digest.js';
import { offThreadLeases } from '../../src/oci/hash-pool.js';
import { isSealimgError } from '../../src/errors.js';

const test = suite('digest');

test('sha256 and sha512 parse; bad ones name the field', () => {
  assert.is(parseDigest(digestOf('x')).algorithm, 'sha256');
  assert.is(parseDigest(digestOf('x', 'sha512')).hex.length, 128);
  for (const bad of ['sha256:abc', `md5:${'a'.repeat(32)}`, `sha256:${'A'.repeat(64)}`, 'nope', `sha512:${'a'.repeat(64)}`]) {
    try {
      parseDigest(bad, 'layers[0].digest');
      assert.unreachable(bad);
    } catch (e) {
      assert.ok(isSealimgError(e, 'INVALID_DIGEST'));
      assert.match((e as Error).message, 'layers[0].digest');
    }
  }
});

async function verify(chunks: Buffer[], expected: { digest: string; size: number }): Promise<string | undefined> {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  try {
    await pipeline(Readable.from(chunks), new VerifyStream(expected), sink);
    return undefined;
  } catch (e) {
    return (e as { code?: string }).code;
  }
}

test('VerifyStream passes exact bytes, refuses flipped, short and trailing bytes', async () => {
  const data = Buffer.from('hello world, this is a blob');
  const exp = { digest: digestOf(data), size: data.length };
  assert.is(await verify([data.subarray(0, 5), data.subarray(5)], exp), undefined);
  const flipped = Buffer.from(data);
  flipped[3] ^= 0x20;
  assert.is(await verify([flipped], exp), 'DIGEST_MISMATCH');
  assert.is(await verify([data.subarray(1)], exp), 'SIZE_MISMATCH');
  assert.is(await verify([data, Buffer.from('!')], exp), 'SIZE_MISMATCH');
  const sha512 = { digest: digestOf(data, 'sha512'), size: data.length };
  assert.is(await verify([data], sha512), undefined);
});

// Above OFF_THREAD_MIN_SIZE a blob beside another large one hashes on a worker thread: the same contract must hold there.
const big = randomBytes(OFF_THREAD_MIN_SIZE + 300_001);
const pieces = (b: Buffer, n = 64 * 1024) => Array.from({ length: Math.ceil(b.length / n) }, (_, i) => b.subarray(i * n, (i + 1) * n));

/** Two large blobs in flight, which hold the main thread's places until `release()`. */
function holdInlineSlot(): { release(): void } {
  const streams = [0, 1].map(() => {
    const s = new VerifyStream({ digest: digestOf(big), size: big.length });
    s.resume();
    s.write(big.subarray(0, 1));
    return s;
  });
  return { release: () => streams.forEach((s) => s.destroy()) };
}

test('two large blobs at a time hash on the main thread; a third beside them goes to a worker', async () => {
  const exp = { digest: digestOf(big), size: big.length };
  let before = offThreadLeases();
  assert.is(await verify(pieces(big), exp), undefined);
  assert.is(offThreadLeases(), before, 'a lone blob needs no worker');
  const holder = holdInlineSlot();
  before = offThreadLeases();
  assert.is(await verify(pieces(big), exp), undefined);
  holder.release();
  assert.is(offThreadLeases() - before, 1, 'the third blob in flight took a worker');
  before = offThreadLeases();
  assert.is(await verify(pieces(big), exp), undefined);
  assert.is(offThreadLeases(), before, 'the slot is free again once the first stream ended');
});

test('large blobs hash on a worker: exact bytes pass, flipped, short and trailing bytes fail, sha512 too', async () => {
  const holder = holdInlineSlot();
  const before = offThreadLeases();
  const exp = { digest: digestOf(big), size: big.length };
  assert.is(await verify(pieces(big), exp), undefined);
  const flipped = Buffer.from(big);
  flipped[big.length - 7] ^= 1;
  assert.is(await verify(pieces(flipped), exp), 'DIGEST_MISMATCH');
  assert.is(await verify(pieces(big.subarray(0, big.length - 1)), exp), 'SIZE_MISMATCH');
  assert.is(await verify(pieces(Buffer.concat([big, Buffer.from('!')])), exp), 'SIZE_MISMATCH');
  assert.is(await verify(pieces(big), { digest: digestOf(big, 'sha512'), size: big.length }), undefined);
  assert.is(await verify(pieces(flipped), { digest: digestOf(big, 'sha512'), size: big.length }), 'DIGEST_MISMATCH');
  assert.ok(offThreadLeases() - before >= 5, 'the worker path was taken');
  holder.release();
});

test('trailing bytes on the worker path fail before they pass on', async () => {
  const holder = holdInlineSlot();
  const exp = { digest: digestOf(big), size: big.length };
  let passed = 0;
  const sink = new Writable({ write: (c: Buffer, _e, cb) => ((passed += c.length), cb()) });
  await pipeline(Readable.from([big, Buffer.alloc(1 << 20)]), new VerifyStream(exp), sink).catch(() => undefined);
  holder.release();
  assert.is(passed, big.length);
});

test('more large blobs than workers, and one cut short, all verify independently', async () => {
  const blobs = [0, 1, 2, 3, 4].map(() => randomBytes(OFF_THREAD_MIN_SIZE + 1000));
  // A stream destroyed half-way must not leave its bytes in the worker's next hash.
  const holder = holdInlineSlot();
  const cut = new VerifyStream({ digest: digestOf(blobs[0]!), size: blobs[0]!.length });
  cut.write(blobs[0]!.subarray(0, 3 << 20));
  cut.destroy();
  holder.release();
  const results = await Promise.all(blobs.map((b, i) => verify(pieces(i === 2 ? Buffer.concat([b.subarray(1), Buffer.from('x')]) : b), { digest: digestOf(b), size: b.length })));
  assert.equal(results, [undefined, undefined, 'DIGEST_MISMATCH', undefined, undefined]);
});

test.run();
