/**
 * copy(): the one graph walk behind pull, push, save, load and sync.
 * Children go before their parents (blobs, then manifests, then indexes), what
 * the destination has is skipped, blobs move with bounded concurrency, every
 * byte is verified on the way, and the tag is written last, so a reader never
 * sees a tag whose image is incomplete.
 */
import { Readable, Transform } from 'node:stream';
import { isVerified, markVerified } from '../oci/digest.js';
import { SealimgError, isSealimgError } from '../errors.js';
import { isIndex, isManifest } from '../oci/mediatypes.js';
import type { Descriptor, ImageIndex, Platform } from '../oci/types.js';
import { childrenOf, parseManifest } from '../oci/validate.js';
import { canDelete, canFetchFrom, canMount, canResumeIngest, fetchAll, type ReadOnlyStore, type Store } from './store.js';

/** Times one blob is started over after a network failure nothing could resume. */
const BLOB_RESTARTS = 3;

export type CopyEvent =
  | { type: 'start'; desc: Descriptor }
  | { type: 'progress'; desc: Descriptor; bytes: number }
  | { type: 'skip'; desc: Descriptor }
  | { type: 'done'; desc: Descriptor };

export interface CopyOptions {
  /** Blobs in flight at once (default 4). */
  concurrency?: number;
  signal?: AbortSignal;
  /** Copy only the manifest for this platform out of an index. */
  platform?: Platform;
  onEvent?: (event: CopyEvent) => void;
  /**
   * On failure, delete the blobs this copy added (when the destination can
   * delete), so a failed pull leaves the store as it was. Off for registries,
   * where finished blobs are what a re-run resumes from.
   */
  rollback?: boolean;
}

/** Which side of a copy failed, and doing what: the answer a user needs first. */
export class CopyError extends SealimgError {
  constructor(
    readonly side: 'source' | 'destination',
    readonly op: string,
    readonly digest: string | undefined,
    cause: unknown,
  ) {
    const inner = cause instanceof Error ? cause.message : String(cause);
    super(isSealimgError(cause) ? cause.code : 'IO', `${side} failed to ${op}${digest ? ` ${digest}` : ''}: ${inner}`, {
      cause,
      hint: isSealimgError(cause) ? cause.hint : undefined,
    });
  }
}

async function on<T>(side: 'source' | 'destination', op: string, digest: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CopyError) throw e;
    throw new CopyError(side, op, digest, e);
  }
}

/** A counting semaphore: at most `n` holders at once. */
class Limit {
  private waiting: Array<() => void> = [];
  private active = 0;
  constructor(private readonly n: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.n) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  return have.os === want.os && have.architecture === want.architecture && (want.variant === undefined || have.variant === want.variant);
}

/**
 * Copies the image `srcRef` names in `src` into `dst`, and tags it `dstRef`
 * when given. Returns the descriptor of the root that was copied.
 */
export async function copy(src: ReadOnlyStore, srcRef: string, dst: Store, dstRef: string | undefined, opts: CopyOptions = {}): Promise<Descriptor> {
  const signal = opts.signal;
  let root = await on('source', 'resolve', srcRef, () => src.resolve(srcRef, signal));
  if (opts.platform && isIndex(root.mediaType)) root = await pickPlatform(src, root, opts.platform, signal);
  await copyGraph(src, dst, root, opts);
  if (dstRef !== undefined) await on('destination', 'tag', dstRef, () => dst.tag(root, dstRef, signal));
  return root;
}

async function pickPlatform(src: ReadOnlyStore, index: Descriptor, want: Platform, signal?: AbortSignal): Promise<Descriptor> {
  const bytes = await on('source', 'fetch', index.digest, () => fetchAll(src, index, signal));
  const parsed = parseManifest(bytes, index.mediaType, index.digest);
  const match = (parsed.manifest as ImageIndex).manifests.find((m) => platformMatches(want, m.platform));
  if (!match) {
    const have = (parsed.manifest as ImageIndex).manifests.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : '?'));
    throw new SealimgError('MANIFEST_UNKNOWN', `no manifest for ${want.os}/${want.architecture} in ${index.digest}`, {
      hint: `the index has: ${have.join(', ') || 'nothing'}`,
    });
  }
  return match;
}

