/**
 * Sends a tree to a host, and on a re-run only what changed. What each host
 * has received is kept per host (relative path -> sha256) and written after
 * every batch, so a run killed half-way resends at most the batches it had
 * under way (BATCHES_IN_FLIGHT). Files the tree no longer has are removed
 * from the host.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../content/fsutil.js';
import { SealimgError, errnoCode } from '../errors.js';
import type { SshSession } from './ssh.js';
import { shellQuote } from './ssh.js';
import { inParallel } from './parallel.js';
import { uploadEntries, type UploadEntry } from './upload.js';

/** Upload streams on the wire at once (each its own exec channel). */
const STREAMS = 2;
/**
 * Batches started and not yet confirmed by the host (the most a killed run sends again): the streams on the
 * wire, and one written whole that the host is still unpacking, checking and renaming.
 */
const BATCHES_IN_FLIGHT = 3;

/** Bytes per upload batch ($SEALIMG_DISTRIBUTE_BATCH tunes it). */
function batchBytes(): number {
  const n = Number(process.env.SEALIMG_DISTRIBUTE_BATCH);
  return Number.isSafeInteger(n) && n > 0 ? n : 128 * 1024 * 1024;
}

export interface TreeFile {
  /**
   * What a host's record keeps for it: `sha256hex:mode` for a file (a chmod alone is a change to send:
   * scripts), `symlink:target` for a link. Undefined for a file not hashed yet (listTree); the upload
   * hashes it as it reads it and fills this in.
   */
  hash?: string;
  size: number;
  /** Permission bits of a file. */
  mode: number;
  /** Modification time, seconds since the epoch (what the host's copy gets). */
  mtime: number;
  /** A symlink's target. */
  target?: string;
}

/** A listed tree: its files and symlinks, and its directories (parents first), all by relative path. */
export interface Tree {
  files: Map<string, TreeFile>;
  dirs: Array<{ rel: string; mode: number; mtime: number }>;
}

const recordHash = (hex: string, mode: number) => `${hex}:${mode.toString(8)}`;

/** A file's sha256 (hex): small files in one read, large ones streamed. */
async function hashFile(path: string, size: number): Promise<string> {
  const h = createHash('sha256');
  if (size <= 1 << 20) h.update(await readFile(path));
  else for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Files hashed at once: one after another, thousands of small files cost more in round trips than in hashing. */
const HASH_PARALLEL = 8;

/**
 * Every directory, file and symlink of a tree, in sorted walk order, skipping `exclude` (and what is
 * under an excluded directory). Files are not read here (see hashFiles).
 */
export async function listTree(root: string, exclude: (rel: string) => boolean = () => false): Promise<Tree> {
  const tree: Tree = { files: new Map(), dirs: [] };
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? join(root, rel) : root)).sort().map((name) => (rel ? `${rel}/${name}` : name)).filter((r) => !exclude(r));
    const stats = await Promise.all(names.map((r) => lstat(join(root, r))));
    for (const [i, r] of names.entries()) {
      const st = stats[i]!;
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (st.isDirectory()) {
        tree.dirs.push({ rel: r, mode: st.mode & 0o7777, mtime });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        const target = await readlink(join(root, r));
        tree.files.set(r, { hash: `symlink:${target}`, size: 0, mode: 0o777, mtime, target });
      } else if (st.isFile()) tree.files.set(r, { size: st.size, mode: st.mode & 0o7777, mtime });
      else throw new SealimgError('UNSUPPORTED', `${join(root, r)}: only files, directories and symlinks can be distributed`);
    }
  };
  await walk('');
  return tree;
}

/** Files being hashed: hosts compared against one tree at once share each file's hashing. */
const hashing = new WeakMap<TreeFile, Promise<void>>();

/** Fills in the hash of each file in `files` (entries of listTree(root)) that has none yet. */
async function hashFiles(root: string, files: Array<[string, TreeFile]>): Promise<void> {
  await inParallel(
    files.filter(([, f]) => f.hash === undefined),
    HASH_PARALLEL,
    async ([rel, f]) => {
      let p = hashing.get(f);
      if (!p) {
        p = hashFile(join(root, rel), f.size).then((hex) => void (f.hash ??= recordHash(hex, f.mode)));
        hashing.set(f, p);
      }
      await p;
    },
  );
}

