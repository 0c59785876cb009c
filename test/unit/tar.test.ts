/** The tar format module: what it writes GNU tar reads, and what it reads it refuses when it must. */
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tarEntries } from '../../src/content/archive-reader.js';
import { BLOCK, END_OF_ARCHIVE, entryHeader, padding, safeName } from '../../src/content/tar.js';
import { isSealimgError } from '../../src/errors.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('tar format');
test.after.each(cleanupTmp);

const long = `blobs/${'d'.repeat(60)}/${'x'.repeat(90)}`;

function archive(entries: Array<[string, Buffer]>): Buffer {
  return Buffer.concat([...entries.flatMap(([n, d]) => [entryHeader(n, d.length), d, padding(d.length)]), END_OF_ARCHIVE]);
}

test('a name over 100 bytes goes in a pax header that GNU tar and sealimg both read', async () => {
  const tar = archive([[long, Buffer.from('hello')], ['short', Buffer.from('x'.repeat(600))]]);
  const file = join(await tmpDir(), 't.tar');
  await writeFile(file, tar);
  const listed = spawnSync('tar', ['tf', file], { encoding: 'utf8' });
  assert.is(listed.status, 0, listed.stderr);
  assert.equal(listed.stdout.trim().split('\n'), [long, 'short']);
  const seen: Array<[string, number]> = [];
  for await (const e of tarEntries(Readable.from([tar]), 'test')) {
    let n = 0;
    for await (const c of e.body) n += c.length;
    seen.push([e.name, n]);
  }
  assert.equal(seen, [[long, 5], ['short', 600]]);
});

test('a size over 8 GiB is carried by pax', async () => {
  const h = entryHeader('big', 9_000_000_000);
  assert.ok(h.length > BLOCK, 'a pax header comes first');
  const it = tarEntries(Readable.from([h]), 'test');
  const first = await it.next();
  assert.is(first.value?.size, 9_000_000_000);
});

test('names that leave the archive are refused', () => {
  for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a/..']) {
    try {
      safeName(bad, 'test.tar');
      assert.unreachable(bad);
    } catch (e) {
      assert.ok(isSealimgError(e, 'ARCHIVE_INVALID'), String(e));
      assert.match((e as Error).message, `"${bad}"`);
    }
  }
  assert.is(safeName('./blobs/sha256/', 't'), 'blobs/sha256');
});

/** A one-entry archive whose entry has typeflag `flag` (and a link target). */
function special(name: string, flag: string, linkname = ''): Buffer {
  const h = entryHeader(name, 0);
  h.write(flag, 156);
  h.write(linkname, 157, 100);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return Buffer.concat([h, END_OF_ARCHIVE]);
}

async function entriesOf(tar: Buffer): Promise<string[]> {
  const out: string[] = [];
  for await (const e of tarEntries(Readable.from([tar]), 'test.tar')) out.push(`${e.name}:${e.type}`);
  return out;
}

test('devices and FIFOs are refused, naming the entry; links inside the archive are listed, never followed', async () => {
  for (const [flag, what] of [['3', 'a character device'], ['4', 'a block device'], ['6', 'a FIFO']] as const) {
    try {
      await entriesOf(special('dev/thing', flag));
      assert.unreachable(flag);
    } catch (e) {
      assert.ok(isSealimgError(e, 'ARCHIVE_INVALID'), String(e));
      assert.match((e as Error).message, `entry "dev/thing" is ${what}`);
    }
  }
  assert.equal(await entriesOf(special('a/layer.tar', '2', '../blob.tar')), ['a/layer.tar:link']);
  for (const target of ['/etc/shadow', '../../out', '../..']) {
    try {
      await entriesOf(special('a/link', '2', target));
      assert.unreachable(target);
    } catch (e) {
      assert.match((e as Error).message, 'is a link that leaves the archive');
    }
  }
});

test.run();
