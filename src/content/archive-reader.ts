/**
 * Reading image archives. Two ways, one format module:
 *
 * - ArchiveReader: a read-only store over an uncompressed tar file. One pass
 *   over the headers (seeking past the data) indexes every entry's offset;
 *   fetch then streams a byte range through a VerifyStream. This is what
 *   `oci-archive:FILE` and `docker-archive:FILE` open as a source.
 * - tarEntries(): a one-pass parser over any byte stream (stdin, a gunzip
 *   stage) for a load that cannot seek: each entry's body is handed over as
 *   it arrives, with back-pressure, and nothing is buffered beyond a chunk.
 *
 * Both refuse absolute paths, `..`, links and devices (see tar.ts) before
 * anything else looks at an entry.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { SealimgError } from '../errors.js';
import { VerifyStream, digestStream, isDigest, markVerified } from '../oci/digest.js';
import { isManifest } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, parseManifest } from '../oci/validate.js';
import { digestFromBlobName, findInCatalog, readCatalog, sniffCompression, type ArchiveAccess, type ArchiveImage, type Catalog, type Compression } from './archive-catalog.js';
import type { Closer, ReadOnlyStore } from './store.js';
import { BLOCK, HeaderState, decodeHeader, isZeroBlock, type Entry } from './tar.js';

interface Located {
  offset: number;
  size: number;
}

function invalid(where: string, what: string): SealimgError {
  return new SealimgError('ARCHIVE_INVALID', `${where}: ${what}`, { hint: 'the archive is damaged or was cut short; nothing was loaded' });
}

/** Reads exactly `length` bytes at `position`, or fails naming what was cut short. */
async function readAt(fh: FileHandle, position: number, length: number, where: string, what: string): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw invalid(where, `truncated: ${what} ends after ${got} of ${length} bytes`);
    got += bytesRead;
  }
  return buf;
}

/** Indexes every file entry of a tar: name -> data offset and size, reading headers only. */
async function indexTar(fh: FileHandle, fileSize: number, where: string): Promise<Map<string, Located>> {
  const entries = new Map<string, Located>();
  const state = new HeaderState(where);
  let pos = 0;
  for (;;) {
    if (pos + BLOCK > fileSize) {
      // A tar ends with zero blocks; running out of file at a header means it was cut short.
      if (pos === fileSize && entries.size > 0) break;
      throw invalid(where, `truncated: the archive ends at byte ${fileSize}, inside a header`);
    }
    const block = await readAt(fh, pos, BLOCK, where, 'a header');
    if (isZeroBlock(block)) break;
    const h = decodeHeader(block, `${where} at byte ${pos}`);
    const dataAt = pos + BLOCK;
    if (dataAt + h.size > fileSize) throw invalid(where, `truncated: entry "${h.name}" needs ${h.size} bytes, the file ends ${fileSize - dataAt} bytes in`);
    if (HeaderState.isMeta(h.flag)) {
      if (h.size > 1 << 20) throw invalid(where, `a ${h.size}-byte extended header at byte ${pos}`);
      state.meta(h, await readAt(fh, dataAt, h.size, where, 'an extended header'), pos);
      pos = dataAt + Math.ceil(h.size / BLOCK) * BLOCK;
      continue;
    }
    const e = state.entry(h);
    if (dataAt + e.size > fileSize) throw invalid(where, `truncated: entry "${e.name}" needs ${e.size} bytes, the file ends ${fileSize - dataAt} bytes in`);
    if (e.type === 'file') {
      if (entries.has(e.name)) throw invalid(where, `entry "${e.name}" appears twice`);
      entries.set(e.name, { offset: dataAt, size: e.size });
    }
    pos = dataAt + Math.ceil(e.size / BLOCK) * BLOCK;
  }
  return entries;
}

