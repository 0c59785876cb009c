/**
 * One layer from a list of entries: tar (made and hashed for the diffID on a
 * thread of its own, tar-thread.ts) -> compress -> (digest hash) -> a temp
 * file, in one pass; then the blob goes into the store under the descriptor
 * those hashes gave. A layer whose bytes are nearly all compressed files
 * already is kept as a plain tar, whatever the compression asked for
 * (mostlyCompressed).
 *
 * gzip: the tar is cut into pieces of at most 1 MiB, each compressed on its
 * own as a gzip member (RFC 1952 lets members follow each other; Go's, zlib's
 * and Python's readers all read them as one stream). The pieces are deflated
 * in zlib's thread pool, several at once, so both cores work, and the output is
 * the same bytes whatever the machine (Node bundles its zlib). File bytes that
 * are already compressed (gzip/zstd/xz blobs, archives, images) go into
 * members of their own in stored blocks: not deflated again, which is where
 * most of a cluster image's bytes are.
 * When isa-l's igzip is installed it deflates the long compressible runs
 * instead of zlib (see findIgzip and IgzipGzip).
 * zstd: the `zstd` program (Node 20 has no zstd), multi-threaded.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { constants as fsConstants, createReadStream } from 'node:fs';
import { access, open, rm, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { crc32, gzip as gzipCb, type ZlibOptions } from 'node:zlib';
import { WritebackTimer } from '../content/fsutil.js';
import { canIngestFile, type Store } from '../content/store.js';
import { SealimgError } from '../errors.js';
import { markVerified } from '../oci/digest.js';
import { OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { ThreadTar } from './tar-thread.js';
import { mostlyCompressed, sortEntries, type Claim, type LayerEntry, type TarChunk } from './tar-writer.js';

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

/**
 * The temp file a blob is written to, hashed as it is written. A compressor
 * program writes its part straight into the file (openAppend), not through a
 * pipe back to us, which made the program wait whenever this thread was
 * busy and cost this process 3.5 CPU-s instead of 2.7 for the 694 MB lib
 * tree of bench/build.sh.
 * Its bytes are hashed by reading them back, from the page cache.
 */
class BlobFile {
  /** Undefined when the blob is the tar itself, which the tar thread hashes already. */
  private readonly hash: Hash | undefined;
  size = 0;
  /** Writes not yet done, oldest first: the next chunk is prepared while the kernel copies this one. */
  private readonly writing: Array<Promise<void>> = [];
  private appending: FileHandle | undefined;
  private constructor(
    private readonly path: string,
    private readonly fh: FileHandle,
    private readonly writeback: WritebackTimer,
    hashed: boolean,
  ) {
    this.hash = hashed ? createHash('sha256') : undefined;
  }
  static async create(path: string, hashed: boolean): Promise<BlobFile> {
    // Read and write: what a compressor program appends is read back to be hashed.
    return new BlobFile(path, await open(path, 'wx+'), new WritebackTimer(path), hashed);
  }
  /** sha256 of what was written, when hashed. */
  digest(): string | undefined {
    return this.hash && `sha256:${this.hash.digest('hex')}`;
  }
  async write(b: Buffer, claim?: Claim): Promise<void> {
    this.hash?.update(b);
    const at = this.size;
    this.size += b.length;
    const done = (async () => {
      try {
        for (let off = 0; off < b.length; ) off += (await this.fh.write(b, off, b.length - off, at + off)).bytesWritten;
      } finally {
        claim?.release();
      }
    })();
    done.catch(() => undefined); // awaited below or in close()
    this.writing.push(done);
    this.writeback.wrote(b.length);
    while (this.writing.length > 2) await this.writing.shift();
  }
  /**
   * A descriptor for a program to append the next bytes through (its own,
   * O_APPEND), once our writes are done. Call appended() after it exited.
   */
  async openAppend(): Promise<number> {
    while (this.writing.length > 0) await this.writing.shift();
    this.appending = await open(this.path, 'a');
    return this.appending.fd;
  }
  /**
   * Bytes given to the appending program: the disk starts writing back what it
   * wrote so far every so often, as for our own writes, instead of all of it
   * at the end.
   */
  fed(n: number): void {
    this.writeback.wrote(n);
  }
  /** Closes the program's descriptor and hashes what it wrote (not when it failed: the file is thrown away). */
  async appended(ok = true): Promise<void> {
    await this.appending?.close();
    this.appending = undefined;
    if (ok) await this.hashBack((await this.fh.stat()).size);
  }
  private async hashBack(end: number): Promise<void> {
    const PIECE = 1 << 20;
    const read = (at: number): Promise<Buffer> => {
      const buf = Buffer.allocUnsafe(Math.min(PIECE, end - at));
      return this.fh.read(buf, 0, buf.length, at).then(({ bytesRead }) => buf.subarray(0, bytesRead));
    };
    let next = this.size < end ? read(this.size) : undefined;
    while (next) {
      const b = await next;
      if (b.length === 0) throw new SealimgError('BUILD_FAILED', `${this.path} shrank while it was being written`);
      this.size += b.length;
      next = this.size < end ? read(this.size) : undefined;
      this.hash?.update(b);
    }
  }
  async close(): Promise<void> {
    try {
      while (this.writing.length > 0) await this.writing.shift();
    } finally {
      await Promise.allSettled(this.writing);
      await this.appending?.close();
      await this.writeback.finish();
      await this.fh.close();
    }
  }
}

