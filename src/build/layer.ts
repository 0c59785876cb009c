/**
 * One layer from a list of entries: tar -> (diffID hash) -> compress ->
 * (digest hash) -> a temp file, in one pass; then the blob goes into the
 * store under the descriptor those hashes gave.
 *
 * gzip: the tar is cut into pieces of at most 1 MiB, each compressed on its
 * own as a gzip member (RFC 1952 lets members follow each other; Go's, zlib's
 * and Python's readers all read them as one stream). The pieces are deflated
 * in zlib's thread pool, several at once, so both cores work, and the output is
 * the same bytes whatever the machine (Node bundles its zlib). File bytes that
 * are already compressed (gzip/zstd/xz blobs, archives, images) go into
 * members of their own at level 0: stored, not deflated again, which is where
 * most of a cluster image's bytes are.
 * zstd: the `zstd` program (Node 20 has no zstd), multi-threaded.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip as gzipCb, type ZlibOptions } from 'node:zlib';
import { canIngestFile, type Store } from '../content/store.js';
import { SealimgError } from '../errors.js';
import { markVerified } from '../oci/digest.js';
import { OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { sortEntries, tarChunks, type LayerEntry, type TarChunk } from './tar-writer.js';

const gzip = promisify<Buffer, ZlibOptions, Buffer>(gzipCb);

export type Compression = 'gzip' | 'zstd' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['gzip', 'zstd', 'none'];

/**
 * Deflate level for compressible bytes. Level 1 deflates about twice as fast
 * as zlib's default 6 for a few percent more bytes (measured in bench/build.sh);
 * changing it changes every layer digest, so it is a constant, not a guess per machine.
 */
export const GZIP_LEVEL = 1;
/** Uncompressed bytes per gzip member. */
const MEMBER_SIZE = 1 << 20;

export interface LayerOptions {
  compression: Compression;
  /** Seconds since the epoch for every entry (SOURCE_DATE_EPOCH or 0). */
  mtime: number;
  /** Where the temp file is written; when it is the store's ingestDir(), the blob is renamed into place. */
  tmpDir: string;
  /** Overrides GZIP_LEVEL (benchmarks). */
  gzipLevel?: number;
  signal?: AbortSignal;
}

export interface Layer {
  descriptor: Descriptor;
  /** sha256 of the uncompressed tar (image-spec config.md rootfs.diff_ids). */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  tarSize: number;
  /** False when the store already had the blob. */
  pushed: boolean;
}

export function mediaTypeFor(c: Compression): string {
  return c === 'gzip' ? OCI_LAYER_GZIP : c === 'zstd' ? OCI_LAYER_ZSTD : OCI_LAYER;
}

/** The temp file a blob is written to, hashed as it is written. */
class BlobFile {
  readonly hash: Hash = createHash('sha256');
  size = 0;
  private constructor(private readonly fh: FileHandle) {}
  static async create(path: string): Promise<BlobFile> {
    return new BlobFile(await open(path, 'wx'));
  }
  async write(b: Buffer): Promise<void> {
    this.hash.update(b);
    this.size += b.length;
    for (let off = 0; off < b.length; ) off += (await this.fh.write(b, off)).bytesWritten;
  }
  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Gzip members compressed in parallel, written in order. */
class ParallelGzip {
  private pending: Buffer[] = [];
  private pendingSize = 0;
  private pendingStored = false;
  private readonly inFlight: Array<Promise<Buffer>> = [];
  private readonly parallel = availableParallelism() + 1;

  constructor(
    private readonly level: number,
    private readonly sink: (b: Buffer) => Promise<void>,
  ) {}

  async add(c: TarChunk): Promise<void> {
    if (this.pendingSize > 0 && c.stored !== this.pendingStored) await this.cut();
    this.pendingStored = c.stored;
    this.pending.push(c.data);
    this.pendingSize += c.data.length;
    if (this.pendingSize >= MEMBER_SIZE) await this.cut();
  }

