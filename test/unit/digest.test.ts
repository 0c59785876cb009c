import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { VerifyStream, digestOf, parseDigest } from '../../src/oci/digest.js';
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

test.run();
