/**
 * An upload's tar stream, made on a worker thread (upload-worker.ts says why)
 * and taken here page by page. A page goes back to its thread, to be filled
 * again, once the caller releases it: after ssh2 has copied its bytes into
 * packets. Uploads share at most two threads (each thread interleaves its
 * uploads), which do not keep the process alive when idle.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Inbox } from '../content/pages.js';
import { SealimgError } from '../errors.js';
import type { UploadEntry } from './upload-tar.js';
import type { FromUploadWorker, ToUploadWorker, UploadTarResult } from './upload-worker.js';

type Message = FromUploadWorker | { t: 'gone'; why: string };

interface Thread {
  worker: Worker;
  /** Where each of its uploads' messages go, by upload id. */
  jobs: Map<number, (m: Message) => void>;
}

const THREADS = Math.min(2, availableParallelism());
const threads: Thread[] = [];
let nextId = 0;

function spawn(): Thread {
  const worker = new Worker(new URL('./upload-worker.js', import.meta.url));
  worker.unref();
  const t: Thread = { worker, jobs: new Map() };
  worker.on('message', (m: FromUploadWorker) => t.jobs.get(m.id)?.(m));
  const gone = (why: string) => {
    const i = threads.indexOf(t);
    if (i >= 0) threads.splice(i, 1);
    for (const job of [...t.jobs.values()]) job({ t: 'gone', why });
  };
  worker.on('error', (e) => gone(e.message));
  worker.on('exit', (code) => gone(`exited with code ${code}`));
  threads.push(t);
  return t;
}

/** The thread with the fewest uploads, a new one while there are fewer than THREADS. */
function pick(): Thread {
  const idle = threads.find((t) => t.jobs.size === 0);
  if (idle) return idle;
  if (threads.length < THREADS) return spawn();
  return threads.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
}

/** Bytes of the stream; release() once they are no longer needed (the page goes back to be filled again). */
export interface UploadPage {
  data: Buffer;
  release(): void;
}

export class UploadTar {
  /** Set once pages() has ended. */
  result?: UploadTarResult;

  constructor(
    private readonly entries: UploadEntry[],
    private readonly tmp: string,
    private readonly known: Map<string, string>,
    private readonly hashStream: boolean,
  ) {}

  async *pages(): AsyncGenerator<UploadPage> {
    const t = pick();
    const id = nextId++;
    const inbox = new Inbox<Message>();
    t.jobs.set(id, (m) => inbox.push(m));
    t.worker.ref(); // an upload waiting on its stream keeps the process alive
    const next = () => inbox.next();
    const post = (m: ToUploadWorker, transfer: ArrayBuffer[] = []) => t.worker.postMessage(m, transfer);
    let over = false;
    try {
      post({ t: 'start', id, entries: this.entries, tmp: this.tmp, known: this.known, hashStream: this.hashStream, now: Math.floor(Date.now() / 1000) });
      for (;;) {
        const m = await next();
        if (m.t === 'gone') {
          over = true;
          throw new SealimgError('IO', `the thread writing the upload stream failed: ${m.why}`);
        }
        if (m.t === 'error') {
          over = true;
          if (m.error.code) throw new SealimgError(m.error.code, m.error.message);
          throw Object.assign(new Error(m.error.message), m.error.errno ? { code: m.error.errno } : {});
        }
        if (m.t === 'end') {
          over = true;
          this.result = m.result;
          return;
        }
        if (m.t !== 'page') continue;
        const buf = m.buf;
        let held = true;
        yield {
          data: Buffer.from(buf, 0, m.length),
          release: () => {
            if (!held) return;
            held = false;
            // Transferred: a view left here is detached, so a release too early shows as empty bytes, never as later ones.
            post({ t: 'taken', id, buf }, [buf]);
          },
        };
      }
    } finally {
      if (!over) {
        // The consumer stopped early (the channel closed, an abort): the thread drops the upload and says so.
        post({ t: 'stop', id });
        for (let m = await next(); m.t !== 'stopped' && m.t !== 'end' && m.t !== 'error' && m.t !== 'gone'; m = await next());
      }
      t.jobs.delete(id);
      if (t.jobs.size === 0) t.worker.unref();
    }
  }
}
