/**
 * A layer's tar, made on a worker thread (tar-worker.ts says why) and taken
 * here as chunks: runs of a page that are, or are not, already-compressed file
 * bytes. The worker also hashes the tar, so the diffID costs this thread
 * nothing. Threads are kept in a pool, one per layer written at once
 * (LAYERS_AT_ONCE), and do not keep the process alive when idle.
 */
import { Worker } from 'node:worker_threads';
import { Inbox } from '../content/pages.js';
import { SealimgError } from '../errors.js';
import { LAYERS_AT_ONCE } from './layer-queue.js';
import type { Claim, LayerEntry, TarChunk } from './tar-writer.js';
import type { FromTarWorker, ThreadError, ToTarWorker } from './tar-worker.js';

type Message = FromTarWorker | { t: 'gone'; why: string };

interface Slot {
  worker: Worker;
  /** Where the messages of the job it runs go. */
  job?: (m: Message) => void;
}

/** One thread per layer being written; a caller beyond that waits for one. */
const POOL_SIZE = LAYERS_AT_ONCE;
const slots: Slot[] = [];
const waiting: Array<(s: Slot) => void> = [];
let nextId = 0;

function spawn(): Slot {
  const worker = new Worker(new URL('./tar-worker.js', import.meta.url));
  worker.unref();
  const slot: Slot = { worker };
  worker.on('message', (m: FromTarWorker) => slot.job?.(m));
  const gone = (why: string) => {
    const i = slots.indexOf(slot);
    if (i < 0) return;
    slots.splice(i, 1);
    slot.job?.({ t: 'gone', why });
    // A job waiting for a thread gets a new one in its place.
    const next = waiting.shift();
    if (next) next(taken(spawn()));
  };
  worker.on('error', (e) => gone(e.message));
  worker.on('exit', (code) => gone(`exited with code ${code}`));
  slots.push(slot);
  return slot;
}

/** Starts a thread ahead of the first layer (a thread takes ~60 ms to load), while the build lists its sources. */
export function prepareTarThread(): void {
  if (slots.length === 0) spawn();
}

async function lease(): Promise<Slot> {
  const free = slots.find((s) => !s.job) ?? (slots.length < POOL_SIZE ? spawn() : undefined);
  if (free) return taken(free);
  return new Promise((resolve) => waiting.push(resolve));
}

/** Marks a slot leased before its job is set, so no other lease() takes it meanwhile. */
function taken(slot: Slot): Slot {
  slot.job = () => undefined;
  return slot;
}

function release(slot: Slot): void {
  slot.job = undefined;
  slot.worker.unref();
  if (!slots.includes(slot)) return;
  const next = waiting.shift();
  if (next) next(taken(slot));
}

/** A page from the worker and the claims on it; when the last is released the page goes back to be filled again. */
class Page {
  private refs = 0;
  constructor(
    readonly bytes: Buffer,
    private readonly worker: Worker,
  ) {}
  claim(): Claim {
    this.refs++;
    let held = true;
    return {
      also: () => this.claim(),
      release: () => {
        if (!held) return;
        held = false;
        if (--this.refs > 0) return;
        const buf = this.bytes.buffer as ArrayBuffer;
        // Transferred: any view left here is detached, so a release too early shows as empty bytes, never as later ones.
        this.worker.postMessage({ t: 'free', buf } satisfies ToTarWorker, [buf]);
      },
    };
  }
}

function fromThread(e: ThreadError): Error {
  if (e.sealimg) return new SealimgError(e.sealimg.code, e.message, { hint: e.sealimg.hint });
  return Object.assign(new Error(e.message), e.errno ? { code: e.errno } : {});
}

/** The tar of `entries` (sorted, as sortEntries gives them), every mtime set to `mtime` (seconds). */
export class ThreadTar {
  /** sha256 of the tar, and its length: set once chunks() has ended. */
  diffId = '';
  size = 0;

  constructor(
    private readonly entries: LayerEntry[],
    private readonly mtime: number,
  ) {}

  async *chunks(): AsyncGenerator<TarChunk> {
    const slot = await lease();
    const id = nextId++;
    const inbox = new Inbox<Message>();
    slot.job = (m) => {
      if (!('id' in m) || m.id === id) inbox.push(m);
    };
    slot.worker.ref(); // a build waiting on its layer keeps the process alive
    const next = () => inbox.next();
    const post = (m: ToTarWorker): void => slot.worker.postMessage(m);
    let over = false;
    try {
      post({ t: 'start', id, entries: this.entries, mtime: this.mtime });
      for (;;) {
        const m = await next();
        if (m.t === 'gone') throw new SealimgError('IO', `the thread writing a layer's tar failed: ${m.why}`, { hint: 'run the build again' });
        if (m.t === 'error') {
          over = true;
          throw fromThread(m.error);
        }
        if (m.t === 'end') {
          over = true;
          this.diffId = m.diffId;
          this.size = m.size;
          return;
        }
        if (m.t !== 'page') continue;
        const page = new Page(Buffer.from(m.buf), slot.worker);
        // Ours until every run is handed out, so an early release of one run cannot free the page.
        const ours = page.claim();
        let at = 0;
        for (let i = 0; i < m.runs.length; i++) {
          const n = m.runs[i]!;
          if (n === 0) continue;
          yield { data: page.bytes.subarray(at, at + n), stored: i % 2 === 1, claim: page.claim() };
          at += n;
        }
        ours.release();
        // The page is taken: the worker may fill another.
        post({ t: 'credit', id });
      }
    } finally {
      if (!over && slots.includes(slot)) {
        // The consumer stopped early (a failed write, an abort): the worker drops the job and says so.
        post({ t: 'stop', id });
        for (let m = await next(); m.t !== 'stopped' && m.t !== 'end' && m.t !== 'error' && m.t !== 'gone'; m = await next());
      }
      release(slot);
    }
  }
}