/** Largest stored deflate block (RFC 1951 3.2.4: LEN is 16 bits). */
const STORED_BLOCK = 0xffff;

/**
 * One gzip member holding `data` in stored deflate blocks: what zlib's level 0
 * gives, without copying the bytes through zlib. The CRC is the only work.
 */
export function storedMember(data: Buffer): Buffer {
  const blocks = Math.max(1, Math.ceil(data.length / STORED_BLOCK));
  const out = Buffer.allocUnsafe(10 + blocks * 5 + data.length + 8);
  // RFC 1952: magic, CM=deflate, no flags, MTIME 0, XFL 0, OS unix (zlib's choice too).
  out.set([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3], 0);
  let at = 10;
  for (let i = 0; i < blocks; i++) {
    const start = i * STORED_BLOCK;
    const len = Math.min(STORED_BLOCK, data.length - start);
    out[at] = i === blocks - 1 ? 1 : 0; // BFINAL, BTYPE 00 (stored); the block starts byte-aligned
    out.writeUInt16LE(len, at + 1);
    out.writeUInt16LE(~len & 0xffff, at + 3);
    data.copy(out, at + 5, start, start + len);
    at += 5 + len;
  }
  out.writeUInt32LE(crc32(data), at);
  out.writeUInt32LE(data.length % 2 ** 32, at + 4);
  return out;
}

/** Gzip members compressed in parallel, written in order. */
class ParallelGzip {
  private pending: TarChunk[] = [];
  private pendingSize = 0;
  private pendingStored = false;
  private readonly inFlight: Array<Promise<Buffer>> = [];
  // libuv's thread pool runs 4 deflates at once by default: more members in flight would only hold memory.
  private readonly parallel = Math.min(availableParallelism(), 4) + 1;

  constructor(
    private readonly level: number,
    private readonly sink: (b: Buffer) => Promise<void>,
  ) {}

  /** Members are cut every MEMBER_SIZE bytes of a run, wherever chunks begin and end: the bytes depend on the tar alone. */
  async add(c: TarChunk): Promise<void> {
    if (this.pendingSize > 0 && c.stored !== this.pendingStored) await this.cut();
    this.pendingStored = c.stored;
    let data = c.data;
    while (this.pendingSize + data.length >= MEMBER_SIZE) {
      const take = MEMBER_SIZE - this.pendingSize;
      const rest = data.length - take;
      this.pending.push({ data: data.subarray(0, take), stored: c.stored, claim: rest > 0 ? c.claim.also() : c.claim });
      this.pendingSize += take;
      await this.cut();
      data = data.subarray(take);
    }
    if (data.length === 0) return;
    this.pending.push({ data, stored: c.stored, claim: c.claim });
    this.pendingSize += data.length;
  }

