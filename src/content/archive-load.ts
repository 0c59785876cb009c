/**
 * Loading an archive into a store, all or nothing. Every blob goes into the
 * store first, verified against its digest and size as it is read; the images
 * are checked complete; only then are they tagged, all at the end. A load
 * that fails or is interrupted tags nothing, and deletes the blobs it wrote
 * itself (a blob the store already had is never touched), so the store is as
 * it was. A process killed outright leaves at most untagged blobs, which
 * `sealimg prune` removes.
 *
 * An uncompressed file is read as a store (ArchiveReader) and copied with
 * copy(). Anything else (gzip, stdin) is read in one pass: blobs named by
 * digest are pushed straight into the store as they stream by; the few
 * entries that are not (docker-archive layers and configs) are hashed into a
 * spool file once, then pushed.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { createHash, randomBytes } from 'node:crypto';
import { SealimgError } from '../errors.js';
import { OCI_MANIFEST, isManifest } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, childrenOf, parseManifest } from '../oci/validate.js';
import { digestFromBlobName, readCatalog, sniffCompression, type ArchiveAccess, type ArchiveImage, type Compression } from './archive-catalog.js';
import { ArchiveReader, tarEntries } from './archive-reader.js';
import { copyGraph, type CopyEvent } from './copy.js';
import { canDelete, canResumeIngest, fetchAll, type Store } from './store.js';

export interface LoadOptions {
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  concurrency?: number;
  /** A directory for the rare entries that must be hashed before they can be pushed (on the store's disk). */
  spoolDir: string;
}

export interface LoadedImage {
  descriptor: Descriptor;
  /** The names it was tagged with; empty for an image the archive did not name. */
  names: string[];
}

/** Wraps the destination to remember which blobs this load added, for undoing them. */
class Recording implements Store {
  readonly added: Descriptor[] = [];
  constructor(private readonly inner: Store) {}
  resolve(ref: string, signal?: AbortSignal) {
    return this.inner.resolve(ref, signal);
  }
  fetch(desc: Descriptor, signal?: AbortSignal) {
    return this.inner.fetch(desc, signal);
  }
  exists(desc: Descriptor, signal?: AbortSignal) {
    return this.inner.exists(desc, signal);
  }
  private readonly inFlight = new Set<Promise<void>>();
  private readonly started: Descriptor[] = [];
  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    this.started.push(expected);
    const p = this.inner.push(expected, body, signal).then(() => {
      this.added.push(expected);
    });
    this.inFlight.add(p);
    try {
      await p;
    } finally {
      this.inFlight.delete(p);
    }
  }
  async tag(): Promise<void> {
    throw new SealimgError('USAGE', 'a load tags only at the end');
  }
  /** Deletes the blobs this load added that no image in the archive uses (a one-pass load takes every entry). */
  async dropUnreached(reached: Set<string>): Promise<void> {
    if (!canDelete(this.inner)) return;
    const keep: Descriptor[] = [];
    for (const d of this.added.splice(0)) {
      if (reached.has(d.digest)) keep.push(d);
      else await this.inner.delete(d);
    }
    this.added.push(...keep);
  }

  async undo(): Promise<void> {
    // copy() rejects at the first failure while sibling pushes are still being aborted: let them
    // finish (and clean their temp files) first, or one could land after the undo.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    // An archive cannot be read from the middle of a blob: what an interrupted push kept for resuming is useless.
    if (canResumeIngest(this.inner)) for (const d of this.started) await this.inner.abandonIngest(d).catch(() => undefined);
    if (!canDelete(this.inner)) return;
    for (const d of this.added.splice(0)) await this.inner.delete(d).catch(() => undefined);
  }
}

/** Loads `input` (a path, or a stream such as stdin) into `dst`; returns what was tagged. */
export async function loadArchive(input: string | Readable, dst: Store, opts: LoadOptions): Promise<LoadedImage[]> {
  const rec = new Recording(dst);
  try {
    const where = typeof input === 'string' ? input : 'standard input';
    let images: ArchiveImage[];
    if (typeof input === 'string' && (await isPlainFile(input))) images = await loadFromFile(input, rec, opts);
    else images = await loadFromStream(typeof input === 'string' ? createReadStream(input, { highWaterMark: 1 << 20 }) : input, where, rec, opts);
    opts.signal?.throwIfAborted();
    // Everything is in and verified: now, and only now, the names.
    const out: LoadedImage[] = [];
    for (const image of images) {
      for (const name of image.names) await dst.tag(image.descriptor, name, opts.signal);
      out.push({ descriptor: image.descriptor, names: image.names });
    }
    return out;
  } catch (e) {
    await rec.undo();
    // Streams report an abort as node's AbortError; the reason the caller gave says more.
    if (opts.signal?.aborted && opts.signal.reason instanceof SealimgError) throw opts.signal.reason;
    throw e;
  }
}