/** Copies `root` and everything below it; exported for callers that tag themselves (save, sync). */
export async function copyGraph(src: ReadOnlyStore, dst: Store, root: Descriptor, opts: CopyOptions = {}): Promise<void> {
  // The first failure stops every transfer still running, not just the walk.
  const failed = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, failed.signal]) : failed.signal;
  const limit = new Limit(Math.max(1, opts.concurrency ?? 4));
  const emit = opts.onEvent ?? (() => undefined);
  const seen = new Map<string, Promise<void>>();
  const added: Descriptor[] = [];

  const node = (desc: Descriptor): Promise<void> => {
    let p = seen.get(desc.digest);
    if (!p) {
      p = visit(desc);
      seen.set(desc.digest, p);
    }
    return p;
  };

  const visit = async (desc: Descriptor): Promise<void> => {
    signal?.throwIfAborted();
    if (await on('destination', 'check', desc.digest, () => dst.exists(desc, signal))) {
      emit({ type: 'skip', desc });
      return;
    }
    if (isManifest(desc.mediaType)) {
      // Manifests are small (4 MiB at most): read whole, check, then copy what they name.
      const bytes = await limit.run(() => on('source', 'fetch', desc.digest, () => fetchAll(src, desc, signal)));
      const parsed = await on('source', 'parse', desc.digest, async () => parseManifest(bytes, desc.mediaType, desc.digest));
      await Promise.all(childrenOf(parsed).map(node));
      await limit.run(() => on('destination', 'push', desc.digest, () => dst.push(desc, Readable.from([bytes]), signal)));
      added.push(desc);
      emit({ type: 'done', desc });
      return;
    }
    await limit.run(async () => {
      signal.throwIfAborted(); // queued behind a transfer that failed: do not start
      if (canMount(dst) && (await on('destination', 'mount', desc.digest, () => dst.mount(desc, src, signal)))) {
        emit({ type: 'skip', desc });
        return;
      }
      emit({ type: 'start', desc });
      const transfer = async () => {
        // What an interrupted earlier run left at the destination is kept; only the rest is asked for.
        const offset = canResumeIngest(dst) && canFetchFrom(src) ? await on('destination', 'check', desc.digest, () => dst.ingestOffset(desc, signal)) : 0;
        const rest = offset > 0 && canFetchFrom(src) ? await on('source', 'fetch', desc.digest, () => src.fetchFrom(desc, offset, signal)) : undefined;
        let body = rest ?? (await on('source', 'fetch', desc.digest, () => src.fetch(desc, signal)));
        const base = rest ? offset : 0;
        if (opts.onEvent) body = counted(body, desc.digest, (bytes) => emit({ type: 'progress', desc, bytes: base + bytes }));
        await on('destination', 'push', desc.digest, async () => {
          try {
            if (rest && canResumeIngest(dst)) await dst.pushFrom(desc, offset, body, signal);
            else await dst.push(desc, body, signal);
          } catch (e) {
            // A verification failure surfaces through the pipeline but is the source's fault.
            if (isSealimgError(e, 'DIGEST_MISMATCH') || isSealimgError(e, 'SIZE_MISMATCH')) throw new CopyError('source', 'fetch', desc.digest, e);
            throw e;
          }
        });
      };
      // A network failure neither side could resume (a registry that drops an upload
      // session when a chunk breaks) is worth starting the blob over, a few times.
      for (let restart = 0; ; restart++) {
        try {
          await transfer();
          break;
        } catch (e) {
          if (restart >= BLOB_RESTARTS || signal.aborted || !isSealimgError(e, 'NETWORK')) throw e;
        }
      }
      added.push(desc);
      emit({ type: 'done', desc });
    });
  };

  try {
    await node(root);
  } catch (e) {
    failed.abort(e);
    // Return only once nothing is in flight: a caller may remove what the copy was writing to.
    await Promise.allSettled(seen.values());
    if (opts.rollback && canDelete(dst)) {
      for (const d of added) await dst.delete(d).catch(() => undefined);
    }
    throw e;
  }
}

/** Counts bytes as they pass, for progress, keeping the source's verified mark. */
function counted(body: Readable, digest: string, report: (bytes: number) => void): Readable {
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      report(bytes);
      done(null, chunk);
    },
  });
  body.on('error', (e) => counter.destroy(e));
  // The consumer learns of an error through its pipeline, which sees a stream that
  // already failed; without a listener, a source that fails before the consumer
  // attaches (a short blob with a wrong digest) would crash the process instead.
  counter.on('error', () => undefined);
  body.pipe(counter);
  return isVerified(body, digest) ? markVerified(counter, digest) : counter;
}
