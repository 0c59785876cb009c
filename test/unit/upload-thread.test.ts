/**
 * UploadTar: an upload's tar stream made on a worker thread (upload-worker.ts). GNU tar unpacks it and
 * `sh` runs its script, which checks every file against the manifest and moves it into place; a file
 * that changed size since it was listed fails the stream with its name, one that is gone is left out;
 * uploads taken in turn each get their whole stream, and one stopped early lets the process exit.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { UploadEntry } from '../../src/runner/upload-tar.js';
import { UploadTar } from '../../src/runner/upload-thread.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('upload thread');
test.after(cleanupTmp);

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A tree to send (big file across pages, small ones, an empty one, a symlink) and its entries. */
async function tree(dir: string): Promise<{ entries: UploadEntry[]; data: Map<string, Buffer> }> {
  const data = new Map<string, Buffer>([
    ['bin/big', randomBytes((3 << 20) + 77)],
    ['empty', Buffer.alloc(0)],
  ]);
  for (let i = 0; i < 100; i++) data.set(`etc/f${i}.conf`, Buffer.from(`line ${i}\n`.repeat(i * 7)));
  const entries: UploadEntry[] = ['bin', 'etc'].map((rel) => ({ rel, src: join(dir, rel), kind: 'dir', mode: 0o755, mtime: 1_700_000_000, size: 0 }));
  for (const [rel, bytes] of data) {
    await mkdir(join(dir, rel, '..'), { recursive: true });
    await writeFile(join(dir, rel), bytes);
    entries.push({ rel, src: join(dir, rel), kind: 'file', mode: 0o640, mtime: 1_700_000_000, size: bytes.length });
  }
  entries.push({ rel: 'bin/tool', src: join(dir, 'bin/tool'), kind: 'symlink', mode: 0o777, mtime: 1_700_000_000, size: 0, target: 'big' });
  // A link to a directory is a link to move, not a directory to skip.
  entries.push({ rel: 'etc/bin', src: join(dir, 'etc/bin'), kind: 'symlink', mode: 0o777, mtime: 1_700_000_000, size: 0, target: '../bin' });
  return { entries, data };
}

async function collect(tar: UploadTar, release = true): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const p of tar.pages()) {
    out.push(Buffer.from(p.data)); // a copy: the page goes back to be filled again
    if (release) p.release();
  }
  return Buffer.concat(out);
}

test('GNU tar unpacks the stream and its script checks and moves every file into place; the hashes and the stream sha256 are right', async () => {
  const src = await tmpDir();
  const { entries, data } = await tree(src);
  const tar = new UploadTar(entries, '.sealimg-00ff', new Map(), true);
  const stream = await collect(tar);
  assert.equal(tar.result!.stream, { sha256: sha(stream), bytes: stream.length });
  assert.is(tar.result!.bytes, [...data.values()].reduce((a, b) => a + b.length, 0));
  const hashes = new Map(tar.result!.files);
  for (const [rel, bytes] of data) assert.is(hashes.get(rel), sha(bytes), rel);
  assert.is(hashes.get('bin/tool'), 'symlink:big');
  // The renames are one perl's where there is perl, else an mv a directory: on a PATH of just what the script needs, without it.
  const noPerl = await tmpDir();
  for (const tool of ['sh', 'tar', 'cut', 'xargs', 'openssl', 'sed', 'cmp', 'sha256sum', 'find', 'mv', 'rm']) await symlink(spawnSync('sh', ['-c', `command -v ${tool}`]).stdout.toString().trim(), join(noPerl, tool));
  for (const path of [process.env.PATH!, noPerl]) {
    const dst = await tmpDir();
    const x = spawnSync('sh', ['-c', 'tar -x --no-same-owner -f - && sh ./.sealimg-00ff.sh'], { cwd: dst, input: stream, env: { ...process.env, PATH: path } });
    assert.is(x.status, 0, x.stderr.toString());
    for (const [rel, bytes] of data) assert.ok((await readFile(join(dst, rel))).equals(bytes), rel);
    assert.is(spawnSync('readlink', [join(dst, 'bin/tool')]).stdout.toString().trim(), 'big');
    assert.is(spawnSync('readlink', [join(dst, 'etc/bin')]).stdout.toString().trim(), '../bin');
    assert.is(spawnSync('stat', ['-c', '%a', join(dst, 'etc/f3.conf')]).stdout.toString().trim(), '640');
    assert.equal(spawnSync('find', ['.sealimg-00ff', '!', '-type', 'd'], { cwd: dst }).stdout.toString(), '', `${path === noPerl ? 'without' : 'with'} perl, nothing is left staged`);
  }
});

