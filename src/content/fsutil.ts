/**
 * Crash-safe file writes and the store lock. Every file a store keeps is
 * written to a temp name in its own directory, fsynced, renamed, and the
 * directory fsynced, so a crash leaves the old file or the new one, never half.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { dirname, join } from 'node:path';
import { SealimgError, errnoCode } from '../errors.js';

export function tempName(dir: string, base: string): string {
  return join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces `path` with `data` atomically. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = tempName(dir, path.slice(dir.length + 1));
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dir);
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

/** True when a process with this pid is running (owned by us or not). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Holds an exclusive lock file (O_EXCL) while `fn` runs. A lock left by a dead
 * process is taken over; a live holder is waited for, up to `timeoutMs`.
 */
export async function withLock<T>(lockPath: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const me = `${process.pid}\n`;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    try {
      await writeFile(lockPath, me, { flag: 'wx' });
      break;
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
    const holder = Number.parseInt((await readFile(lockPath, 'utf8').catch(() => '')).trim(), 10);
    if (Number.isInteger(holder) && holder > 0 && !processAlive(holder)) {
      // A crashed process left it. Rename first so two waiters cannot both remove a fresh lock.
      const stale = `${lockPath}.stale.${process.pid}`;
      await rename(lockPath, stale).then(() => unlink(stale), () => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      throw new SealimgError('STORE_LOCKED', `${lockPath} is held by process ${holder || '?'}`, {
        hint: 'another sealimg is writing to this store; wait for it, or remove the lock file if that process is gone',
      });
    }
    await sleep(delay + Math.random() * delay);
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath).catch(() => undefined);
  }
}

/**
 * Asks the kernel to write a file's pages back every `interval` bytes written,
 * while the writing goes on. Without it a large blob sits dirty in the page
 * cache until the final fsync, which then writes all of it at once after the
 * download or compression is over; with it the disk works alongside. At most
 * one datasync runs at a time. Call `finish()` when done writing; the final
 * fsync still decides durability.
 */
export class WritebackTimer {
  private since = 0;
  private inflight?: Promise<void>;
  private fh?: FileHandle;

  constructor(
    private readonly path: string,
    private readonly interval = 32 << 20,
  ) {}

  wrote(n: number): void {
    this.since += n;
    if (this.since < this.interval || this.inflight) return;
    this.since = 0;
    this.inflight = (async () => {
      this.fh ??= await open(this.path, 'r');
      await this.fh.datasync();
    })()
      .catch(() => undefined) // only a head start: the final fsync reports real errors
      .finally(() => (this.inflight = undefined));
  }

  async finish(): Promise<void> {
    await this.inflight;
    await this.fh?.close();
    this.fh = undefined;
  }
}

/** WritebackTimer as a pass-through stream stage. Call `finish()` after the pipeline. */
class Writeback extends Transform {
  private readonly timer: WritebackTimer;

  constructor(path: string, interval?: number) {
    super();
    this.timer = new WritebackTimer(path, interval);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.timer.wrote(chunk.length);
    done(null, chunk);
  }

  finish(): Promise<void> {
    return this.timer.finish();
  }
}

/**
 * The end of every download into a store: pipes `stages` (a source, then any
 * checks) into the file at `path`, opened with `flags` ('a' appends), with
 * write-back started as it goes (Writeback); with `sync`, the file is made
 * durable before this returns. Each chunk is written as it comes, so what a
 * killed process received is on the file and a resumed transfer starts there.
 */
export async function pipeToFile(
  stages: Array<NodeJS.ReadableStream | NodeJS.ReadWriteStream>,
  path: string,
  opts: { flags: string; sync?: boolean },
  signal?: AbortSignal,
): Promise<void> {
  const writeback = new Writeback(path);
  const out = createWriteStream(path, { flags: opts.flags, highWaterMark: 1 << 20 });
  try {
    await pipeline([...stages, writeback, out], { signal });
  } finally {
    await writeback.finish();
    // A stream destroyed before its file opened still creates the file: wait for it to close.
    if (!out.closed) await new Promise<void>((r) => out.once('close', () => r()));
  }
  if (!opts.sync) return;
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