  private async cut(): Promise<void> {
    if (this.pendingSize === 0) return;
    const pieces = this.pending;
    const one = pieces.length === 1 ? pieces[0]! : undefined;
    const data = one ? one.data : Buffer.concat(pieces.map((p) => p.data), this.pendingSize);
    // memLevel 9 (zlib's largest hash) deflates level 1 about 10% faster here, same output size.
    const member = this.pendingStored ? Promise.resolve(storedMember(data)) : gzip(data, { level: this.level, memLevel: 9 });
    // storedMember and concat have copied the bytes; a lone piece is read by zlib until it is done.
    if (this.pendingStored || !one) for (const p of pieces) p.claim.release();
    else void member.finally(() => one.claim.release()).catch(() => undefined);
    this.inFlight.push(member);
    this.pending = [];
    this.pendingSize = 0;
    while (this.inFlight.length >= this.parallel) await this.sink(await this.inFlight.shift()!);
  }

  async end(): Promise<void> {
    await this.cut();
    while (this.inFlight.length > 0) await this.sink(await this.inFlight.shift()!);
  }

  async kill(): Promise<void> {
    await Promise.allSettled(this.inFlight.splice(0));
  }
}

/** Bytes written to a compressor program that it has not read yet, at most. */
const RUN_AHEAD = 8 << 20;

/**
 * A compressor program fed with back-pressure, its output appended to the blob
 * file. end() resolves once the program exited 0 and its bytes are hashed.
 */
class ChildCompressor {
  private constructor(
    private readonly child: ChildProcessByStdio<Writable, null, Readable>,
    private readonly exited: Promise<void>,
    private readonly out: BlobFile,
  ) {}

  static async start(program: string, args: string[], out: BlobFile, missing: SealimgError): Promise<ChildCompressor> {
    const fd = await out.openAppend();
    const child = spawn(program, args, { stdio: ['pipe', fd, 'pipe'] }) as ChildProcessByStdio<Writable, null, Readable>;
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // A write after the program died fails with EPIPE; `exited` says why.
    child.stdin.on('error', () => undefined);
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', (e) => reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? missing : e));
      child.on('close', (code) => (code === 0 ? resolve() : reject(new SealimgError('BUILD_FAILED', `${program} exited ${code}: ${stderr.trim()}`))));
    });
    exited.catch(() => undefined); // observed by end() or kill()
    return new ChildCompressor(child, exited, out);
  }

  async write(b: Buffer, claim: Claim): Promise<void> {
    this.child.stdin.write(b, () => claim.release());
    this.out.fed(b.length);
    // Run ahead of the program by a few MiB: waiting for each write to drain (stdin's
    // highWaterMark is 16 KiB) would make the two take turns instead of working at once.
    if (this.child.stdin.writableLength <= RUN_AHEAD) return;
    await Promise.race([new Promise((r) => this.child.stdin.once('drain', r)), this.exited]);
  }

  async end(): Promise<void> {
    this.child.stdin.end();
    try {
      await this.exited;
    } catch (e) {
      await this.out.appended(false);
      throw e;
    }
    await this.out.appended();
  }

  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited.catch(() => undefined);
    await this.out.appended(false);
  }
}

/** zstd layers: the `zstd` program, on every core. */
class ZstdStream {
  private constructor(private readonly child: ChildCompressor) {}
  static async start(out: BlobFile): Promise<ZstdStream> {
    const missing = new SealimgError('UNSUPPORTED', '--compression zstd needs the zstd program on the PATH (Node 20 has no zstd)', {
      hint: 'install zstd (Debian: apt-get install zstd), or use --compression gzip',
    });
    return new ZstdStream(await ChildCompressor.start('zstd', ['-q', '-3', '-T0', '-c'], out, missing));
  }
  add(c: TarChunk): Promise<void> {
    return this.child.write(c.data, c.claim);
  }
  end(): Promise<void> {
    return this.child.end();
  }
  kill(): Promise<void> {
    return this.child.kill();
  }
}

/**
 * isa-l's igzip deflates about 3.5x as fast as zlib at level 1 on one core,
 * 2.5% larger (1.26 s against 4.4 s for the 695 MB lib tar of bench/build.sh),
 * so gzip layers use it when it is on the PATH. Its
 * bytes differ from zlib's: a layer's digest is the same on every machine
 * that has igzip, and on every machine that has not. SEALIMG_GZIP=zlib picks
 * zlib whatever is installed (digests that match a machine without igzip).
 */