/** A read-only store over an uncompressed image archive on disk. */
export class ArchiveReader implements ReadOnlyStore, Closer {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly entries: Map<string, Located>,
    private catalog: Catalog,
  ) {}

  /** Opens and indexes `path`; a gzipped file is refused with a hint (it cannot be read at random). */
  static async open(path: string): Promise<ArchiveReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new SealimgError('NAME_UNKNOWN', `${path}: cannot open the archive (${(e as Error).message})`);
    }
    try {
      const { size } = await fh.stat();
      const head = size >= 4 ? await readAt(fh, 0, 4, path, 'the file') : Buffer.alloc(0);
      if (sniffCompression(head) !== 'none') {
        throw new SealimgError('UNSUPPORTED', `${path} is compressed; it cannot be read as a store`, {
          hint: `'sealimg load -i ${path}' reads it in one pass; or decompress it first`,
        });
      }
      const entries = await indexTar(fh, size, path);
      const reader = new ArchiveReader(path, fh, entries, { kind: 'oci', images: [], synthesized: new Map(), paths: new Map() });
      reader.catalog = await readCatalog(reader.access());
      return reader;
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  get images(): ArchiveImage[] {
    return this.catalog.images;
  }

  private access(): ArchiveAccess {
    return {
      where: this.path,
      has: (name) => this.entries.has(name),
      readSmall: async (name) => {
        const e = this.entries.get(name)!;
        if (e.size > MAX_MANIFEST_SIZE) throw invalid(this.path, `"${name}" is ${e.size} bytes, too large for a metadata file`);
        return readAt(this.fh, e.offset, e.size, this.path, `"${name}"`);
      },
      layer: async (name, diffId) => {
        const e = this.entries.get(name)!;
        const compression: Compression = e.size >= 4 ? sniffCompression(await readAt(this.fh, e.offset, 4, this.path, `"${name}"`)) : 'none';
        const named = digestFromBlobName(name);
        if (named) return { digest: named, size: e.size, compression };
        // An uncompressed layer is its own diff ID (checked when fetched); any other must be hashed.
        if (compression === 'none' && isDigest(diffId)) return { digest: diffId, size: e.size, compression };
        const { digest } = await digestStream(this.range(e));
        return { digest, size: e.size, compression };
      },
    };
  }

  private range(e: Located): Readable {
    return e.size === 0 ? Readable.from([]) : createReadStream(this.path, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1 << 20 });
  }

  private locate(desc: Descriptor): { bytes?: Buffer; entry?: Located } | undefined {
    const bytes = this.catalog.synthesized.get(desc.digest);
    if (bytes) return { bytes };
    const other = this.catalog.paths.get(desc.digest);
    if (other) return { entry: this.entries.get(other.name) };
    const m = /^(sha256|sha512):(.*)$/.exec(desc.digest);
    const entry = m ? this.entries.get(`blobs/${m[1]}/${m[2]}`) : undefined;
    return entry ? { entry } : undefined;
  }

  async resolve(ref: string): Promise<Descriptor> {
    const image = findInCatalog(this.catalog, ref, this.path);
    if (image) return image.descriptor;
    if (isDigest(ref)) {
      // A manifest that is in the archive but not listed (a child of an index).
      const found = this.locate({ mediaType: '', digest: ref, size: 0 });
      if (found?.entry && found.entry.size <= MAX_MANIFEST_SIZE) {
        const bytes = await readAt(this.fh, found.entry.offset, found.entry.size, this.path, ref);
        try {
          return { mediaType: parseManifest(bytes, undefined, ref).mediaType, digest: ref, size: bytes.length };
        } catch {
          // a blob, not a manifest
        }
      }
    }
    throw new SealimgError('MANIFEST_UNKNOWN', `${ref}: no such image in ${this.path}`, {
      hint: `it holds: ${this.catalog.images.map((i) => i.rawNames[0] ?? i.descriptor.digest).join(', ') || 'nothing'}`,
    });
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const found = this.locate(desc);
    return found !== undefined && (found.bytes?.length ?? found.entry?.size) === desc.size;
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    const found = this.locate(desc);
    if (!found || (!found.bytes && !found.entry)) {
      throw new SealimgError(isManifest(desc.mediaType) ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${desc.digest}: not in ${this.path}`);
    }
    if (found.entry && found.entry.size !== desc.size) {
      throw new SealimgError('SIZE_MISMATCH', `${this.path}: ${desc.digest} is ${found.entry.size} bytes in the archive, ${desc.size} expected`);
    }
    const body = found.bytes ? Readable.from([found.bytes]) : this.range(found.entry!);
    const verify = new VerifyStream(desc, `${this.path}:`);
    body.on('error', (e) => verify.destroy(e));
    verify.on('close', () => body.destroy());
    return markVerified(body.pipe(verify), desc.digest);
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

/** Pulls exact byte counts out of a chunk stream, for the one-pass parser. */
class ByteReader {
  private head: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  /** Bytes consumed so far. */
  position = 0;

  constructor(source: AsyncIterable<Buffer>, private readonly where: string) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async more(): Promise<boolean> {
    const r = await this.it.next();
    if (r.done) return false;
    this.head = this.head.length === 0 ? r.value : Buffer.concat([this.head, r.value]);
    return true;
  }

  /** Exactly `n` bytes; null at a clean end of input; throws when the input stops inside them. */
  async exact(n: number, what: string): Promise<Buffer | null> {
    while (this.head.length < n) {
      if (!(await this.more())) {
        if (this.head.length === 0) return null;
        throw invalid(this.where, `truncated: ${what} ends after ${this.head.length} of ${n} bytes`);
      }
    }
    const out = this.head.subarray(0, n);
    this.head = this.head.subarray(n);
    this.position += n;
    return out;
  }

  /** Up to `n` next bytes, without consuming them (fewer at the end of input). */
  async peek(n: number): Promise<Buffer> {
    while (this.head.length < n && (await this.more())) {
      // reading on
    }
    return Buffer.from(this.head.subarray(0, n));
  }

  /** Bytes of the current entry's body not yet read. */
  private bodyLeft = 0;

  /** The current entry's bytes as they arrive; a caller may stop early, drain() skips the rest. */
  body(n: number, what: string): AsyncGenerator<Buffer> {
    // Set now, not when the generator first runs: a caller may never read it.
    this.bodyLeft = n;
    return this.bodyChunks(n, what);
  }

  private async *bodyChunks(n: number, what: string): AsyncGenerator<Buffer> {
    while (this.bodyLeft > 0) {
      if (this.head.length === 0 && !(await this.more())) throw invalid(this.where, `truncated: ${what} ends ${n - this.bodyLeft} bytes into its ${n}`);
      const chunk = this.head.length <= this.bodyLeft ? this.head : this.head.subarray(0, this.bodyLeft);
      this.head = this.head.subarray(chunk.length);
      this.bodyLeft -= chunk.length;
      this.position += chunk.length;
      yield chunk;
    }
  }

  /** Skips what is left of the current body, then `extra` more bytes (padding). */
  async drain(extraOf: (size: number) => number, size: number, what: string): Promise<void> {
    let left = this.bodyLeft + extraOf(size);
    this.bodyLeft = 0;
    while (left > 0) {
      if (this.head.length === 0 && !(await this.more())) throw invalid(this.where, `truncated: the archive ends inside ${what}`);
      const k = Math.min(left, this.head.length);
      this.head = this.head.subarray(k);
      left -= k;
      this.position += k;
    }
  }
}

export interface StreamEntry extends Entry {
  /** The first bytes of the body (up to 4), to tell compression without reading it. */
  magic: Buffer;
  /** The entry's bytes; read it fully, or leave it and the parser skips it. */
  body: AsyncGenerator<Buffer>;
}

/**
 * The entries of a tar stream, one at a time. The caller must finish with an
 * entry's body (or ignore it) before asking for the next one; that is what
 * keeps memory flat.
 */
export async function* tarEntries(source: AsyncIterable<Buffer>, where: string): AsyncGenerator<StreamEntry> {
  const r = new ByteReader(source, where);
  const state = new HeaderState(where);
  let sawEnd = false;
  let count = 0;
  for (;;) {
    const at = r.position;
    const block = await r.exact(BLOCK, 'a header');
    if (block === null) break;
    if (isZeroBlock(block)) {
      sawEnd = true;
      break;
    }
    const h = decodeHeader(block, `${where} at byte ${at}`);
    const pad = (n: number) => (BLOCK - (n % BLOCK)) % BLOCK;
    if (HeaderState.isMeta(h.flag)) {
      if (h.size > 1 << 20) throw invalid(where, `a ${h.size}-byte extended header at byte ${at}`);
      const data = (await r.exact(h.size, 'an extended header')) ?? Buffer.alloc(0);
      if (data.length < h.size) throw invalid(where, 'truncated: the archive ends inside an extended header');
      state.meta(h, Buffer.from(data), at);
      await r.drain(pad, h.size, 'an extended header');
      continue;
    }
    const e = state.entry(h);
    const magic = await r.peek(Math.min(4, e.size));
    const body = r.body(e.size, `entry "${e.name}"`);
    count++;
    yield { ...e, magic, body };
    // Whatever the caller did not read is skipped here, with the padding.
    await r.drain(pad, e.size, `entry "${e.name}"`);
  }
  if (!sawEnd && count === 0) throw invalid(where, 'is empty: no tar entries');
  // Some writers stop after the last entry's padding without the zero blocks; that is still a whole archive.
}