/** Whether a parent directory of `rel` is excluded (listTree does not descend into one). */
function excludedDir(rel: string, exclude?: (rel: string) => boolean): boolean {
  if (!exclude) return false;
  for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) if (exclude(rel.slice(0, i))) return true;
  return false;
}

type Sent = Record<string, Record<string, string>>;

async function readSent(path: string): Promise<Sent> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Sent;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return {};
    // A damaged record only costs a full resend, never a wrong skip.
    return {};
  }
}

/** Adds files a host now holds (path -> hash) to its record for `remoteDir` (relay.ts records replayed batches this way). */
export async function recordSent(statePath: string, remoteDir: string, files: Iterable<[string, string]>): Promise<void> {
  const sent = await readSent(statePath);
  const have = sent[remoteDir] ?? {};
  for (const [rel, hash] of files) have[rel] = hash;
  sent[remoteDir] = have;
  await writeFileAtomic(statePath, JSON.stringify(sent), 0o600);
}

/** Whether the host has any record for `remoteDir` (a host with one gets only changes, so it is not relayed to). */
export async function hasSent(statePath: string, remoteDir: string): Promise<boolean> {
  return (await readSent(statePath))[remoteDir] !== undefined;
}

/** One upload batch as sent: what relay.ts needs to replay its stream on another host. */
export interface SentBatch {
  index: number;
  /** The stream's staging name (receiveCommand). */
  tmp: string;
  files: Array<[string, string]>;
  bytes: number;
  /** sha256 (hex) and length of the stream (UploadResult.stream). */
  stream: { sha256: string; bytes: number };
}

export interface DistributeResult {
  sentFiles: number;
  sentBytes: number;
  removed: number;
  unchanged: number;
}

/**
 * Makes `remoteDir` on the host hold `localDir` (minus `exclude`), sending
 * only what `statePath` says the host lacks.
 */
