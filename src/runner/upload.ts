/**
 * Sends a directory tree to a host as one (gzipped) tar stream over an exec
 * channel: `tar -x` on the host, no SFTP round trip per file. Files and
 * symlinks travel under temp names; once the stream is whole, the host checks
 * every file's sha256 and only then renames the temp names to the real ones,
 * so a file on the host is either the old one or the complete new one. A
 * failed upload removes its temp files.
 *
 * The tar is written here (headers from node-tar's Header/Pax), so each file is
 * read once: its bytes are hashed as they go into the stream, and the hash
 * manifest travels as the archive's last entry.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { Header, Pax, type HeaderData } from 'tar';
import { SealimgError } from '../errors.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';

export interface UploadOptions {
  /** Which files and symlinks to send, by path relative to the tree (directories are always made). */
  filter?: (rel: string) => boolean;
  /** Directories (relative paths) to leave out entirely, not even made on the host. */
  prune?: (rel: string) => boolean;
  /** gzip the stream (default true; level 1: the link, not the CPU, should be the limit). */
  compress?: boolean;
  step?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface UploadResult {
  /** Every file sent, by relative path, with its sha256 (hex); symlinks as "symlink:" + target. */
  files: Map<string, string>;
  /** Bytes of file content sent (before compression). */
  bytes: number;
}

interface Entry {
  rel: string;
  kind: 'dir' | 'file' | 'symlink';
  mode: number;
  mtime: Date;
  size: number;
  target?: string;
}

/** Lists a tree, parents before children, in a stable order. */
async function walk(root: string, filter?: (rel: string) => boolean, prune?: (rel: string) => boolean): Promise<Entry[]> {
  const out: Entry[] = [];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? join(root, rel) : root)).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      if (/[\n\\]/.test(r)) throw new SealimgError('UNSUPPORTED', `${join(root, r)}: file names with a newline or backslash cannot be uploaded`);
      const st = await lstat(join(root, r));
      const base = { rel: r, mode: st.mode & 0o7777, mtime: st.mtime, size: 0 };
      if (st.isDirectory()) {
        if (prune?.(r)) continue;
        out.push({ ...base, kind: 'dir' });
        await visit(r);
      } else if (filter && !filter(r)) {
        continue;
      } else if (st.isFile()) {
        out.push({ ...base, kind: 'file', size: st.size });
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, kind: 'symlink', target: await readlink(join(root, r)) });
      } else {
        throw new SealimgError('UNSUPPORTED', `${join(root, r)}: only files, directories and symlinks can be uploaded`);
      }
    }
  };
  await visit('');
  return out;
}

function header(h: HeaderData): Buffer {
  const hd = new Header({ uid: 0, gid: 0, uname: 'root', gname: 'root', ...h });
  // Long names and link targets go in a PAX extended header before the entry.
  return hd.encode() ? Buffer.concat([new Pax({ path: h.path, linkpath: h.linkpath, mtime: h.mtime }).encode(), hd.block!]) : hd.block!;
}

const pad = (size: number) => Buffer.alloc((512 - (size % 512)) % 512);

function tempRel(rel: string, tmp: string, i: number): string {
  const slash = rel.lastIndexOf('/');
  return `${slash >= 0 ? rel.slice(0, slash + 1) : ''}${tmp}.${i}`;
}

/** The tar stream: every entry, then the manifest and the script that checks and renames. */
async function* tarStream(root: string, entries: Entry[], tmp: string, result: UploadResult): AsyncGenerator<Buffer> {
  const sums: string[] = [];
  const renames: string[] = [];
  for (const [i, e] of entries.entries()) {
    if (e.kind === 'dir') {
      yield header({ path: `${e.rel}/`, type: 'Directory', mode: e.mode, mtime: e.mtime, size: 0 });
      continue;
    }
    const tmpRel = tempRel(e.rel, tmp, i);
    renames.push(`mv -f -T -- ${shellQuote(tmpRel)} ${shellQuote(e.rel)}`);
    if (e.kind === 'symlink') {
      yield header({ path: tmpRel, type: 'SymbolicLink', linkpath: e.target, mode: e.mode, mtime: e.mtime, size: 0 });
      result.files.set(e.rel, `symlink:${e.target}`);
      continue;
    }
    yield header({ path: tmpRel, type: 'File', mode: e.mode, mtime: e.mtime, size: e.size });
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of createReadStream(join(root, e.rel))) {
      const b = chunk as Buffer;
      n += b.length;
      // The header promised e.size bytes; a file that grows or shrinks now would corrupt the stream.
      if (n > e.size) break;
      hash.update(b);
      yield b;
    }
    if (n !== e.size) throw new SealimgError('IO', `${join(root, e.rel)} changed size while it was uploaded (${e.size} -> ${n} bytes)`);
    yield pad(e.size);
    const hex = hash.digest('hex');
    sums.push(`${hex}  ./${tmpRel}`);
    result.files.set(e.rel, hex);
    result.bytes += e.size;
  }
  const now = new Date();
  const manifest = Buffer.from(sums.map((l) => `${l}\n`).join(''));
  const script = Buffer.from(
    [
      'set -e',
      ...(sums.length ? [`sha256sum -c --quiet --strict ./${tmp}.sha256`] : []),
      ...renames,
      '',
    ].join('\n'),
  );
  for (const [name, body] of [
    [`${tmp}.sha256`, manifest],
    [`${tmp}.sh`, script],
  ] as const) {
    yield header({ path: name, type: 'File', mode: 0o600, mtime: now, size: body.length });
    yield body;
    yield pad(body.length);
  }
  yield Buffer.alloc(1024);
}

/** Uploads the tree at `localDir` into `remoteDir` on the host (made if missing). */
export async function uploadTree(session: SshSession, localDir: string, remoteDir: string, opts: UploadOptions = {}): Promise<UploadResult> {
  const entries = await walk(localDir, opts.filter, opts.prune);
  const tmp = `.sealimg-${randomId()}`;
  const result: UploadResult = { files: new Map(), bytes: 0 };
  const compress = opts.compress ?? true;
  const T = shellQuote(tmp);
  const command = [
    `mkdir -p -- ${shellQuote(remoteDir)} && cd -- ${shellQuote(remoteDir)} || exit 1`,
    `if tar -x${compress ? 'z' : ''} --no-same-owner -f - && sh ./${T}.sh; then rm -f -- ./${T}.sh ./${T}.sha256; exit 0; fi`,
    // Whatever failed (the stream, a checksum, a rename), no temp file stays behind.
    `find . \\( -type f -o -type l \\) -name ${T}'.*' -exec rm -f -- {} + 2>/dev/null`,
    'exit 1',
  ].join('\n');
  const tar = Readable.from(tarStream(localDir, entries, tmp, result), { objectMode: false });
  let body: Readable = tar;
  if (compress) {
    const gz = createGzip({ level: 1 });
    // pipe() alone drops a source error: a read error in the tar stream must reach the channel and fail the upload.
    tar.once('error', (e) => gz.destroy(e));
    body = tar.pipe(gz);
  }
  await session.exec(command, {
    stdin: body,
    step: opts.step ?? 'upload',
    label: `upload ${localDir} -> ${remoteDir}`,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs,
  });
  return result;
}