test('a hash the caller knew is not computed again, and the host check catches a file that does not match it', async () => {
  const src = await tmpDir();
  const { entries } = await tree(src);
  const wrong = sha('not the file');
  const tar = new UploadTar(entries, '.sealimg-01', new Map([['etc/f5.conf', wrong]]), false);
  const stream = await collect(tar);
  assert.is(new Map(tar.result!.files).get('etc/f5.conf'), wrong);
  assert.is(tar.result!.stream, undefined);
  const dst = await tmpDir();
  const x = spawnSync('sh', ['-c', 'tar -x --no-same-owner -f - && sh ./.sealimg-01.sh'], { cwd: dst, input: stream });
  assert.is.not(x.status, 0, 'the check fails');
  assert.match(x.stderr.toString(), 'f5.conf');
  assert.not.ok((await readdir(dst)).includes('etc') && (await readdir(join(dst, 'etc'))).includes('f5.conf'), 'and moves nothing of it into place');
});

test('a file that shrank or grew since it was listed fails the stream with its name; one that is gone is left out', async () => {
  const src = await tmpDir();
  const { entries } = await tree(src);
  for (const [change, word] of [
    [() => truncate(join(src, 'bin/big'), 1000), `${(3 << 20) + 77} -> 1000 bytes`],
    [() => writeFile(join(src, 'bin/big'), randomBytes((3 << 20) + 99)), `${(3 << 20) + 77} -> ${(3 << 20) + 99} bytes`],
  ] as const) {
    await change();
    const e = await collect(new UploadTar(entries, '.sealimg-02', new Map(), false)).then(() => undefined, (x: unknown) => x as Error);
    assert.ok(e, 'the stream fails');
    assert.match(e!.message, `${join(src, 'bin/big')} changed size while it was uploaded (${word})`);
  }
  await rm(join(src, 'bin/big'));
  const tar = new UploadTar(entries, '.sealimg-03', new Map(), false);
  await collect(tar);
  const files = new Map(tar.result!.files);
  assert.not.ok(files.has('bin/big'), 'a file gone is not in the result (its caller names it)');
  assert.ok(files.has('etc/f1.conf'));
});

test('five uploads taken in turn each get their whole stream, and pages kept unreleased stay intact; a process whose upload stopped early exits by itself', async () => {
  const src = await tmpDir();
  const { entries } = await tree(src);
  const tars = Array.from({ length: 5 }, (_, i) => new UploadTar(entries, `.sealimg-1${i}`, new Map(), true));
  const its = tars.map((t) => t.pages()[Symbol.asyncIterator]());
  const got: Buffer[][] = tars.map(() => []);
  const kept: Buffer[] = [];
  for (let open = its.length; open > 0; ) {
    open = 0;
    for (const [i, it] of its.entries()) {
      const r = await it.next();
      if (r.done) continue;
      open++;
      got[i]!.push(Buffer.from(r.value.data));
      // The first upload keeps its pages: nothing may be written into them again.
      if (i === 0) kept.push(r.value.data);
      else r.value.release();
    }
  }
  for (const [i, t] of tars.entries()) assert.is(sha(Buffer.concat(got[i]!)), t.result!.stream!.sha256, `upload ${i}`);
  assert.is(sha(Buffer.concat(kept)), tars[0]!.result!.stream!.sha256, 'unreleased pages are intact');
  // Stopped after its first page: the thread drops the upload and lets the process go (a job left running
  // would keep its thread referenced, and the process would not exit).
  const thread = new URL('../../src/runner/upload-thread.js', import.meta.url).href;
  const script = `import { UploadTar } from ${JSON.stringify(thread)};
for await (const p of new UploadTar(JSON.parse(process.env.ENTRIES), '.sealimg-20', new Map(), false).pages()) { p.release(); break; }
console.log('stopped');`;
  const file = join(src, 'stop-early.mjs'); // a file, not -e: a worker would inherit --input-type
  await writeFile(file, script);
  const child = spawnSync(process.execPath, [file], { env: { ...process.env, ENTRIES: JSON.stringify(entries) }, timeout: 20_000 });
  assert.is(child.signal, null, 'the process exits by itself');
  assert.is(child.status, 0, child.stderr.toString());
  assert.is(child.stdout.toString(), 'stopped\n');
});

test.run();