  private async cut(): Promise<void> {
    if (this.pendingSize === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingSize);
    // memLevel 9 (zlib's largest hash) deflates level 1 about 10% faster here, same output size.
    this.inFlight.push(gzip(data, { level: this.pendingStored ? 0 : this.level, memLevel: 9 }));
    this.pending = [];
    this.pendingSize = 0;
    while (this.inFlight.length >= this.parallel) await this.sink(await this.inFlight.shift()!);
  }

  async end(): Promise<void> {
    await this.cut();
    while (this.inFlight.length > 0) await this.sink(await this.inFlight.shift()!);
  }
}

/** Compresses with the `zstd` program, feeding it with back-pressure and hashing what it writes. */
async function viaZstd(chunks: AsyncIterable<TarChunk>, onTar: (b: Buffer) => void, out: BlobFile, signal?: AbortSignal): Promise<void> {
  const child = spawn('zstd', ['-q', '-3', '-T0', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (e) =>
      reject((e as NodeJS.ErrnoException).code === 'ENOENT'
        ? new SealimgError('UNSUPPORTED', '--compression zstd needs the zstd program on the PATH (Node 20 has no zstd)', { hint: 'install zstd (Debian: apt-get install zstd), or use --compression gzip' })
        : e));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new SealimgError('BUILD_FAILED', `zstd exited ${code}: ${stderr.trim()}`))));
  });
  const drain = (async () => {
    for await (const b of child.stdout) await out.write(b as Buffer);
  })();
  try {
    for await (const c of chunks) {
      if (signal?.aborted) throw signal.reason;
      onTar(c.data);
      if (!child.stdin.write(c.data)) await new Promise<void>((r, j) => child.stdin.once('drain', r).once('error', j));
    }
    child.stdin.end();
    await Promise.all([drain, exited]);
  } catch (e) {
    child.kill('SIGKILL');
    await Promise.allSettled([drain, exited]);
    throw e;
  }
}

/** Writes the layer for `entries` into `store` and returns its descriptor and diffID. */
export async function writeLayer(store: Store, entries: LayerEntry[], opts: LayerOptions): Promise<Layer> {
  const tmp = join(opts.tmpDir, `layer-${randomBytes(6).toString('hex')}`);
  try {
    const tarHash = createHash('sha256');
    let tarSize = 0;
    const onTar = (b: Buffer): void => {
      tarHash.update(b);
      tarSize += b.length;
    };
    const chunks = tarChunks(sortEntries(entries), opts.mtime);
    const out = await BlobFile.create(tmp);
    try {
      if (opts.compression === 'zstd') {
        await viaZstd(chunks, onTar, out, opts.signal);
      } else {
        const gz = opts.compression === 'gzip' ? new ParallelGzip(opts.gzipLevel ?? GZIP_LEVEL, (b) => out.write(b)) : undefined;
        for await (const c of chunks) {
          if (opts.signal?.aborted) throw opts.signal.reason;
          onTar(c.data);
          if (gz) await gz.add(c);
          else await out.write(c.data);
        }
        await gz?.end();
      }
    } finally {
      await out.close();
    }
    const descriptor: Descriptor = { mediaType: mediaTypeFor(opts.compression), digest: `sha256:${out.hash.digest('hex')}`, size: out.size };
    const diffId = `sha256:${tarHash.digest('hex')}`;
    const pushed = !(await store.exists(descriptor, opts.signal));
    if (pushed && canIngestFile(store) && opts.tmpDir === (await store.ingestDir())) {
      // Same filesystem: the file we hashed while writing is renamed into place, not copied.
      await store.ingestFile(descriptor, tmp);
    } else if (pushed) {
      // We hashed these bytes as we wrote them, so the store need not hash them again.
      await store.push(descriptor, markVerified(createReadStream(tmp, { highWaterMark: 1 << 20 }), descriptor.digest), opts.signal);
    }
    return { descriptor, diffId, tarSize, pushed };
  } finally {
    await rm(tmp, { force: true });
  }
}
