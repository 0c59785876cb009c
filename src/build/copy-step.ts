/**
 * What one COPY/ADD puts in its layer: sources from the build context or from
 * another image's files (--from), ADD's unpacking of local tar archives, and
 * ADD's download of URLs (checked against --checksum when given).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealimgError } from '../errors.js';
import type { CopyStep } from './plan.js';
import { collectSource, type EntryMap, type SourceRoot } from './sources.js';
import type { LayerEntry } from './tar-writer.js';

/** The entries one COPY/ADD puts in its layer. */
export async function copyEntries(step: CopyStep, context: SourceRoot, tmp: string, imageRoot: (name: string, where: string) => Promise<SourceRoot>, n: number, signal?: AbortSignal): Promise<LayerEntry[]> {
  const out: EntryMap = new Map();
  const root = step.from ? await imageRoot(step.from, step.where) : context;
  const multi = step.sources.length > 1;
  const opts = { where: step.where, dest: step.dest, chmod: step.chmod };
  for (const [i, source] of step.sources.entries()) {
    if (/^https?:\/\//.test(source)) {
      const file = await download(source, join(tmp, `url-${n}-${i}`), step, signal);
      const dest = step.dest.endsWith('/') ? `${step.dest}${file.name}` : step.dest;
      await collectSource({ dir: file.dir, label: source, kind: 'image' }, file.name, { ...opts, dest, chmod: step.chmod ?? 0o600 }, out, false);
      continue;
    }
    if (!step.add) {
      await collectSource(root, source, opts, out, multi);
      continue;
    }
    // ADD: a local tar archive is unpacked into the destination; other files are copied.
    const found: EntryMap = new Map();
    await collectSource(root, source, opts, found, multi);
    for (const [path, e] of found) {
      const kind = e.type === 'file' && e.source ? await archiveKind(e.source) : undefined;
      if (!kind) {
        out.set(path, e);
        continue;
      }
      if (kind !== 'tar' && kind !== 'gzip') {
        throw new SealimgError('UNSUPPORTED', `${step.where}: ${source} is a ${kind} archive; ADD unpacks tar and tar.gz only`, { hint: 'recompress it as .tar.gz, or COPY it as a file' });
      }
      const dir = join(tmp, `add-${n}-${i}-${out.size}`);
      await mkdir(dir);
      await chmod(dir, 0o755);
      try {
        const { x: extract } = await import('tar'); // loaded when needed: ~40 ms of start-up otherwise
        await extract({ file: e.source!, cwd: dir, strict: true, preserveOwner: false, chmod: true, processUmask: 0 });
      } catch (err) {
        throw new SealimgError('ARCHIVE_INVALID', `${step.where}: ${source}: ${(err as Error).message}`);
      }
      const destDir = step.dest.endsWith('/') ? step.dest : `${step.dest}/`;
      await collectSource({ dir, label: `the archive ${source}`, kind: 'image' }, '.', { ...opts, dest: destDir }, out, true);
    }
  }
  return [...out.values()];
}

async function archiveKind(path: string): Promise<'tar' | 'gzip' | 'bzip2' | 'xz' | 'zstd' | undefined> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(512);
    const { bytesRead } = await fh.read(b, 0, 512, 0);
    if (bytesRead >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (bytesRead >= 3 && b.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
    if (bytesRead >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
    if (bytesRead >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    if (bytesRead >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    return undefined;
  } finally {
    await fh.close();
  }
}

/** ADD of a URL: downloaded into `dir`, verified against --checksum when given. */
async function download(url: string, dir: string, step: CopyStep, signal?: AbortSignal): Promise<{ dir: string; name: string }> {
  await mkdir(dir, { recursive: true });
  const name = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? '') || 'download';
  const path = join(dir, name);
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (e) {
    throw new SealimgError('NETWORK', `${step.where}: ADD ${url}: ${(e as Error).message}${(e as Error).cause ? ` (${((e as Error).cause as Error).message})` : ''}`);
  }
  if (!res.ok || !res.body) throw new SealimgError('NETWORK', `${step.where}: ADD ${url}: HTTP ${res.status} ${res.statusText}`);
  const hash = createHash('sha256');
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  body.on('data', (d: Buffer) => hash.update(d));
  await pipeline(body, createWriteStream(path, { mode: 0o600 }));
  const got = `sha256:${hash.digest('hex')}`;
  if (step.checksum && got !== step.checksum) {
    throw new SealimgError('DIGEST_MISMATCH', `${step.where}: ADD ${url}: content hashes to ${got}, not the --checksum ${step.checksum}`);
  }
  return { dir, name };
}

