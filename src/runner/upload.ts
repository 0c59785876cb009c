/**
 * Sends a directory tree to a host as one (gzipped) tar stream over an exec
 * channel: `tar -x` on the host, no SFTP round trip per file. Directories are
 * made in place; files and symlinks land in a staging dir (.sealimg-<id>/ in
 * the target dir, so on the same file system); once the stream is whole, the
 * host checks every file's sha256 and only then renames them into place, so a
 * file on the host is either the old one or the complete new one. A failed
 * upload removes its staging dir. Files are replaced one by one: a failure
 * half-way through the renames leaves some files new and the rest old.
 *
 * The tar is written here, on a thread (upload-thread.ts), so each file is
 * read once: its bytes are hashed as they go into the stream (unless the
 * caller just hashed them), and the hash manifest travels as the archive's
 * last entry.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, posix } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { SealimgError } from '../errors.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';
import type { UploadEntry } from './upload-tar.js';
import { UploadTar } from './upload-thread.js';

export interface UploadOptions {
  /** Which files and symlinks to send, by path relative to the tree (directories are always made). */
  filter?: (rel: string) => boolean;
  /** Directories (relative paths) to leave out entirely, not even made on the host. */
  prune?: (rel: string) => boolean;
  /**
   * gzip the stream (level 1). Off by default: on bench/distribute's 723 MB tree it took one host at
   * 1 Gbit from 6.7 to 10.8-11.1 s here (at 200 Mbit, 31.6 to 20.0 s): worth it only on slow links with
   * compressible trees.
   */
  compress?: boolean;
  step?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * A path on the host that also gets a copy of the exact stream received (written as <path>.part, renamed once
   * the upload succeeded), so other hosts can replay it (relay.ts). A failure to keep the copy never fails the upload.
   */
  tee?: string;
  /**
   * sha256 (hex) of files by relative path, when the caller just hashed them (distribute.ts): they are
   * not hashed again here. The host checks every file against them, so a file that changed since fails
   * the upload rather than landing unchecked.
   */
  knownHashes?: Map<string, string>;
  /** Told once the whole stream is handed to the channel (the host may still be unpacking and checking it). */
  onWritten?: () => void;
}

export interface UploadResult {
  /** Every file sent, by relative path, with its sha256 (hex); symlinks as "symlink:" + target. */
  files: Map<string, string>;
  /** Bytes of file content sent (before compression). */
  bytes: number;
  /** The stream's staging name: receiveCommand needs it to replay the same stream. */
  tmp: string;
  /**
   * With `tee`: the sha256 (hex) and length of the exact stream sent, as this process made it. A host that
   * gets the kept copy from elsewhere (relay.ts) checks it against these before using any of it.
   */
  stream?: { sha256: string; bytes: number };
}

export type { UploadEntry } from './upload-tar.js';
type Entry = UploadEntry;

/** The host's check and rename scripts take one path a line, unescaped. */
function checkName(rel: string, src: string): void {
  if (/[\n\\]/.test(rel)) throw new SealimgError('UNSUPPORTED', `${src}: file names with a newline or backslash cannot be uploaded`);
}

/** Lists a tree, parents before children, in a stable order. */
async function walk(root: string, filter?: (rel: string) => boolean, prune?: (rel: string) => boolean): Promise<Entry[]> {
  const out: Entry[] = [];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? join(root, rel) : root)).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const src = join(root, r);
      checkName(r, src);
      const st = await lstat(src);
      const base = { rel: r, src, mode: st.mode & 0o7777, mtime: seconds(st.mtime), size: 0 };
      if (st.isDirectory()) {
        if (prune?.(r)) continue;
        out.push({ ...base, kind: 'dir' });
        await visit(r);
      } else if (filter && !filter(r)) {
        continue;
      } else if (st.isFile()) {
        out.push({ ...base, kind: 'file', size: st.size });
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, kind: 'symlink', target: await readlink(src) });
      } else {
        throw new SealimgError('UNSUPPORTED', `${src}: only files, directories and symlinks can be uploaded`);
      }
    }
  };
  await visit('');
  return out;
}

const seconds = (d: Date) => Math.floor(d.getTime() / 1000);

/** Uploads the tree at `localDir` into `remoteDir` on the host (made if missing). */
export async function uploadTree(session: SshSession, localDir: string, remoteDir: string, opts: UploadOptions = {}): Promise<UploadResult> {
  return send(session, await walk(localDir, opts.filter, opts.prune), remoteDir, `upload ${localDir} -> ${remoteDir}`, opts);
}

/**
 * Uploads `entries` (directories before what is in them) the same way, for a caller that has listed the tree
 * already (distribute.ts): nothing is walked again. A file gone since it was listed is left out of the result.
 */
export async function uploadEntries(session: SshSession, entries: UploadEntry[], remoteDir: string, label: string, opts: Omit<UploadOptions, 'filter' | 'prune'> = {}): Promise<UploadResult> {
  for (const e of entries) checkName(e.rel, e.src);
  return send(session, entries, remoteDir, label, opts);
}

