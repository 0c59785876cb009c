/**
 * Sends a tree to a host, and on a re-run only what changed. What each host
 * has received is kept per host (relative path -> sha256) and written after
 * every batch, so a run killed half-way resends at most one batch. Files the
 * tree no longer has are removed from the host.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { writeFileAtomic } from '../content/fsutil.js';
import { errnoCode } from '../errors.js';
import type { SshSession } from './ssh.js';
import { shellQuote } from './ssh.js';
import { uploadTree } from './upload.js';

/** Bytes per upload batch: the most a killed run sends again ($SEALIMG_DISTRIBUTE_BATCH tunes it). */
function batchBytes(): number {
  const n = Number(process.env.SEALIMG_DISTRIBUTE_BATCH);
  return Number.isSafeInteger(n) && n > 0 ? n : 128 * 1024 * 1024;
}

export interface TreeFile {
  hash: string;
  size: number;
}

/** Every file and symlink of a tree (relative path -> content hash), skipping `exclude`. */
export async function hashTree(root: string, exclude: (rel: string) => boolean = () => false): Promise<Map<string, TreeFile>> {
  const out = new Map<string, TreeFile>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(rel ? join(root, rel) : root)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (exclude(r)) continue;
      const p = join(root, r);
      const st = await lstat(p);
      if (st.isDirectory()) await walk(r);
      else if (st.isSymbolicLink()) out.set(r, { hash: `symlink:${await readlink(p)}`, size: 0 });
      else if (st.isFile()) {
        const h = createHash('sha256');
        await pipeline(createReadStream(p, { highWaterMark: 1 << 20 }), h);
        // The mode matters on the host (scripts): a chmod alone is a change to send.
        out.set(r, { hash: `${h.digest('hex')}:${(st.mode & 0o7777).toString(8)}`, size: st.size });
      }
    }
  };
  await walk('');
  return out;
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
    /** Keep a copy of batch n's stream at this path on the host (relay.ts). */
    tee?: (index: number) => string;
    /** Told after each batch landed and was recorded. */
    onBatch?: (b: SentBatch) => void;
  } = {},
): Promise<DistributeResult> {
  const local = await hashTree(localDir, opts.exclude);
  const sent = await readSent(statePath);
  const have = new Map(Object.entries(sent[remoteDir] ?? {}));
  const todo = [...local].filter(([rel, f]) => have.get(rel) !== f.hash);
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

  // Batches: a killed run loses at most one; the first batch also makes the directory tree.
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
  for (const [index, batch] of batches.entries()) {
    const names = new Set(batch.map(([rel]) => rel));
    const up = await uploadTree(session, localDir, remoteDir, { filter: (rel) => names.has(rel), prune: opts.exclude, step: opts.step, signal: opts.signal, tee: opts.tee?.(index) });
    let bytes = 0;
    for (const [rel, f] of batch) {
      have.set(rel, f.hash);
      result.sentFiles++;
      bytes += f.size;
    }
    result.sentBytes += bytes;
    await record();
    opts.onBatch?.({ index, tmp: up.tmp, files: batch.map(([rel, f]) => [rel, f.hash]), bytes });
  }
  return result;
}
