/**
 * A download that survives a dropped connection: the bytes of one HTTP
 * response, and when it breaks, of a new request for the rest (the caller's
 * `reopen(offset)`, a Range request). Forwarded chunk by chunk with
 * back-pressure, without a promise per chunk, since a pull's CPU goes here.
 */
import { Readable } from 'node:stream';
import { isRetryableError } from './retry.js';

export interface Reopened {
  body: Readable;
  /** Bytes to drop from the start of `body` (a server that ignored the Range sends from byte 0). */
  skip: number;
}

export class ResumingBody extends Readable {
  private current?: Readable;
  private offset: number;
  private resumes = 0;
  private skip = 0;

  constructor(
    first: Readable,
    start: number,
    private readonly size: number,
    private readonly maxResumes: number,
    private readonly reopen: (offset: number, attempt: number) => Promise<Reopened>,
    private readonly signal?: AbortSignal,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.offset = start;
    this.attach(first);
  }

  private attach(body: Readable): void {
    this.current = body;
    body.on('data', (chunk: Buffer) => {
      if (this.current !== body) return;
      let b = chunk;
      if (this.skip > 0) {
        const drop = Math.min(this.skip, b.length);
        this.skip -= drop;
        b = b.subarray(drop);
        if (b.length === 0) return;
      }
      this.offset += b.length;
      if (!this.push(b)) body.pause();
    });
    body.once('end', () => {
      if (this.current === body) this.push(null);
    });
    body.once('error', (e) => {
      if (this.current !== body) return;
      this.current = undefined;
      if (this.destroyed) return;
      if (this.signal?.aborted || !isRetryableError(e) || this.resumes >= this.maxResumes || this.offset >= this.size) {
        this.destroy(e);
        return;
      }
      this.resumes++;
      this.reopen(this.offset, this.resumes).then(
        (r) => {
          if (this.destroyed) {
            r.body.destroy();
            return;
          }
          this.skip = r.skip;
          this.attach(r.body);
        },
        (err) => this.destroy(err as Error),
      );
    });
  }

  override _read(): void {
    this.current?.resume();
  }

  override _destroy(err: Error | null, done: (error?: Error | null) => void): void {
    this.current?.destroy();
    this.current = undefined;
    done(err);
  }
}
