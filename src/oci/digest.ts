/**
 * Digests: parsing, computing, and a stream stage that verifies size and digest.
 * Grammar from image-spec v1.1.0 descriptor.md: algorithm ":" encoded; sha256 and
 * sha512 are the registered algorithms, lowercase hex of fixed length.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback, type Readable } from 'node:stream';
import { SealimgError } from '../errors.js';
import { leaseHash, type OffThreadHash } from './hash-pool.js';

export type Algorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha512: 128 };

export interface ParsedDigest {
  algorithm: Algorithm;
  hex: string;
}

/** Parses and checks a digest; `field` names where it came from, for the error message. */
export function parseDigest(digest: unknown, field = 'digest'): ParsedDigest {
  if (typeof digest !== 'string') {
    throw new SealimgError('INVALID_DIGEST', `${field}: expected a digest string, got ${typeof digest}`);
  }
  const colon = digest.indexOf(':');
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (colon < 0 || !(algorithm in HEX_LENGTH)) {
    throw new SealimgError('INVALID_DIGEST', `${field}: "${clip(digest)}" is not a digest (want sha256:<64 hex> or sha512:<128 hex>)`);
  }
  const want = HEX_LENGTH[algorithm as Algorithm];
  if (hex.length !== want || !/^[a-f0-9]+$/.test(hex)) {
    throw new SealimgError('INVALID_DIGEST', `${field}: "${clip(digest)}" must have ${want} lowercase hex characters after "${algorithm}:"`);
  }
  return { algorithm: algorithm as Algorithm, hex };
}

export function isDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

export function digestOf(data: Uint8Array | string, algorithm: Algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Blobs from this size on may be hashed on a worker thread (hash-pool.ts); smaller ones inline, where a message round trip would cost more than the hash. */
export const OFF_THREAD_MIN_SIZE = 4 << 20;

/**
 * Large blobs hashed on the main thread at once. Handing bytes to a worker
 * costs a copy and a message per 2 MiB, which the main thread pays itself:
 * on 2 cores, a pull of one 612 MB blob over node:http was 5% faster hashing
 * inline (2.51 s against 2.64 s, mean of six) and one of four 170 MB blobs took the same time
 * either way. So the first two blobs in flight (a typical image's big layers)
 * hash here, and only more at once go to workers, where more cores pay off.
 */
const MAX_LARGE_INLINE = 2;
let largeInline = 0;

/**
 * A pass-through stage that fails the pipeline when the bytes are not exactly
 * `expected.size` bytes hashing to `expected.digest`. Extra bytes fail at once,
 * so a lying server cannot make us write more than the descriptor promised.
 * Large blobs beyond the first two in flight are hashed on a worker thread
 * while the bytes flow on here (MAX_LARGE_INLINE).
 */
export class VerifyStream extends Transform {
  readonly expected: { digest: string; size: number };
  private readonly algorithm: Algorithm;
  private hash?: Hash;
  private offThread?: OffThreadHash;
  /** This stream is one of the large blobs hashing on the main thread (largeInline). */
  private inlineSlot = false;
  private seen = 0;

  private readonly what: string;

  /** `what` names the bytes in errors (a path, a URL); it defaults to the digest. */
  constructor(expected: { digest: string; size: number }, what?: string) {
    super();
    this.expected = expected;
    this.what = what ?? `blob ${expected.digest}`;
    // A small blob is read and checked before its consumer attaches (stores hand the stream
    // out, the consumer pipes it later): its error must wait on the stream, where pipeline()
    // reports it, instead of crashing the process as an unhandled 'error' event.
    this.on('error', () => undefined);
    this.algorithm = parseDigest(expected.digest).algorithm;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.expected.size) {
      done(new SealimgError('SIZE_MISMATCH', `${this.what}: more than the expected ${this.expected.size} bytes`));
      return;
    }
    // The hash is placed at the first byte, not at construction: stores hand out streams that may wait.
    if (!this.hash && !this.offThread) {
      const large = this.expected.size >= OFF_THREAD_MIN_SIZE;
      if (large && largeInline < MAX_LARGE_INLINE) {
        largeInline++;
        this.inlineSlot = true;
      } else if (large) {
        this.offThread = leaseHash(this.algorithm);
      }
      if (!this.offThread) this.hash = createHash(this.algorithm);
    }
    if (this.hash) {
      this.hash.update(chunk);
      done(null, chunk);
      return;
    }
    // The worker hashes a copy, so the chunk can go on at once.
    this.push(chunk);
    this.offThread!.update(chunk, (err) => done(err));
  }

  override _flush(done: TransformCallback): void {
    this.leaveInlineSlot();
    if (this.seen !== this.expected.size) {
      done(new SealimgError('SIZE_MISMATCH', `${this.what}: got ${this.seen} bytes, expected ${this.expected.size}`));
      return;
    }
    if (this.offThread) {
      this.offThread.digest((err, hex) => (err ? done(err) : this.check(hex!, done)));
      return;
    }
    this.check((this.hash ?? createHash(this.algorithm)).digest('hex'), done);
  }

  private check(hex: string, done: TransformCallback): void {
    const actual = `${this.algorithm}:${hex}`;
    if (actual !== this.expected.digest) {
      done(new SealimgError('DIGEST_MISMATCH', `${this.what}: content hashes to ${actual}, expected ${this.expected.digest}`, {
        hint: 'the source is corrupt or was changed in transit; nothing was stored',
      }));
      return;
    }
    done();
  }

  override _destroy(err: Error | null, done: (error?: Error | null) => void): void {
    this.leaveInlineSlot();
    this.offThread?.release();
    done(err);
  }

  private leaveInlineSlot(): void {
    if (!this.inlineSlot) return;
    this.inlineSlot = false;
    largeInline--;
  }
}

/**
 * Streams that already carry a VerifyStream for a descriptor are marked, so a
 * store receiving one does not hash the same bytes a second time.
 */
const verifiedFor = new WeakMap<object, string>();

export function markVerified<T extends Readable>(stream: T, digest: string): T {
  verifiedFor.set(stream, digest);
  return stream;
}

export function isVerified(stream: Readable, digest: string): boolean {
  return verifiedFor.get(stream) === digest;
}

/** Hashes a stream to its digest and size, without keeping it. */
export async function digestStream(stream: AsyncIterable<Buffer>, algorithm: Algorithm = 'sha256'): Promise<{ digest: string; size: number }> {
  const hash = createHash(algorithm);
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `${algorithm}:${hash.digest('hex')}`, size };
}
