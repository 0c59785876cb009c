/**
 * The thread behind tar-thread.ts: writes the tar of a layer's entries into
 * 1 MiB pages and hashes it (the layer's diffID) as it goes, with synchronous
 * reads straight into the page. On the main thread each file cost several
 * trips through libuv's thread pool (open, read, read to see the end, close)
 * and a fresh buffer; here a small file is four system calls (open, read,
 * the read that finds its end, close) and no allocation, and the main thread is left to the compressor.
 * A page is handed over (transferred, not copied) with the runs of it that are
 * already-compressed file bytes; the main thread grants a new page once it
 * has taken one, so at most CREDIT pages are ahead of it.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { Credit, PAGE, PagePool, Stopped } from '../content/pages.js';
import { END_OF_ARCHIVE, padding } from '../content/tar.js';
import { SealimgError } from '../errors.js';
import { COMPRESSED_EXT, entryHeader, looksCompressed, type LayerEntry } from './tar-writer.js';

/** Pages a job may have handed over and not yet had taken. */
export const CREDIT = 8;

export type ToTarWorker =
  | { t: 'start'; id: number; entries: LayerEntry[]; mtime: number }
  | { t: 'credit'; id: number }
  | { t: 'stop'; id: number }
  /** A page the main thread is done with, back for reuse. */
  | { t: 'free'; buf: ArrayBuffer };

/** An error as it crosses threads: SealimgError's code and hint, or Node's errno code. */
export interface ThreadError {
  message: string;
  sealimg?: { code: SealimgError['code']; hint?: string };
  errno?: string;
}

export type FromTarWorker =
  /** `runs`: byte counts of the page in order, alternately not-stored and stored, starting with not-stored. */
  | { t: 'page'; id: number; buf: ArrayBuffer; length: number; runs: number[] }
  | { t: 'end'; id: number; diffId: string; size: number }
  | { t: 'error'; id: number; error: ThreadError }
  /** A stopped job is over: the thread takes the next one. */
  | { t: 'stopped'; id: number };

const pages = new PagePool(2 * CREDIT);

function changedError(source: string, grew: boolean): SealimgError {
  return new SealimgError('BUILD_FAILED', `${source} ${grew ? 'grew' : 'shrank'} while it was being added to a layer`);
}

/** One layer's tar, page by page. */
class Job {
  private page = pages.take();
  private at = 0;
  private runs: number[] = [];
  /** Where the current run started in the page, and whether it is stored bytes. */
  private runStart = 0;
  private stored = false;
  readonly credit = new Credit(CREDIT);
  private readonly hash = createHash('sha256');
  private size = 0;
  private readonly one = Buffer.alloc(1);

  constructor(
    readonly id: number,
    private readonly entries: LayerEntry[],
    private readonly mtime: number,
  ) {}

  async run(): Promise<{ diffId: string; size: number }> {
    for (const e of this.entries) {
      await this.put(entryHeader(e, this.mtime));
      if (e.type !== 'file' || !e.size) continue;
      await this.file(e.source!, e.size, e.path);
      await this.put(padding(e.size));
    }
    await this.put(END_OF_ARCHIVE);
    await this.flush();
    return { diffId: `sha256:${this.hash.digest('hex')}`, size: this.size };
  }

  /** Tar framing bytes (headers, padding): never stored. */
  private async put(b: Buffer): Promise<void> {
    this.kind(false);
    for (let off = 0; off < b.length; ) {
      if (this.at === PAGE) await this.flush();
      const n = b.copy(this.page, this.at, off);
      this.at += n;
      off += n;
    }
  }

  /** A file's bytes, read into the page; exactly `size` of them, or the file changed. */
  private async file(source: string, size: number, path: string): Promise<void> {
    // The first bytes say whether the file is compressed already: keep enough of them in one page.
    if (PAGE - this.at < 16) await this.flush();
    const fd = openSync(source, 'r');
    try {
      for (let pos = 0; pos < size; ) {
        if (this.at === PAGE) await this.flush();
        const n = readSync(fd, this.page, this.at, Math.min(size - pos, PAGE - this.at), pos);
        if (n === 0) throw changedError(source, false);
        if (pos === 0) this.kind(COMPRESSED_EXT.test(path) || looksCompressed(this.page.subarray(this.at, this.at + n)));
        this.at += n;
        pos += n;
      }
      if (readSync(fd, this.one, 0, 1, size) !== 0) throw changedError(source, true);
    } finally {
      closeSync(fd);
    }
  }

  /** The bytes from here on are stored (already compressed) ones, or not. */
  private kind(stored: boolean): void {
    if (stored === this.stored) return;
    this.runs.push(this.at - this.runStart);
    this.runStart = this.at;
    this.stored = stored;
  }

  private async flush(): Promise<void> {
    this.credit.check();
    if (this.at === 0) return;
    await this.credit.spend();
    const data = this.page.subarray(0, this.at);
    this.hash.update(data);
    this.size += this.at;
    this.runs.push(this.at - this.runStart);
    // A page that starts with stored bytes says so with an empty not-stored run.
    const buf = this.page.buffer as ArrayBuffer;
    port.postMessage({ t: 'page', id: this.id, buf, length: this.at, runs: this.runs } satisfies FromTarWorker, [buf]);
    this.page = pages.take();
    this.at = 0;
    this.runStart = 0;
    this.runs = this.stored ? [0] : [];
  }
}

function threadError(e: unknown): ThreadError {
  if (e instanceof SealimgError) return { message: e.message, sealimg: { code: e.code, hint: e.hint } };
  const errno = typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
  return { message: e instanceof Error ? e.message : String(e), errno };
}

const port = parentPort!;
let job: Job | undefined;

port.on('message', (m: ToTarWorker) => {
  if (m.t === 'free') {
    pages.give(m.buf);
  } else if (m.t === 'start') {
    const j = new Job(m.id, m.entries, m.mtime);
    job = j;
    j.run().then(
      (r) => port.postMessage({ t: 'end', id: j.id, ...r } satisfies FromTarWorker),
      (e: unknown) => port.postMessage(e instanceof Stopped ? { t: 'stopped', id: j.id } : ({ t: 'error', id: j.id, error: threadError(e) } satisfies FromTarWorker)),
    );
  } else if (job?.id === m.id) {
    if (m.t === 'credit') job.credit.grant();
    else job.credit.stop();
  }
});
