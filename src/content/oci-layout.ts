/**
 * A store over an OCI image-layout directory (image-spec v1.1.0 image-layout.md):
 * `oci-layout`, `index.json`, `blobs/<alg>/<hex>`. The local store is one of
 * these; so is any `oci:DIR` that skopeo or umoci made. Tags are
 * `org.opencontainers.image.ref.name` annotations on index.json entries.
 *
 * Writes: blobs go to `.ingest/`, are verified, fsynced and renamed into place;
 * index.json is replaced atomically under a lock file so concurrent sealimg
 * processes never lose a tag. Garbage collection spares blobs written while
 * another process holds a write lease, so it never races a pull in flight.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { SealimgError, errnoCode, isSealimgError } from '../errors.js';
import { VerifyStream, isDigest, isVerified, markVerified, parseDigest } from '../oci/digest.js';
import { isManifest } from '../oci/mediatypes.js';
import { REF_NAME_ANNOTATION, type Descriptor, type ImageIndex } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, childrenOf, parseManifest, validateDescriptor } from '../oci/validate.js';
import { fsyncDir, pathExists, pipeToFile, processAlive, withLock, writeFileAtomic } from './fsutil.js';
import type { Closer, Deleter, FileIngester, ResumableIngest, Store, TagLister, TaggedDescriptor, Untagger } from './store.js';

const LAYOUT_FILE = 'oci-layout';
const LAYOUT_VERSION = '1.0.0';
const INGEST = '.ingest';
const LEASES = '.leases';

export interface GcResult {
  removed: Descriptor[];
  bytes: number;
}

export class OciLayoutStore implements Store, TagLister, Untagger, Deleter, Closer, ResumableIngest, FileIngester {
  private lease?: Promise<string>;

  private constructor(readonly root: string) {}

  /**
   * Opens the layout at `root`. With `create`, a missing or empty directory
   * becomes a new layout; a non-empty directory that is not a layout is refused.
   */
  static async open(root: string, opts: { create?: boolean } = {}): Promise<OciLayoutStore> {
    const store = new OciLayoutStore(root);
    const layoutPath = join(root, LAYOUT_FILE);
    let text: string | undefined;
    try {
      text = await readFile(layoutPath, 'utf8');
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT' && errnoCode(e) !== 'ENOTDIR') throw e;
    }
    if (text === undefined) {
      if (!opts.create) {
        throw new SealimgError('NAME_UNKNOWN', `${root} is not an OCI image layout (no ${LAYOUT_FILE} file)`, {
          hint: 'check the path; a layout holds oci-layout, index.json and blobs/',
        });
      }
      const entries = await readdir(root).catch((e) => (errnoCode(e) === 'ENOENT' ? [] : Promise.reject(e)));
      if (entries.some((n) => !n.startsWith('.'))) {
        throw new SealimgError('STORE_CORRUPT', `${root} exists, is not empty and is not an OCI image layout`, {
          hint: 'pick an empty or new directory',
        });
      }
      await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
      if (!(await pathExists(join(root, 'index.json')))) {
        await writeFileAtomic(join(root, 'index.json'), `${JSON.stringify({ schemaVersion: 2, manifests: [] })}\n`);
      }
      await writeFileAtomic(layoutPath, `${JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })}\n`);
      return store;
    }
    let layout: unknown;
    try {
      layout = JSON.parse(text);
    } catch {
      throw new SealimgError('STORE_CORRUPT', `${layoutPath}: not valid JSON`);
    }
    if (typeof layout !== 'object' || layout === null || (layout as { imageLayoutVersion?: unknown }).imageLayoutVersion !== LAYOUT_VERSION) {
      throw new SealimgError('STORE_CORRUPT', `${layoutPath}: imageLayoutVersion must be "${LAYOUT_VERSION}"`);
    }
    return store;
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  private get indexPath(): string {
    return join(this.root, 'index.json');
  }

  /** Reads and checks index.json; a damaged one is reported, never rewritten. */
  async readIndex(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await readFile(this.indexPath, 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { schemaVersion: 2, manifests: [] };
      throw e;
    }
    const where = this.indexPath;
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new SealimgError('STORE_CORRUPT', `${where}: not valid JSON (${(e as Error).message})`, {
        hint: 'the store index is damaged; restore it from a backup or remove the store',
      });
    }
    if (typeof doc !== 'object' || doc === null || doc.schemaVersion !== 2 || !Array.isArray(doc.manifests)) {
      throw new SealimgError('STORE_CORRUPT', `${where}: must be an image index with schemaVersion 2 and a manifests array`);
    }
    try {
      doc.manifests.forEach((m, i) => validateDescriptor(m, where, `manifests[${i}]`));
    } catch (e) {
      throw new SealimgError('STORE_CORRUPT', (e as Error).message);
    }
    return doc as unknown as ImageIndex;
  }

  private async updateIndex(change: (index: ImageIndex) => boolean): Promise<boolean> {
    return withLock(`${this.indexPath}.lock`, async () => {
      const index = await this.readIndex();
      if (!change(index)) return false;
      await writeFileAtomic(this.indexPath, `${JSON.stringify(index)}\n`);
      return true;
    });
  }

  async list(): Promise<TaggedDescriptor[]> {
    const index = await this.readIndex();
    const out: TaggedDescriptor[] = [];
    for (const d of index.manifests) {
      const ref = d.annotations?.[REF_NAME_ANNOTATION];
      if (ref !== undefined) out.push({ ref, descriptor: stripRefName(d) });
    }
    return out;
  }

  async resolve(ref: string): Promise<Descriptor> {
    const index = await this.readIndex();
    if (isDigest(ref)) {
      const listed = index.manifests.find((d) => d.digest === ref);
      if (listed) return stripRefName(listed);
      return this.describeManifestBlob(ref);
    }
    if (ref === '') {
      if (index.manifests.length === 1) return stripRefName(index.manifests[0]!);
      throw new SealimgError('MANIFEST_UNKNOWN', `${this.root} holds ${index.manifests.length} images; name one`, {
        hint: 'add :TAG to the location (oci:DIR:TAG)',
      });
    }
    const found = index.manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] === ref);
    if (found.length === 0) {
      throw new SealimgError('MANIFEST_UNKNOWN', `${ref}: no such image in ${this.root}`, {
        hint: "'sealimg images' lists what the store holds",
      });
    }
    return stripRefName(found[found.length - 1]!);
  }

  /** A manifest that is in blobs/ but not in index.json (a child of an index): read its type from it. */
  private async describeManifestBlob(digest: string): Promise<Descriptor> {
    let size: number;
    try {
      size = (await stat(this.blobPath(digest))).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new SealimgError('MANIFEST_UNKNOWN', `${digest}: no such manifest in ${this.root}`);
      throw e;
    }
    if (size > MAX_MANIFEST_SIZE) throw new SealimgError('MANIFEST_UNKNOWN', `${digest} in ${this.root} is a blob, not a manifest`);
    const bytes = await readFile(this.blobPath(digest));
    const desc = { mediaType: 'application/octet-stream', digest, size };
    try {
      return { ...desc, mediaType: parseManifest(bytes, undefined, digest).mediaType };
    } catch {
      throw new SealimgError('MANIFEST_UNKNOWN', `${digest} in ${this.root} is a blob, not a manifest`);
    }
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    const path = this.blobPath(desc.digest);
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') {
        throw new SealimgError(isManifest(desc.mediaType) ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${desc.digest}: not in ${this.root}`);
      }
      throw e;
    }
    const verify = new VerifyStream(desc, path);
    const file = fh.createReadStream({ highWaterMark: 1 << 20 });
    file.on('error', (e) => verify.destroy(e));
    verify.on('close', () => file.destroy());
    return markVerified(file.pipe(verify), desc.digest);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    try {
      const s = await stat(this.blobPath(desc.digest));
      if (s.size !== desc.size) return false;
      // A writer that finds a blob it will reference keeps it young, so a concurrent gc spares it.
      if (this.lease) await utimes(this.blobPath(desc.digest), new Date(), new Date()).catch(() => undefined);
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw e;
    }
  }

  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    await this.ingestBlob(expected, body, 0, signal);
  }

  async pushFrom(expected: Descriptor, offset: number, rest: Readable, signal?: AbortSignal): Promise<void> {
    await this.ingestBlob(expected, rest, offset, signal);
  }

  /** Where a download of `digest` is written until it is whole: kept if it breaks, for the next run. */
  private partialPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, INGEST, `${algorithm}-${hex}.partial`);
  }

  async abandonIngest(desc: Descriptor): Promise<void> {
    const partial = this.partialPath(desc.digest);
    const holder = Number.parseInt(await readFile(`${partial}.lock`, 'utf8').catch(() => ''), 10);
    if (!processAlive(holder)) await rm(partial, { force: true });
  }

  async ingestOffset(desc: Descriptor): Promise<number> {
    const partial = this.partialPath(desc.digest);
    const holder = Number.parseInt(await readFile(`${partial}.lock`, 'utf8').catch(() => ''), 10);
    if (processAlive(holder)) return 0; // another process is writing it right now
    const size = await stat(partial).then((s) => s.size, () => 0);
    return size > 0 && size < desc.size ? size : 0;
  }

  /**
   * Writes a blob: to its partial file when this process can own it (so an
   * interrupted download can resume), else to a private temp file; verifies,
   * fsyncs and renames it into place. With `offset`, the partial file's first
   * `offset` bytes are hashed first and `body` is the rest.
   */
  private async ingestBlob(expected: Descriptor, body: Readable, offset: number, signal?: AbortSignal): Promise<void> {
    await this.takeLease();
    const final = this.blobPath(expected.digest);
    const ingest = join(this.root, INGEST);
    await mkdir(ingest, { recursive: true });
    const partial = this.partialPath(expected.digest);
    const owned = await takeFileLock(`${partial}.lock`);
    const tmp = owned ? partial : join(ingest, `${parseDigest(expected.digest).hex}.${process.pid}.${randomBytes(4).toString('hex')}`);
    try {
      if (offset > 0) {
        const have = await stat(tmp).then((s) => s.size, () => -1);
        if (!owned || have !== offset) {
          body.destroy();
          if (owned) await rm(tmp, { force: true });
          throw new SealimgError('NETWORK', `${partial}: the partial download changed (${have} bytes, expected ${offset}); it starts over`);
        }
        // The whole blob is verified: the bytes on disk, then the rest as it arrives; only the rest is written.
        const prefix = createReadStream(tmp, { start: 0, end: offset - 1, highWaterMark: 1 << 20 });
        await pipeToFile([joined(prefix, body), new VerifyStream(expected), skipFirst(offset)], tmp, { flags: 'a', sync: true }, signal);
      } else {
        const stages: NodeJS.ReadWriteStream[] = isVerified(body, expected.digest) ? [] : [new VerifyStream(expected)];
        await pipeToFile([body, ...stages], tmp, { flags: owned ? 'w' : 'wx', sync: true }, signal);
      }
      const dir = join(final, '..');
      await mkdir(dir, { recursive: true });
      await rename(tmp, final);
      await fsyncDir(dir);
    } catch (e) {
      // Keep a partial download the network or the user interrupted; drop one that was wrong or
      // that a failure elsewhere in the copy cut short.
      const interrupted = isSealimgError(e, 'NETWORK') || (signal?.aborted === true && isSealimgError(signal.reason, 'ABORTED'));
      if (!(owned && interrupted)) await rm(tmp, { force: true });
      throw e;
    } finally {
      if (owned) await unlink(`${partial}.lock`).catch(() => undefined);
    }
  }

  async ingestDir(): Promise<string> {
    await this.takeLease();
    const dir = join(this.root, INGEST);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Renames a file the caller wrote in ingestDir() and hashed itself into place; fsynced like push. */
  async ingestFile(desc: Descriptor, path: string): Promise<void> {
    await this.takeLease();
    const s = await stat(path);
    if (s.size !== desc.size) throw new SealimgError('SIZE_MISMATCH', `${path}: ${s.size} bytes, expected ${desc.size} for ${desc.digest}`);
    const fh = await open(path, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const final = this.blobPath(desc.digest);
    const dir = join(final, '..');
    await mkdir(dir, { recursive: true });
    await rename(path, final);
    await fsyncDir(dir);
  }

  async tag(desc: Descriptor, ref: string): Promise<void> {
    if (ref === '') throw new SealimgError('USAGE', 'a tag cannot be empty');
    if (!(await this.exists(desc))) {
      throw new SealimgError('MANIFEST_UNKNOWN', `cannot tag ${ref}: manifest ${desc.digest} is not in ${this.root}`);
    }
    await this.updateIndex((index) => {
      index.manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== ref);
      const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
      if (desc.platform) entry.platform = desc.platform;
      if (desc.artifactType) entry.artifactType = desc.artifactType;
      entry.annotations = { ...stripRefName(desc).annotations, [REF_NAME_ANNOTATION]: ref };
      index.manifests.push(entry);
      return true;
    });
  }

  async untag(ref: string): Promise<boolean> {
    return this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== ref);
      return index.manifests.length !== before;
    });
  }

  async delete(desc: Descriptor): Promise<void> {
    await unlink(this.blobPath(desc.digest)).catch((e) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  }

  /**
   * Removes every blob that no index.json entry reaches, and stale ingest
   * files. Blobs newer than the oldest live writer's lease are spared: that
   * writer may be about to tag them.
   */
  async gc(opts: { dryRun?: boolean } = {}): Promise<GcResult> {
    return withLock(`${this.indexPath}.lock`, async () => {
      const keep = new Set<string>();
      const index = await this.readIndex();
      const walk = async (d: Descriptor): Promise<void> => {
        if (keep.has(d.digest)) return;
        keep.add(d.digest);
        if (!isManifest(d.mediaType)) return;
        let bytes: Buffer;
        try {
          bytes = await readFile(this.blobPath(d.digest));
        } catch (e) {
          if (errnoCode(e) === 'ENOENT') return; // a partial image: nothing below it to keep
          throw e;
        }
        for (const child of childrenOf(parseManifest(bytes, d.mediaType, d.digest))) await walk(child);
      };
      for (const d of index.manifests) await walk(d);
      const since = await this.oldestLiveLease();
      const removed: Descriptor[] = [];
      let bytes = 0;
      const blobs = join(this.root, 'blobs');
      for (const alg of await readdir(blobs).catch(() => [] as string[])) {
        for (const hex of await readdir(join(blobs, alg))) {
          const digest = `${alg}:${hex}`;
          if (keep.has(digest) || !isDigest(digest)) continue;
          const path = join(blobs, alg, hex);
          const s = await stat(path);
          if (since !== undefined && s.mtimeMs >= since) continue;
          removed.push({ mediaType: 'application/octet-stream', digest, size: s.size });
          bytes += s.size;
          if (!opts.dryRun) await unlink(path);
        }
      }
      if (!opts.dryRun && since === undefined) await rm(join(this.root, INGEST), { recursive: true, force: true });
      return { removed, bytes };
    });
  }

  /** Marks this process as a writer, once, for gc in other processes. */
  private takeLease(): Promise<string> {
    this.lease ??= (async () => {
      const dir = join(this.root, LEASES);
      await mkdir(dir, { recursive: true });
      const path = join(dir, `${process.pid}-${randomBytes(4).toString('hex')}`);
      await writeFile(path, `${process.pid}\n`);
      return path;
    })();
    return this.lease;
  }

  private async oldestLiveLease(): Promise<number | undefined> {
    const dir = join(this.root, LEASES);
    let oldest: number | undefined;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const pid = Number.parseInt(name, 10);
      const path = join(dir, name);
      const mine = this.lease !== undefined && path === (await this.lease);
      if (!mine && !processAlive(pid)) {
        await unlink(path).catch(() => undefined);
        continue;
      }
      if (mine) continue;
      const s = await stat(path).catch(() => undefined);
      if (s && (oldest === undefined || s.mtimeMs < oldest)) oldest = s.mtimeMs;
    }
    return oldest;
  }

  async close(): Promise<void> {
    if (this.lease) {
      const path = await this.lease.catch(() => undefined);
      this.lease = undefined;
      if (path) await unlink(path).catch(() => undefined);
    }
  }
}

/** Takes a lock file without waiting: false when a live process holds it; a dead holder's lock is taken over. */
async function takeFileLock(path: string): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
      return true;
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (processAlive(holder)) return false;
    const stale = `${path}.stale.${process.pid}`;
    await rename(path, stale).then(() => unlink(stale), () => undefined);
  }
  return false;
}

/** `first` then `second`, as one stream. */
function joined(first: Readable, second: Readable): Readable {
  return Readable.from((async function* () {
    yield* first;
    yield* second;
  })());
}

/** Drops the first `n` bytes that pass. */
function skipFirst(n: number): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (left >= chunk.length) {
        left -= chunk.length;
        return done();
      }
      const out = left > 0 ? chunk.subarray(left) : chunk;
      left = 0;
      done(null, out);
    },
  });
}

function stripRefName(d: Descriptor): Descriptor {
  if (!d.annotations || !(REF_NAME_ANNOTATION in d.annotations)) return d;
  const { [REF_NAME_ANNOTATION]: _drop, ...rest } = d.annotations;
  const out: Descriptor = { ...d };
  if (Object.keys(rest).length > 0) out.annotations = rest;
  else delete out.annotations;
  return out;
}
