/**
 * One layer from a list of entries: tar -> (diffID hash) -> compress ->
 * (digest hash) -> a temp file, in one pass; then the blob goes into the
 * store under the descriptor those hashes gave. gzip runs in zlib's thread
 * pool, so hashing and tar reading on the main thread use the second core;
 * zstd uses the `zstd` binary (Node 20 has no zstd), multi-threaded.
 */
import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import type { Store } from '../content/store.js';
import { SealimgError } from '../errors.js';
import { markVerified } from '../oci/digest.js';
import { OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { sortEntries, tarStream, type LayerEntry } from './tar-writer.js';

export type Compression = 'gzip' | 'zstd' | 'none';

/** zlib's default, as docker and umoci use: the size the bench compares against. */
const GZIP_LEVEL = 6;

export const COMPRESSIONS: readonly Compression[] = ['gzip', 'zstd', 'none'];

export interface LayerOptions {
  compression: Compression;
  /** Seconds since the epoch for every entry (SOURCE_DATE_EPOCH or 0). */
  mtime: number;
  /** A directory on the store's filesystem for the temp file. */
  tmpDir: string;
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

/** A pass-through stage that hashes and counts what flows through it. */
class Tap extends Transform {
  readonly hash: Hash = createHash('sha256');
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }
}

export function mediaTypeFor(c: Compression): string {
  return c === 'gzip' ? OCI_LAYER_GZIP : c === 'zstd' ? OCI_LAYER_ZSTD : OCI_LAYER;
}

/** Compresses with the `zstd` program: tar -> tap -> zstd -> tap -> file. */
async function viaZstd(stages: { tar: Readable; tarTap: Tap; blobTap: Tap; out: Writable }, signal?: AbortSignal): Promise<void> {
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
  try {
    await Promise.all([
      pipeline([stages.tar, stages.tarTap, child.stdin], { signal }),
      pipeline([child.stdout, stages.blobTap, stages.out], { signal }),
      exited,
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

/** Writes the layer for `entries` into `store` and returns its descriptor and diffID. */
export async function writeLayer(store: Store, entries: LayerEntry[], opts: LayerOptions): Promise<Layer> {
  const tmp = join(opts.tmpDir, `layer-${randomBytes(6).toString('hex')}`);
  try {
    const tarTap = new Tap();
    const blobTap = new Tap();
    const out = createWriteStream(tmp, { flags: 'wx', highWaterMark: 1 << 20 });
    const tar = tarStream(sortEntries(entries), opts.mtime);
    if (opts.compression === 'gzip') {
      await pipeline([tar, tarTap, createGzip({ level: GZIP_LEVEL, chunkSize: 1 << 16 }), blobTap, out], { signal: opts.signal });
    } else if (opts.compression === 'zstd') {
      await viaZstd({ tar, tarTap, blobTap, out }, opts.signal);
    } else {
      await pipeline([tar, tarTap, blobTap, out], { signal: opts.signal });
    }
    const descriptor: Descriptor = { mediaType: mediaTypeFor(opts.compression), digest: `sha256:${blobTap.hash.digest('hex')}`, size: blobTap.size };
    const diffId = `sha256:${tarTap.hash.digest('hex')}`;
    const pushed = !(await store.exists(descriptor, opts.signal));
    if (pushed) {
      // We hashed these bytes as we wrote them, so the store need not hash them again.
      await store.push(descriptor, markVerified(createReadStream(tmp, { highWaterMark: 1 << 20 }), descriptor.digest), opts.signal);
    }
    return { descriptor, diffId, tarSize: tarTap.size, pushed };
  } finally {
    await rm(tmp, { force: true });
  }
}