let igzipPath: Promise<string | undefined> | undefined;
export function findIgzip(): Promise<string | undefined> {
  igzipPath ??= (async () => {
    if (process.env.SEALIMG_GZIP === 'zlib') return undefined;
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (!dir) continue;
      const p = join(dir, 'igzip');
      if (await access(p, fsConstants.X_OK).then(() => true, () => false)) return p;
    }
    return undefined;
  })();
  return igzipPath;
}

/**
 * gzip through igzip. Long runs of compressible bytes stream through one
 * igzip process (a gzip member each); everything else goes to in-process
 * zlib members as on machines without igzip: already compressed bytes in
 * stored blocks, short compressible runs (the tar headers between big blobs)
 * at GZIP_LEVEL, where starting a process would cost more than it saves. A
 * run switches sides once it reaches MEMBER_SIZE; until then it is held, and
 * goes to the side already working.
 */
class IgzipGzip {
  private child: ChildCompressor | undefined;
  private readonly zlib: ParallelGzip;
  /** Bytes of the other kind than the working side's, held until they prove a long run. */
  private held: TarChunk[] = [];
  private heldSize = 0;

  constructor(
    private readonly program: string,
    private readonly out: BlobFile,
  ) {
    this.zlib = new ParallelGzip(GZIP_LEVEL, (b) => out.write(b));
  }

  async add(c: TarChunk): Promise<void> {
    // The child takes compressible bytes, zlib stored ones: a chunk of the working side's kind goes straight on.
    if (c.stored === (this.child === undefined)) {
      await this.flushHeld();
      return this.put(c);
    }
    this.held.push(c);
    this.heldSize += c.data.length;
    if (this.heldSize < MEMBER_SIZE) return;
    // A long run: the other side takes over, after the working side has written everything it has.
    if (this.child) {
      await this.child.end();
      this.child = undefined;
    } else {
      await this.zlib.end();
      this.child = await ChildCompressor.start(this.program, ['-1', '-c', '-n'], this.out, new SealimgError('UNSUPPORTED', `${this.program} is gone`));
    }
    await this.flushHeld();
  }

  async end(): Promise<void> {
    await this.flushHeld();
    await this.zlib.end();
    await this.child?.end();
  }

  async kill(): Promise<void> {
    await this.zlib.kill();
    await this.child?.kill();
  }

  private async put(c: TarChunk): Promise<void> {
    if (this.child) await this.child.write(c.data, c.claim);
    else await this.zlib.add(c);
  }

  private async flushHeld(): Promise<void> {
    const held = this.held;
    this.held = [];
    this.heldSize = 0;
    for (const h of held) await this.put(h);
  }
}

/** Writes the layer for `entries` into `store` and returns its descriptor and diffID. */
export async function writeLayer(store: Store, entries: LayerEntry[], opts: LayerOptions): Promise<Layer> {
  const tmp = join(opts.tmpDir, `layer-${randomBytes(6).toString('hex')}`);
  try {
    const sorted = sortEntries(entries);
    const compression = opts.compression !== 'none' && mostlyCompressed(sorted) ? 'none' : opts.compression;
    const tar = new ThreadTar(sorted, opts.mtime);
    const out = await BlobFile.create(tmp, compression !== 'none');
    try {
      const igzip = compression === 'gzip' && opts.gzipLevel === undefined ? await findIgzip() : undefined;
      const compressor =
        compression === 'zstd' ? await ZstdStream.start(out)
        : igzip ? new IgzipGzip(igzip, out)
        : compression === 'gzip' ? new ParallelGzip(opts.gzipLevel ?? GZIP_LEVEL, (b) => out.write(b))
        : undefined;
      try {
        for await (const c of tar.chunks()) {
          if (opts.signal?.aborted) throw opts.signal.reason;
          if (compressor) await compressor.add(c);
          else await out.write(c.data, c.claim);
        }
        await compressor?.end();
      } catch (e) {
        await compressor?.kill();
        throw e;
      }
    } finally {
      await out.close();
    }
    const diffId = tar.diffId;
    const tarSize = tar.size;
    // A plain tar layer's digest is its diffID: the bytes written must be exactly the tar's.
    if (compression === 'none' && out.size !== tarSize) throw new SealimgError('BUILD_FAILED', `layer file ${tmp}: ${out.size} bytes written, the tar has ${tarSize}`);
    const descriptor: Descriptor = { mediaType: mediaTypeFor(compression), digest: out.digest() ?? diffId, size: out.size };
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
