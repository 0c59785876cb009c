/** Stored gzip members: what gzip and Node's zlib read back, at every block boundary. */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { storedMember } from '../../src/build/layer.js';

const test = suite('stored gzip members');

for (const size of [0, 1, 65534, 65535, 65536, 3 * 65535, (1 << 20) + 7]) {
  test(`${size} bytes: GNU gzip and zlib read back exactly the bytes, with no more than 5 bytes a block of overhead`, () => {
    const data = randomBytes(size);
    const member = storedMember(data);
    assert.ok(gunzipSync(member).equals(data), 'zlib');
    const gz = spawnSync('gzip', ['-dc'], { input: Buffer.concat([member, storedMember(Buffer.from('tail'))]), maxBuffer: 64 << 20 });
    assert.is(gz.status, 0, gz.stderr.toString());
    assert.ok(gz.stdout.equals(Buffer.concat([data, Buffer.from('tail')])), 'gzip, two members in a row');
    assert.is(member.length, 18 + data.length + 5 * Math.max(1, Math.ceil(size / 65535)));
  });
}

test('a flipped byte fails the CRC', () => {
  const member = storedMember(randomBytes(1000));
  member[100] ^= 1;
  assert.throws(() => gunzipSync(member));
});

test.run();