/** True for an uncompressed file (readable at random); false for gzip, or something that is not a file. */
async function isPlainFile(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new SealimgError('NAME_UNKNOWN', `${path}: cannot open the archive (${(e as Error).message})`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return false;
    const head = Buffer.alloc(4);
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    return sniffCompression(head.subarray(0, bytesRead)) === 'none';
  } finally {
    await fh.close();
  }
}

async function loadFromFile(path: string, dst: Store, opts: LoadOptions): Promise<ArchiveImage[]> {
  const reader = await ArchiveReader.open(path);
  try {
    for (const image of reader.images) {
      await copyGraph(reader, dst, image.descriptor, { signal: opts.signal, onEvent: opts.onEvent, concurrency: opts.concurrency });
    }
    return reader.images;
  } finally {
    await reader.close();
  }
}

/** A file entry that is not named by digest, hashed into the spool. */
interface Spooled {
  path: string;
  digest: string;
  size: number;
  compression: Compression;
}

/** Is this name one whose bytes sealimg keeps in memory (small metadata files)? */
function isMetadata(name: string, size: number): boolean {
  return size <= MAX_MANIFEST_SIZE && (name === 'index.json' || name === 'manifest.json' || name === 'oci-layout' || name === 'repositories' || name.endsWith('.json'));
}

/** Pushes whose bytes are all read but which may still be syncing to disk, at most. */
const MAX_SETTLING = 1;

async function loadFromStream(raw: Readable, where: string, dst: Recording, opts: LoadOptions): Promise<ArchiveImage[]> {
  const signal = opts.signal;
  const emit = opts.onEvent ?? (() => undefined);
  const tar = await maybeGunzip(raw, where);
  const blobs = new Map<string, { digest: string; size: number; compression: Compression }>();
  const small = new Map<string, Buffer>();
  const spooled = new Map<string, Spooled>();
  const pending: Array<Promise<void>> = [];
  try {
    for await (const entry of tarEntries(tar, where)) {
      signal?.throwIfAborted();
      if (entry.type !== 'file') continue;
      const digest = digestFromBlobName(entry.name);
      if (digest) {
        if (blobs.has(entry.name)) throw new SealimgError('ARCHIVE_INVALID', `${where}: entry "${entry.name}" appears twice`);
        const desc = { mediaType: 'application/octet-stream', digest, size: entry.size };
        if (await dst.exists(desc, signal)) {
          emit({ type: 'skip', desc });
        } else {
          emit({ type: 'start', desc });
          const body = Readable.from(entry.body);
          // 'close' comes once the body is read to its end (or given up on).
          const read = new Promise<void>((resolve) => body.once('close', resolve));
          const name = entry.name;
          const pushed = dst.push(desc, body, signal).then(
            () => emit({ type: 'done', desc }),
            (e: unknown) => {
              if (e instanceof SealimgError && (e.code === 'DIGEST_MISMATCH' || e.code === 'SIZE_MISMATCH')) throw new SealimgError(e.code, `${where}: entry "${name}": ${e.message}`, { hint: e.hint, cause: e });
              throw e;
            },
          );
          // Once a blob's bytes are read, its fsync and rename finish while the next one streams in.
          pending.push(pushed);
          pushed.catch(() => undefined);
          await Promise.race([read, pushed]);
          while (pending.length > MAX_SETTLING) await pending.shift();
        }
        blobs.set(entry.name, { digest, size: entry.size, compression: sniffCompression(entry.magic) });
      } else if (isMetadata(entry.name, entry.size)) {
        if (small.has(entry.name)) throw new SealimgError('ARCHIVE_INVALID', `${where}: entry "${entry.name}" appears twice`);
        const chunks: Buffer[] = [];
        for await (const c of entry.body) chunks.push(Buffer.from(c));
        small.set(entry.name, Buffer.concat(chunks));
      } else if (/(^|\/)(layer\.tar|[a-f0-9]{64}(\.tar)?)$/.test(entry.name)) {
        spooled.set(entry.name, { ...(await spool(entry.body, entry.size, opts.spoolDir, signal)), compression: sniffCompression(entry.magic) });
      }
      // Anything else (docker's per-layer VERSION and json files) is not needed.
    }
    for (const p of pending.splice(0)) await p;
    const access: ArchiveAccess = {
      where,
      has: (name) => blobs.has(name) || small.has(name) || spooled.has(name),
      readSmall: async (name) => {
        const kept = small.get(name);
        if (kept) return kept;
        const b = blobs.get(name);
        if (b && b.size <= MAX_MANIFEST_SIZE) return fetchAll(dst, { mediaType: 'application/octet-stream', digest: b.digest, size: b.size }, signal);
        throw new SealimgError('ARCHIVE_INVALID', `${where}: "${name}" is not a small metadata file`);
      },
      layer: async (name) => {
        const b = blobs.get(name) ?? spooled.get(name);
        if (!b) throw new SealimgError('ARCHIVE_INVALID', `${where}: layer "${name}" is not in the archive`);
        return { digest: b.digest, size: b.size, compression: b.compression };
      },
    };
    const catalog = await readCatalog(access);
    // docker-archive: push the configs and layers that were spooled, and the manifests made for them.
    for (const { name, desc } of catalog.paths.values()) {
      if (await dst.exists(desc, signal)) continue;
      const s = spooled.get(name);
      const bytes = small.get(name);
      if (s) await dst.push(desc, createReadStream(s.path, { highWaterMark: 1 << 20 }), signal);
      else if (bytes) await dst.push(desc, Readable.from([bytes]), signal);
    }
    for (const [digest, bytes] of catalog.synthesized) {
      const desc = { mediaType: OCI_MANIFEST, digest, size: bytes.length };
      if (!(await dst.exists(desc, signal))) await dst.push(desc, Readable.from([bytes]), signal);
    }
    const reached = new Set<string>();
    for (const image of catalog.images) await checkComplete(dst, image, where, reached, signal);
    await dst.dropUnreached(reached);
    return catalog.images;
  } finally {
    for (const s of spooled.values()) await rm(s.path, { force: true });
  }
}

