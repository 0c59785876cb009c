/**
 * The 1 MiB pages a worker thread fills and transfers to the main thread
 * (build/tar-worker.ts, runner/upload-worker.ts), kept for reuse once they
 * come back (without the reuse bench/build's peak memory rose from ~150 to
 * 197-237 MB), the credit that bounds how many are out, and the main
 * thread's inbox of a job's messages.
 */
export const PAGE = 1 << 20;

export class PagePool {
  private readonly free: ArrayBuffer[] = [];

  /** Keeps at most `keep` pages that came back. */
  constructor(private readonly keep: number) {}

  /** A page to fill: one that came back, else a new one. */
  take(): Buffer {
    const buf = this.free.pop();
    return buf ? Buffer.from(buf, 0, PAGE) : Buffer.allocUnsafeSlow(PAGE);
  }

  /** A page back from the main thread. */
  give(buf: ArrayBuffer): void {
    if (buf.byteLength === PAGE && this.free.length < this.keep) this.free.push(buf);
  }
}

/** Thrown inside a job whose consumer stopped it. */
export class Stopped extends Error {}

/** The pages a job may hand over before the main thread has taken (or given back) one, and its stop. */
export class Credit {
  private wake?: () => void;
  private stopped = false;

  constructor(private left: number) {}

  grant(): void {
    this.left++;
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Throws Stopped once the job is stopped. */
  check(): void {
    if (this.stopped) throw new Stopped();
  }

  /** Takes credit for one more page, waiting for it if need be. */
  async spend(): Promise<void> {
    this.check();
    while (this.left === 0) {
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
      this.check();
    }
    this.left--;
  }
}

/** A job's messages from its thread, taken one at a time by the main thread in the order they came. */
export class Inbox<T> {
  private readonly queue: T[] = [];
  private wake?: () => void;

  push(m: T): void {
    this.queue.push(m);
    this.wake?.();
  }

  async next(): Promise<T> {
    while (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
    this.wake = undefined;
    return this.queue.shift()!;
  }
}
