/**
 * The 1 MiB pages a worker thread fills and transfers to the main thread
 * (build/tar-worker.ts, runner/upload-worker.ts), kept for reuse once they
 * come back: without the reuse bench/build's peak memory rose from ~150 to
 * 200-237 MB.
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