/** Decompresses when the stream starts with the gzip magic; otherwise passes it through untouched. */
async function maybeGunzip(raw: Readable, where: string): Promise<AsyncIterable<Buffer>> {
  const it = raw[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let first = await it.next();
  // Make sure two bytes are seen before deciding.
  let head: Buffer = first.done ? Buffer.alloc(0) : Buffer.from(first.value);
  while (!first.done && head.length < 2) {
    first = await it.next();
    if (!first.done) head = Buffer.concat([head, first.value]);
  }
  const rest = (async function* () {
    if (head.length > 0) yield head;
    if (first.done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  })();
  if (sniffCompression(head) !== 'gzip') return rest;
  const gunzip = createGunzip({ chunkSize: 1 << 18 });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  pipeline(Readable.from(rest), gunzip, out).catch((e) => {
    out.destroy(new SealimgError('ARCHIVE_INVALID', `${where}: the gzip stream is damaged or cut short (${(e as Error).message})`, { hint: 'nothing was loaded' }));
  });
  return out;
}

async function spool(body: AsyncIterable<Buffer>, size: number, dir: string, signal?: AbortSignal): Promise<Omit<Spooled, 'compression'>> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `load-${process.pid}-${randomBytes(6).toString('hex')}`);
  const hash = createHash('sha256');
  await pipeline(
    Readable.from(
      (async function* () {
        for await (const c of body) {
          hash.update(c);
          yield c;
        }
      })(),
    ),
    createWriteStream(path, { flags: 'wx' }),
    { signal },
  );
  return { path, digest: `sha256:${hash.digest('hex')}`, size };
}

/** Fails unless every blob and manifest below `image` is now in `dst`, naming what is missing. */
async function checkComplete(dst: Store, image: ArchiveImage, where: string, seen: Set<string>, signal?: AbortSignal): Promise<void> {
  const name = image.names[0] ?? image.rawNames[0] ?? image.descriptor.digest;
  const walk = async (d: Descriptor, field: string): Promise<void> => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    if (!(await dst.exists(d, signal))) {
      throw new SealimgError('ARCHIVE_INVALID', `${where}: image ${name} needs ${d.digest} (${field}, ${d.size} bytes), which the archive does not contain`, {
        hint: 'the archive is incomplete or was cut short; nothing was loaded',
      });
    }
    if (!isManifest(d.mediaType)) return;
    const parsed = parseManifest(await fetchAll(dst, d, signal), d.mediaType, d.digest);
    for (const [i, c] of childrenOf(parsed).entries()) await walk(c, `${field} > ${'manifests' in parsed.manifest ? `manifests[${i}]` : i === 0 ? 'config' : `layers[${i - 1}]`}`);
  };
  await walk(image.descriptor, 'index.json');
}
