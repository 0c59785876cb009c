/**
 * Hashing off the main thread, for large blobs beyond the two that VerifyStream
 * hashes inline (digest.ts says why two): with more blobs in flight than that,
 * hashing them all on the main thread would serialise them on one core.
 * Each such blob leases a worker thread of a small pool (one per core)
 * and sends it copies of its bytes in 2 MiB batches, transferred, not cloned;
 * the buffers come back with the acknowledgement and are reused. At most
 * MAX_INFLIGHT batches per blob wait in the worker: beyond that the stream
 * waits (back-pressure), so memory stays flat whatever the network's pace.
 * When every worker is leased, the caller hashes inline.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { SealimgError } from '../errors.js';
import type { Algorithm } from './digest.js';

export type ToWorker =
  | { t: 'start'; id: number; algorithm: Algorithm }
  | { t: 'data'; id: number; buf: ArrayBuffer; len: number }
  | { t: 'end'; id: number };
type FromWorker = { t: 'ack'; id: number; buf: ArrayBuffer } | { t: 'digest'; id: number; hex: string };

const BATCH = 2 << 20;
const MAX_INFLIGHT = 3;
const POOL_SIZE = Math.max(1, Math.min(4, availableParallelism()));
const FREE_BUFFERS_KEPT = 8;

/** The running hash of one blob; the calling stream owns it until release(). */
export interface OffThreadHash {
  /** Calls `done` when the stream may send the next chunk (at once unless the worker is behind). */
  update(chunk: Uint8Array, done: (err?: Error) => void): void;
  /** The hex digest of everything updated; releases the worker. */
  digest(done: (err: Error | undefined, hex?: string) => void): void;
  /** Gives the worker back (a destroyed stream); idempotent. */
  release(): void;
}

interface Slot {
  worker: Worker;
  lease?: Lease;
}

const slots: Slot[] = [];
const freeBuffers: ArrayBuffer[] = [];
let nextId = 0;
let leasesTaken = 0;

/** How many blobs were hashed off-thread in this process (tests check the path was taken). */
export function offThreadLeases(): number {
  return leasesTaken;
}

function takeBuffer(): ArrayBuffer {
  return freeBuffers.pop() ?? new ArrayBuffer(BATCH);
}

function giveBuffer(buf: ArrayBuffer): void {
  if (buf.byteLength === BATCH && freeBuffers.length < FREE_BUFFERS_KEPT) freeBuffers.push(buf);
}

function spawn(): Slot {
  const worker = new Worker(new URL('./hash-worker.js', import.meta.url));
  worker.unref(); // an idle pool must not keep the process alive
  const slot: Slot = { worker };
  worker.on('message', (m: FromWorker) => {
    if (m.t === 'ack') giveBuffer(m.buf);
    if (slot.lease?.id === m.id) slot.lease.onMessage(m);
  });
  // A dead worker leaves the pool (the next lease spawns another); the blob it was hashing fails.
  const gone = (why: string) => {
    const i = slots.indexOf(slot);
    if (i >= 0) slots.splice(i, 1);
    slot.lease?.fail(new SealimgError('IO', `the thread hashing a blob failed: ${why}`, { hint: 'run the command again' }));
  };
  worker.on('error', (e) => gone(e.message));
  worker.on('exit', (code) => gone(`exited with code ${code}`));
  slots.push(slot);
  return slot;
}

/** A worker's hash for one blob, or undefined when all are busy (hash inline then). */
export function leaseHash(algorithm: Algorithm): OffThreadHash | undefined {
  let slot = slots.find((s) => !s.lease);
  if (!slot && slots.length < POOL_SIZE) {
    try {
      slot = spawn();
    } catch {
      return undefined; // no thread to be had (resource limits): the caller hashes inline
    }
  }
  if (!slot) return undefined;
  leasesTaken++;
  return new Lease(slot, algorithm);
}

class Lease implements OffThreadHash {
  readonly id = nextId++;
  private batch?: Uint8Array;
  private fill = 0;
  private inflight = 0;
  private waiting?: (err?: Error) => void;
  private finished?: (err: Error | undefined, hex?: string) => void;
  private failed?: Error;
  private released = false;

  constructor(
    private readonly slot: Slot,
    algorithm: Algorithm,
  ) {
    slot.lease = this;
    slot.worker.ref(); // a stream waiting on its digest keeps the process alive
    this.post({ t: 'start', id: this.id, algorithm });
  }

  update(chunk: Uint8Array, done: (err?: Error) => void): void {
    if (this.failed) return done(this.failed);
    for (let at = 0; at < chunk.length; ) {
      this.batch ??= new Uint8Array(takeBuffer());
      const n = Math.min(chunk.length - at, BATCH - this.fill);
      this.batch.set(chunk.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === BATCH) this.send();
    }
    if (this.inflight >= MAX_INFLIGHT) this.waiting = done;
    else done();
  }

  digest(done: (err: Error | undefined, hex?: string) => void): void {
    if (this.failed) return done(this.failed);
    if (this.fill > 0) this.send();
    this.finished = done;
    this.post({ t: 'end', id: this.id });
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.batch) giveBuffer(this.batch.buffer as ArrayBuffer);
    this.batch = undefined;
    if (this.slot.lease === this) {
      this.slot.lease = undefined;
      this.slot.worker.unref();
    }
  }

  onMessage(m: FromWorker): void {
    if (m.t === 'ack') {
      this.inflight--;
      const wake = this.waiting;
      if (wake && this.inflight < MAX_INFLIGHT) {
        this.waiting = undefined;
        wake();
      }
      return;
    }
    const done = this.finished;
    this.finished = undefined;
    this.release();
    done?.(undefined, m.hex);
  }

  fail(err: Error): void {
    this.failed = err;
    const wake = this.waiting;
    const done = this.finished;
    this.waiting = this.finished = undefined;
    this.release();
    wake?.(err);
    done?.(err);
  }

  private send(): void {
    const buf = this.batch!.buffer as ArrayBuffer;
    this.post({ t: 'data', id: this.id, buf, len: this.fill }, [buf]);
    this.batch = undefined;
    this.fill = 0;
    this.inflight++;
  }

  private post(m: ToWorker, transfer?: ArrayBuffer[]): void {
    this.slot.worker.postMessage(m, transfer);
  }
}