export async function distributeTree(
  session: SshSession,
  localDir: string,
  remoteDir: string,
  statePath: string,
  opts: {
    exclude?: (rel: string) => boolean;
    step?: string;
    signal?: AbortSignal;
    /** gzip every batch (upload.ts `compress`). */
    compress?: boolean;
    /** Keep a copy of batch n's stream at this path on the host (relay.ts). */
    tee?: (index: number) => string;
    /** Told after each batch landed and was recorded. */
    onBatch?: (b: SentBatch) => void;
    /** Told as batch n starts out (its kept stream, `tee`, grows from then on). */
    onBatchStart?: (index: number) => void;
    /**
     * listTree(localDir), when the caller already has it: one tree sent to many hosts is listed once, and
     * hashed at most once (hashes learnt by one host's upload are kept in it).
     */
    tree?: Tree;
  } = {},
): Promise<DistributeResult> {
  const exclude = opts.exclude;
  const kept = (rel: string) => !exclude?.(rel) && !excludedDir(rel, exclude);
  const listed = opts.tree ?? (await listTree(localDir, exclude));
  const local = opts.tree ? new Map([...listed.files].filter(([rel]) => kept(rel))) : listed.files;
  const dirs = opts.tree ? listed.dirs.filter((d) => kept(d.rel)) : listed.dirs;
  const sent = await readSent(statePath);
  const have = new Map(Object.entries(sent[remoteDir] ?? {}));
  // Only files the host's record names are hashed first, to see whether they changed. Any other file is sent
  // anyway, and the upload hashes it as it reads it: on a first run the tree is read once, not twice (hashing
  // it first took 1.6 s of a 723 MB first run here, before the first byte was sent).
  await hashFiles(localDir, [...local].filter(([rel]) => have.has(rel)));
  const todo = [...local].filter(([rel, f]) => !have.has(rel) || have.get(rel) !== f.hash);
  const gone = [...have.keys()].filter((rel) => !local.has(rel));
  const result: DistributeResult = { sentFiles: 0, sentBytes: 0, removed: 0, unchanged: local.size - todo.length };

  const record = async () => {
    sent[remoteDir] = Object.fromEntries(have);
    await writeFileAtomic(statePath, JSON.stringify(sent), 0o600);
  };

  if (gone.length > 0) {
    const list = gone.map((rel) => `${rel}\0`).join('');
    await session.exec(`cd ${shellQuote(remoteDir)} 2>/dev/null && xargs -0 rm -f --`, { stdin: list, step: opts.step ?? 'distribute', label: `remove ${gone.length} old files from ${remoteDir}`, signal: opts.signal });
    for (const rel of gone) have.delete(rel);
    result.removed = gone.length;
    await record();
  }
  if (todo.length === 0 && local.size > 0) return result;

  // Batches: a killed run loses at most those under way.
  const batches: Array<Array<[string, TreeFile]>> = [[]];
  const BATCH_BYTES = batchBytes();
  let size = 0;
  for (const entry of todo) {
    if (size > 0 && size + entry[1].size > BATCH_BYTES) {
      batches.push([]);
      size = 0;
    }
    batches[batches.length - 1]!.push(entry);
    size += entry[1].size;
  }
  let recording = Promise.resolve();
  const sendBatch = async (index: number, onWritten: () => void): Promise<void> => {
    const batch = batches[index]!;
    // Files hashed already are not hashed again: the stream carries those hashes and the host checks against them.
    const knownHashes = new Map(batch.flatMap(([rel, f]) => (f.hash && !f.hash.startsWith('symlink:') ? [[rel, f.hash.slice(0, f.hash.lastIndexOf(':'))] as [string, string]] : [])));
    // Every batch makes the whole directory tree (a few hundred headers): each stream stands on its own.
    const entries: UploadEntry[] = [
      ...dirs.map((d) => ({ rel: d.rel, src: join(localDir, d.rel), kind: 'dir' as const, mode: d.mode, mtime: d.mtime, size: 0 })),
      ...batch.map(([rel, f]) => ({ rel, src: join(localDir, rel), kind: f.target !== undefined ? ('symlink' as const) : ('file' as const), mode: f.mode, mtime: f.mtime, size: f.size, target: f.target })),
    ];
    const label = `upload ${localDir} -> ${remoteDir}`;
    opts.onBatchStart?.(index);
    const up = await uploadEntries(session, entries, remoteDir, label, { step: opts.step, signal: opts.signal, tee: opts.tee?.(index), knownHashes, onWritten, compress: opts.compress });
    let bytes = 0;
    for (const [rel, f] of batch) {
      const hex = up.files.get(rel);
      if (hex === undefined) throw new SealimgError('IO', `${join(localDir, rel)} was not uploaded (removed while distributing?)`);
      f.hash ??= recordHash(hex, f.mode);
      have.set(rel, f.hash);
      result.sentFiles++;
      bytes += f.size;
    }
    result.sentBytes += bytes;
    // Records are written one after another, each with everything landed so far.
    recording = recording.then(record);
    await recording;
    if (opts.onBatch && up.stream) opts.onBatch({ index, tmp: up.tmp, files: batch.map(([rel, f]) => [rel, f.hash!]), bytes, stream: up.stream });
  };
  // A batch's stream starts as soon as another one is written whole, not once the host has answered for it:
  // two lanes that each waited for their host's answer ran in step and left the link idle through every
  // pair's tail (unpack, check, renames, the next command's login shell): 0.1-0.3 s a pair, one host at
  // 1 Gbit here.
  let nextBatch = 0;
  let failure: unknown;
  let onWire = 0;
  const running = new Set<Promise<void>>();
  let wake = () => {};
  while (failure === undefined && nextBatch < batches.length) {
    if (onWire >= STREAMS || running.size >= BATCHES_IN_FLIGHT) {
      await new Promise<void>((r) => (wake = r));
      continue;
    }
    onWire++;
    let written = false;
    const offWire = () => {
      if (written) return;
      written = true;
      onWire--;
      wake();
    };
    const p: Promise<void> = sendBatch(nextBatch++, offWire)
      .catch((e: unknown) => void (failure ??= e))
      .finally(() => {
        offWire();
        running.delete(p);
        wake();
      });
    running.add(p);
  }
  await Promise.all(running);
  if (failure !== undefined) throw failure;
  return result;
}