/** Uploads one file (or symlink) to `remotePath` on the host, the same way: whole, checked, renamed into place. */
export async function uploadFile(session: SshSession, localFile: string, remotePath: string, opts: Omit<UploadOptions, 'filter'> = {}): Promise<UploadResult> {
  const st = await lstat(localFile);
  const rel = posix.basename(remotePath);
  if (!rel || rel === '.' || rel === '..' || remotePath.endsWith('/')) throw new SealimgError('USAGE', `${remotePath}: the target must name a file`);
  const e: Entry = { rel, src: localFile, mode: st.mode & 0o7777, mtime: seconds(st.mtime), size: 0, kind: 'file' };
  if (st.isFile()) e.size = st.size;
  else if (st.isSymbolicLink()) Object.assign(e, { kind: 'symlink', target: await readlink(localFile) });
  else throw new SealimgError('UNSUPPORTED', `${localFile}: only a file or a symlink can be uploaded this way`);
  return send(session, [e], posix.dirname(remotePath), `upload ${localFile} -> ${remotePath}`, opts);
}

/**
 * The shell command that unpacks a stream made by UploadTar(`tmp`) from stdin into `remoteDir`, checks it and
 * renames it into place; on any failure it removes its temp files and exits 1.
 */
export function receiveCommand(remoteDir: string, tmp: string, opts: { compress?: boolean; tee?: string } = {}): string {
  return `T=${shellQuote(tmp)}\n${receiveScript(remoteDir, opts)}`;
}

/**
 * receiveCommand with the staging name taken from $T, for a caller that learns it on the host (relay.ts).
 * `fromFile`: stdin is a file, not a pipe, and GNU tar reads it in 1 MiB records (-b 2048): that cut tar's
 * CPU for the 726 MB bench tree on tmpfs from 0.91 to 0.67 s here (from a pipe it made no difference).
 */
export function receiveScript(remoteDir: string, opts: { compress?: boolean; tee?: string; fromFile?: boolean } = {}): string {
  const x = `tar -x${opts.compress ? 'z' : ''}${opts.fromFile ? ' -b 2048 -B' : ''} --no-same-owner -f -`;
  // The copy is best effort: a tee that cannot write drops its file, the unpack goes on with the whole stream.
  const part = opts.tee ? shellQuote(`${opts.tee}.part`) : '';
  const unpack = opts.tee ? `{ tee -- ${part} || rm -f -- ${part}; } | ${x}` : x;
  const keep = opts.tee ? ` mv -f -- ${part} ${shellQuote(opts.tee)} 2>/dev/null;` : '';
  return [
    `mkdir -p -- ${shellQuote(remoteDir)} && cd -- ${shellQuote(remoteDir)} || exit 1`,
    `if ${unpack} && sh "./$T.sh"; then rm -rf -- "./$T" "./$T.sh" "./$T.sha256";${keep} exit 0; fi`,
    // Whatever failed (the stream, a checksum, a rename), no temp file stays behind.
    `rm -rf -- "./$T" "./$T.sh" "./$T.sha256"${opts.tee ? ` ${part}` : ''}`,
    'exit 1',
  ].join('\n');
}

/**
 * The stream's pages into `channel`, each released once it has taken the bytes (the exec ends the channel).
 * With `gzip`, through gzip; with `hashWire` too, the sha256 and length of the gzipped bytes (what a kept
 * copy holds: `tee`).
 */
async function writeStream(tar: UploadTar, channel: Writable, gzip: boolean, hashWire: boolean): Promise<UploadResult['stream']> {
  if (!gzip) {
    for await (const page of tar.pages()) {
      await taken(channel, page.data);
      page.release();
    }
    return undefined;
  }
  const gz = createGzip({ level: 1 });
  const hash = createHash('sha256');
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  const piped = hashWire ? pipeline(gz, counted, channel) : pipeline(gz, channel);
  for await (const page of tar.pages()) {
    await taken(gz, page.data);
    page.release();
  }
  gz.end();
  await piped;
  return hashWire ? { sha256: hash.digest('hex'), bytes } : undefined;
}

/** Writes `data` and resolves once the stream is done with it; rejects if the stream closes first (ssh2 then never calls back). */
function taken(w: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (w.destroyed) return reject(new Error('the channel closed'));
    const closed = () => reject(new Error('the channel closed'));
    w.once('close', closed);
    w.write(data, (e) => {
      w.off('close', closed);
      if (e) reject(e);
      else resolve();
    });
  });
}

async function send(session: SshSession, entries: Entry[], remoteDir: string, label: string, opts: UploadOptions): Promise<UploadResult> {
  const tmp = `.sealimg-${randomId()}`;
  const compress = opts.compress ?? false;
  const command = receiveCommand(remoteDir, tmp, { compress, tee: opts.tee });
  // A kept copy is checked against the sha256 of the bytes on the wire: the tar's, hashed on its thread, or gzip's.
  const tar = new UploadTar(entries, tmp, opts.knownHashes ?? new Map(), opts.tee !== undefined && !compress);
  let writing: Promise<UploadResult['stream']> = Promise.resolve(undefined);
  const stdin = async (channel: Writable) => {
    writing = writeStream(tar, channel, compress, opts.tee !== undefined && compress).finally(() => opts.onWritten?.());
    await writing;
  };
  await session.exec(command, { stdin, step: opts.step ?? 'upload', label, signal: opts.signal, timeoutMs: opts.timeoutMs });
  // The command ends only once it has the whole stream, so the pages (and the result) are through by now.
  const gzipped = await writing;
  const r = tar.result!;
  const stream = r.stream ?? gzipped;
  return { files: new Map(r.files), bytes: r.bytes, tmp, ...(stream ? { stream } : {}) };
}
