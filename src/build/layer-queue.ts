/**
 * Layers written a few at a time, results kept in step order. A build's
 * layers do not depend on each other's bytes, only on their entries, so while
 * igzip deflates one layer the main thread can tar and hash the next (a
 * cluster image's big registry layer is stored, not deflated: its cost is
 * hashing and copying, which fits in the gaps of a deflated one).
 * When one write fails, the others are stopped; stop() waits for all of them,
 * so no write is still running when the build cleans up.
 */
/**
 * Layers a build writes at once. Two keep two cores busy (a compressor
 * program, and the tar threads and hashing); more would add memory per layer
 * (pages, a compressor's run-ahead, members in flight) on a machine with many
 * cores, where one build should still stay within a couple of hundred MB.
 */
export const LAYERS_AT_ONCE = 2;

export class LayerQueue<T> {
  private readonly slots: Array<Promise<T>> = [];
  private readonly running = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  /** Calls of onDone, one after another in the order the writes were added. */
  private reported: Promise<void> = Promise.resolve();

  constructor(
    private readonly limit: number,
    private readonly onDone: (result: T) => void,
    outer?: AbortSignal,
  ) {
    if (outer?.aborted) this.abort.abort(outer.reason);
    else outer?.addEventListener('abort', () => this.abort.abort(outer.reason), { once: true });
  }

  /** Starts `write` once fewer than `limit` are running. Throws the failure of an earlier write, if any. */
  async add(write: (signal: AbortSignal) => Promise<T>): Promise<void> {
    while (this.running.size >= this.limit) await Promise.race(this.running);
    const { signal } = this.abort;
    if (signal.aborted) throw signal.reason;
    const p = write(signal);
    this.slots.push(p);
    this.reported = this.reported.then(() => p).then(this.onDone, () => undefined);
    // The first write to fail stops the others with its own error, which is what drain() reports.
    const done: Promise<void> = p.then(
      () => undefined,
      (e: unknown) => this.abort.abort(e),
    );
    this.running.add(done);
    void done.then(() => this.running.delete(done));
  }

  /** Waits until no write is running; throws the first failure, if any. */
  async idle(): Promise<void> {
    await Promise.allSettled(this.slots);
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
  }

  /** Every write's result, in the order they were added; or the first failure, once all have stopped. */
  async drain(): Promise<T[]> {
    const results = await Promise.allSettled(this.slots);
    await this.reported;
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
    return results.map((r) => (r as PromiseFulfilledResult<T>).value);
  }

  /** Stops the writes still running and waits until none is. */
  async stop(reason: unknown): Promise<void> {
    this.abort.abort(reason);
    await Promise.allSettled(this.slots);
  }
}
