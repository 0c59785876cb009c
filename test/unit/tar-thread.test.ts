/** ThreadTar: a layer's tar made on a worker thread, read back by GNU tar; sizes checked; pages reused only once released. */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ThreadTar } from '../../src/build/tar-thread.js';
import { sortEntries, type LayerEntry } from '../../src/build/tar-writer.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('tar thread');
test.after(cleanupTmp);

async function files(dir: string): Promise<{ entries: LayerEntry[]; sizes: Map<string, number> }> {
  await mkdir(join(dir, 'src'), { recursive: true });
  const sizes = new Map<string, number>();
  const put = async (name: string, data: Buffer): Promise<void> => {
    await writeFile(join(dir, 'src', name), data);
    sizes.set(name, data.length);
  };
  await put('big.bin', randomBytes((3 << 20) + 123)); // across four pages
  await put('blob.gz', gzipSync(randomBytes(300 << 10)));
  for (let i = 0; i < 200; i++) await put(`small-${i}.txt`, Buffer.from(`file ${i}\n`.repeat(i)));
  await put('empty', Buffer.alloc(0));
  const entries: LayerEntry[] = [{ path: 'src', type: 'dir', mode: 0o755 }];
  for (const [name, size] of sizes) entries.push({ path: `src/${name}`, type: 'file', mode: 0o644, size, source: join(dir, 'src', name) });
  entries.push({ path: 'src/link', type: 'symlink', mode: 0o777, linkname: 'big.bin' });
  return { entries: sortEntries(entries), sizes };
}

test('the bytes, kept unreleased to the end, are a tar GNU tar reads with every size; its sha256 is diffId; gzip bytes come as stored runs', async () => {
  const dir = await tmpDir();
  const { entries, sizes } = await files(dir);
  const tar = new ThreadTar(entries, 0);
  const kept: Buffer[] = [];
  let storedBytes = 0;
  for await (const c of tar.chunks()) {
    kept.push(c.data); // never released: the page must not be filled again under us
    if (c.stored) storedBytes += c.data.length;
  }
  const all = Buffer.concat(kept);
  assert.is(all.length, tar.size);
  assert.is(`sha256:${createHash('sha256').update(all).digest('hex')}`, tar.diffId);
  assert.is(storedBytes, sizes.get('blob.gz'));
  const listed = spawnSync('tar', ['tvf', '-'], { input: all, maxBuffer: 64 << 20 });
  assert.is(listed.status, 0, listed.stderr.toString());
  const lines = listed.stdout.toString().trim().split('\n');
  assert.is(lines.length, entries.length);
  for (const [name, size] of sizes) assert.ok(lines.some((l) => l.includes(` ${size} `) && l.endsWith(`src/${name}`)), `${name}: ${size} bytes`);
  assert.ok(lines.some((l) => l.endsWith('src/link -> big.bin')));
});

test('released chunks: the pages are reused and the tar is still the same bytes', async () => {
  const dir = await tmpDir();
  const { entries } = await files(dir);
  const first = new ThreadTar(entries, 0);
  for await (const c of first.chunks()) c.claim.release();
  for (let round = 0; round < 3; round++) {
    const h = createHash('sha256');
    const again = new ThreadTar(entries, 0);
    const seen: Buffer[] = [];
    for await (const c of again.chunks()) {
      h.update(c.data);
      seen.push(c.data);
      c.claim.release();
    }
    assert.is(`sha256:${h.digest('hex')}`, first.diffId);
    // A page goes back to its thread by transfer, which leaves every view of it here empty: all of them went back.
    assert.ok(seen.length > 4);
    assert.ok(seen.every((b) => b.byteLength === 0), 'every page was handed back for reuse');
  }
});

test('a file shorter or longer than listed, and one gone, fail the tar with its name', async () => {
  const dir = await tmpDir();
  const { entries } = await files(dir);
  const drain = async (es: LayerEntry[]): Promise<unknown> => {
    try {
      for await (const c of new ThreadTar(es, 0).chunks()) c.claim.release();
    } catch (e) {
      return e;
    }
    return undefined;
  };
  const big = entries.find((e) => e.path === 'src/big.bin')!;
  await truncate(big.source!, big.size! - 1);
  assert.match(String(await drain(entries)), /big\.bin shrank while it was being added to a layer/);
  await writeFile(big.source!, randomBytes(big.size! + 1));
  assert.match(String(await drain(entries)), /big\.bin grew while it was being added to a layer/);
  const gone = await drain([{ path: 'x', type: 'file', mode: 0o644, size: 3, source: join(dir, 'nope') }]);
  assert.is((gone as NodeJS.ErrnoException).code, 'ENOENT');
});

test('a consumer that stops early frees the thread for the next tar', async () => {
  const dir = await tmpDir();
  const { entries } = await files(dir);
  for (let i = 0; i < 4; i++) {
    for await (const c of new ThreadTar(entries, 0).chunks()) {
      c.claim.release();
      break;
    }
  }
  const whole = new ThreadTar(entries, 0);
  let n = 0;
  for await (const c of whole.chunks()) {
    n += c.data.length;
    c.claim.release();
  }
  assert.is(n, whole.size);
  assert.ok(whole.size > 3 << 20);
});

test.run();
