/**
 * The thread behind upload-thread.ts: writes an upload's tar stream (upload.ts
 * says what is in it) into 1 MiB pages, with synchronous reads straight into
 * the page, and hashes every file and, when asked, the whole stream as it
 * goes. On the main thread each file cost four trips through libuv's thread
 * pool and a fresh buffer, and the hashing ran between ssh2's packets: a
 * 1-host run of the 726 MB bench tree kept the main thread busy 6.5 of its
 * 10.8 s, 0.8 s of it in the garbage collector. Several uploads (batches,
 * hosts) share a thread: each waits for credit, and the others run meanwhile.
 * Pages are transferred, not copied, and come back for reuse once ssh2 has
 * taken their bytes.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { Credit, PAGE, PagePool, Stopped } from '../content/pages.js';
import { END_OF_ARCHIVE, padding, tarHeader } from '../content/tar.js';
import { SealimgError, errnoCode } from '../errors.js';
import { finishScript, type UploadEntry } from './upload-tar.js';

/** Pages a job may have handed over and not yet had back. */
export const CREDIT = 8;

export type ToUploadWorker =
  | { t: 'start'; id: number; entries: UploadEntry[]; tmp: string; known: Map<string, string>; hashStream: boolean; now: number }
  /** A page of job `id` the main thread is done with: back for reuse, and the job may send one more. */
  | { t: 'taken'; id: number; buf: ArrayBuffer }
  | { t: 'stop'; id: number };

export interface UploadTarResult {
  /** Every file and symlink sent, with its sha256 (hex) or "symlink:" + target. */
  files: Array<[string, string]>;
  /** Bytes of file content. */
  bytes: number;
  stream?: { sha256: string; bytes: number };
}

export type FromUploadWorker =
  | { t: 'page'; id: number; buf: ArrayBuffer; length: number }
  | { t: 'end'; id: number; result: UploadTarResult }
  | { t: 'error'; id: number; error: { message: string; code?: SealimgError['code']; errno?: string } }
  | { t: 'stopped'; id: number };

const pages = new PagePool(4 * CREDIT);

const port = parentPort!;

/** One upload's stream, page by page. */
class Job {
  private page = pages.take();
  private at = 0;
  readonly credit = new Credit(CREDIT);
  private readonly stream?: Hash;
  private streamBytes = 0;
  private readonly one = Buffer.alloc(1);

  constructor(
    readonly id: number,
    private readonly m: Extract<ToUploadWorker, { t: 'start' }>,
  ) {
    if (m.hashStream) this.stream = createHash('sha256');
  }

  async run(): Promise<UploadTarResult> {
    const { entries, tmp, known } = this.m;
    const result: UploadTarResult = { files: [], bytes: 0 };
    const sums: string[] = [];
    const dirs = new Set<string>();
    for (const e of entries) {
      if (e.kind === 'dir') {
        await this.put(tarHeader({ name: `${e.rel}/`, flag: '5', mode: e.mode, mtime: e.mtime }));
        continue;
      }
      const tmpRel = `${tmp}/${e.rel}`;
      const slash = e.rel.lastIndexOf('/');
      dirs.add(slash >= 0 ? e.rel.slice(0, slash) : '.');
      if (e.kind === 'symlink') {
        await this.put(tarHeader({ name: tmpRel, flag: '2', linkname: e.target, mode: e.mode, mtime: e.mtime }));
        result.files.push([e.rel, `symlink:${e.target}`]);
        continue;
      }
      let fd: number;
      try {
        fd = openSync(e.src, 'r');
      } catch (err) {
        // Gone since it was listed: left out, and the caller names it.
        if (errnoCode(err) === 'ENOENT') continue;
        throw err;
      }
      try {
        await this.put(tarHeader({ name: tmpRel, flag: '0', mode: e.mode, mtime: e.mtime, size: e.size }));
        const hex = await this.file(fd, e, known.get(e.rel));
        await this.put(padding(e.size));
        sums.push(`${hex}  ./${tmpRel}`);
        result.files.push([e.rel, hex]);
        result.bytes += e.size;
      } finally {
        closeSync(fd);
      }
    }
    const manifest = Buffer.from(sums.map((l) => `${l}\n`).join(''));
    const script = Buffer.from(finishScript(tmp, dirs, sums.length > 0));
    for (const [name, body] of [
      [`${tmp}.sha256`, manifest],
      [`${tmp}.sh`, script],
    ] as const) {
      await this.put(tarHeader({ name, flag: '0', mode: 0o600, mtime: this.m.now, size: body.length }));
      await this.put(body);
      await this.put(padding(body.length));
    }
    await this.put(END_OF_ARCHIVE);
    await this.flush();
    if (this.stream) result.stream = { sha256: this.stream.digest('hex'), bytes: this.streamBytes };
    return result;
  }

  /**
   * A file's bytes into the pages, exactly the size its header promised (the header is out already, so a
   * file that grew or shrank fails the stream); its sha256, hashed here unless the caller `known` it.
   */
  private async file(fd: number, e: UploadEntry, known?: string): Promise<string> {
    const hash = known ? undefined : createHash('sha256');
    for (let pos = 0; pos < e.size; ) {
      if (this.at === PAGE) await this.flush();
      const n = readSync(fd, this.page, this.at, Math.min(e.size - pos, PAGE - this.at), pos);
      if (n === 0) throw changed(e, pos);
      hash?.update(this.page.subarray(this.at, this.at + n));
      this.at += n;
      pos += n;
    }
    if (readSync(fd, this.one, 0, 1, e.size) !== 0) throw changed(e, fstatSync(fd).size);
    return known ?? hash!.digest('hex');
  }

  private async put(b: Buffer): Promise<void> {
    for (let off = 0; off < b.length; ) {
      if (this.at === PAGE) await this.flush();
      const n = b.copy(this.page, this.at, off);
      this.at += n;
      off += n;
    }
  }

  private async flush(): Promise<void> {
    this.credit.check();
    if (this.at === 0) return;
    await this.credit.spend();
    this.stream?.update(this.page.subarray(0, this.at));
    this.streamBytes += this.at;
    const buf = this.page.buffer as ArrayBuffer;
    port.postMessage({ t: 'page', id: this.id, buf, length: this.at } satisfies FromUploadWorker, [buf]);
    this.page = pages.take();
    this.at = 0;
  }
}

function changed(e: UploadEntry, now: number): SealimgError {
  return new SealimgError('IO', `${e.src} changed size while it was uploaded (${e.size} -> ${now} bytes)`);
}

const jobs = new Map<number, Job>();

port.on('message', (m: ToUploadWorker) => {
  if (m.t === 'taken') {
    pages.give(m.buf);
    jobs.get(m.id)?.credit.grant();
  } else if (m.t === 'start') {
    const job = new Job(m.id, m);
    jobs.set(m.id, job);
    job.run().then(
      (result) => port.postMessage({ t: 'end', id: m.id, result } satisfies FromUploadWorker),
      (e: unknown) => {
        if (e instanceof Stopped) return port.postMessage({ t: 'stopped', id: m.id } satisfies FromUploadWorker);
        const error = { message: e instanceof Error ? e.message : String(e), code: e instanceof SealimgError ? e.code : undefined, errno: e instanceof SealimgError ? undefined : errnoCode(e) };
        port.postMessage({ t: 'error', id: m.id, error } satisfies FromUploadWorker);
      },
    ).finally(() => jobs.delete(m.id));
  } else jobs.get(m.id)?.credit.stop();
});
