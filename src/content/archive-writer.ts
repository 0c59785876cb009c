/**
 * A store that writes one image archive, as a stream, with no temp copies:
 * every blob becomes a tar entry `blobs/<alg>/<hex>` the moment it is pushed
 * (its descriptor carries its size, so the header goes out before the bytes),
 * and close() adds `index.json` (OCI layout, tags as ref.name annotations)
 * and a docker `manifest.json` (Config, RepoTags, Layers pointing into blobs/),
 * so `skopeo copy oci-archive:` and docker-archive readers both accept it.
 * `oci-layout` goes first, since it never changes.
 *
 * A file target is written under a temp name in its directory and renamed at
 * close; a failed push there is undone by truncating back to the entry's
 * header. A stream target (stdout, or anything gzipped) cannot be rewound, so
 * a failed push fails the whole archive.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createGzip, constants as zc } from 'node:zlib';
import { SealimgError } from '../errors.js';
import { VerifyStream, isDigest, isVerified, markVerified, parseDigest } from '../oci/digest.js';
import { DOCKER_CONFIG, OCI_CONFIG, OCI_INDEX, isImageManifest, isIndex, isManifest } from '../oci/mediatypes.js';
import { familiarName, parseReference } from '../oci/reference.js';
import { REF_NAME_ANNOTATION, type Descriptor, type ImageIndex, type ImageManifest, type Platform } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, parseManifest } from '../oci/validate.js';
import { fsyncDir, tempName } from './fsutil.js';
import type { Closer, Store } from './store.js';
import { END_OF_ARCHIVE, entryHeader, padding } from './tar.js';

export type ArchiveFormat = 'both' | 'oci-archive' | 'docker-archive';

export interface ArchiveWriterOptions {
  /** What the archive carries besides blobs (default both: index.json and manifest.json). */
  format?: ArchiveFormat;
  /** Gzip the whole tar. */
  compress?: boolean;
  /** For docker's manifest.json, the image picked out of a multi-arch index (default: this host's). */
  platform?: Platform;
}

/** Where the tar bytes go. */
interface Sink {
  position: number;
  write(buf: Buffer): Promise<void>;
  /** Forgets everything after `position`; absent when the target cannot be rewound. */
  rewind?(position: number): Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
  /** Reads back written bytes; absent for stream targets. */
  readBack?(start: number, size: number): Readable;
}

/** An uncompressed file: positioned writes, so a failed entry can be cut off again. */
class FileSink implements Sink {
  position = 0;
  private constructor(private readonly fh: FileHandle, private readonly tmp: string, private readonly final: string) {}

  static async create(final: string): Promise<FileSink> {
    const tmp = tempName(dirname(final), basename(final));
    try {
      return new FileSink(await open(tmp, 'wx', 0o644), tmp, final);
    } catch (e) {
      throw cannotWrite(final, e);
    }
  }

  async write(buf: Buffer): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, this.position + done);
      done += bytesWritten;
    }
    this.position += buf.length;
  }

  async rewind(position: number): Promise<void> {
    await this.fh.truncate(position);
    this.position = position;
  }

  readBack(start: number, size: number): Readable {
    return size === 0 ? Readable.from([]) : createReadStream(this.tmp, { start, end: start + size - 1, highWaterMark: 1 << 20 });
  }

  async finish(): Promise<void> {
    await this.fh.sync();
    await this.fh.close();
    await rename(this.tmp, this.final);
    await fsyncDir(dirname(this.final));
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}

/** A stream (stdout, or a gzip stage): written with back-pressure, never rewound. */
class StreamSink implements Sink {
  position = 0;
  private failure?: Error;
  constructor(
    private readonly out: Writable,
    private readonly done: () => Promise<void>,
    private readonly cancel: () => Promise<void>,
  ) {
    out.on('error', (e) => (this.failure ??= e));
  }

  async write(buf: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.position += buf.length;
    if (!this.out.write(buf)) {
      await Promise.race([once(this.out, 'drain'), once(this.out, 'close').then(() => Promise.reject(this.failure ?? new SealimgError('IO', 'the output closed early')))]);
    }
  }

  async finish(): Promise<void> {
    if (this.failure) throw this.failure;
    await this.done();
  }

  async abort(): Promise<void> {
    await this.cancel().catch(() => undefined);
  }
}

function cannotWrite(path: string, e: unknown): SealimgError {
  return new SealimgError('IO', `${path}: cannot write the archive (${(e as Error).message})`, { hint: 'check that the directory exists and is writable', cause: e });
}

/** Opens the sink for a path (`-` is stdout) or a given stream. */
async function openSink(target: string | Writable, compress: boolean): Promise<Sink> {
  if (typeof target === 'string' && target !== '-' && !compress) return FileSink.create(target);
  // Layers are mostly compressed already: the fastest level loses little size and saves minutes.
  const gzip = compress ? createGzip({ level: zc.Z_BEST_SPEED, chunkSize: 1 << 18 }) : undefined;
  if (typeof target === 'string' && target !== '-') {
    const tmp = tempName(dirname(target), basename(target));
    // Opened here, not lazily by the stream, so a bad path fails before anything is read.
    const fd = await open(tmp, 'wx', 0o644).catch((e: unknown) => Promise.reject(cannotWrite(target, e)));
    const file = createWriteStream(tmp, { fd, highWaterMark: 1 << 20 });
    const piped = pipeline(gzip!, file);
    piped.catch(() => undefined);
    return new StreamSink(
      gzip!,
      async () => {
        gzip!.end();
        await piped;
        const fh = await open(tmp, 'r');
        await fh.sync().finally(() => fh.close());
        await rename(tmp, target);
        await fsyncDir(dirname(target));
      },
      async () => {
        gzip!.destroy();
        await piped.catch(() => undefined);
        await rm(tmp, { force: true });
      },
    );
  }
  const out = typeof target === 'string' ? (process.stdout as unknown as Writable) : target;
  const head: Writable = gzip ?? out;
  if (gzip) gzip.pipe(out, { end: false });
  return new StreamSink(
    head,
    async () => {
      if (gzip) {
        gzip.end();
        await finished(gzip);
      }
      // stdout is never ended (node forbids it); waiting for a flushed write is enough.
      await new Promise<void>((resolve, reject) => out.write(Buffer.alloc(0), (e) => (e ? reject(e) : resolve())));
    },
    async () => {
      gzip?.destroy();
    },
  );
}

interface Written {
  desc: Descriptor;
  /** Offset of the data in the uncompressed tar; undefined when kept only in memory. */
  offset?: number;
}

/** This host as an OCI platform, for picking one image out of an index. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

export class ArchiveWriter implements Store, Closer {
  private readonly blobs = new Map<string, Written>();
  /** Manifest documents, kept to write docker's manifest.json (4 MiB each at most). */
  private readonly manifests = new Map<string, Buffer>();
  /** ref -> descriptor, in the order tagged; '' entries are images saved without a name. */
  private readonly tags = new Map<string, Descriptor>();
  private readonly untagged: Descriptor[] = [];
  private readonly dirs = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private failure?: unknown;
  private closed = false;

  private constructor(
    private readonly sink: Sink,
    private readonly format: ArchiveFormat,
    private readonly platform: Platform,
    private readonly where: string,
  ) {}

  /** Starts an archive at `target`: a file path, `-` for stdout, or a stream. */
  static async create(target: string | Writable, opts: ArchiveWriterOptions = {}): Promise<ArchiveWriter> {
    const sink = await openSink(target, Boolean(opts.compress));
    const where = typeof target === 'string' ? (target === '-' ? 'stdout' : target) : 'the output stream';
    const w = new ArchiveWriter(sink, opts.format ?? 'both', opts.platform ?? hostPlatform(), where);
    if (w.format !== 'docker-archive') {
      await w.serial(() => w.writeEntry('oci-layout', Buffer.from(`${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`)));
    }
    return w;
  }

  /** Runs `fn` after every earlier write: a tar is one sequence of entries. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.failure) throw new SealimgError('IO', `${this.where}: the archive already failed`, { cause: this.failure });
      if (this.closed) throw new SealimgError('USAGE', `${this.where}: the archive is closed`);
      return fn();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async ensureDirs(name: string): Promise<void> {
    const parts = name.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const dir = `${parts.slice(0, i).join('/')}/`;
      if (this.dirs.has(dir)) continue;
      this.dirs.add(dir);
      await this.sink.write(entryHeader(dir, 0, 'directory'));
    }
  }

  private async writeEntry(name: string, data: Buffer): Promise<void> {
    await this.sink.write(Buffer.concat([entryHeader(name, data.length), data, padding(data.length)]));
  }

  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    const { algorithm, hex } = parseDigest(expected.digest);
    await this.serial(async () => {
      if (this.blobs.has(expected.digest)) {
        body.destroy();
        return;
      }
      const name = `blobs/${algorithm}/${hex}`;
      // docker-archive readers need configs and layers only; manifests stay in memory for manifest.json.
      const write = !(this.format === 'docker-archive' && isManifest(expected.mediaType));
      const keep = isManifest(expected.mediaType) && expected.size <= MAX_MANIFEST_SIZE ? ([] as Buffer[]) : undefined;
      const start = this.sink.position;
      let offset: number | undefined;
      try {
        if (write) {
          await this.ensureDirs(name);
          const header = entryHeader(name, expected.size);
          await this.sink.write(header);
          offset = this.sink.position;
        }
        const sink = this.sink;
        const consume = async (source: AsyncIterable<Buffer>) => {
          for await (const chunk of source) {
            keep?.push(chunk);
            if (write) await sink.write(chunk);
          }
        };
        if (isVerified(body, expected.digest)) await pipeline(body, consume, { signal });
        else await pipeline(body, new VerifyStream(expected), consume, { signal });
        if (write) await this.sink.write(padding(expected.size));
      } catch (e) {
        if (this.sink.rewind) await this.sink.rewind(start);
        else this.failure = e;
        throw e;
      }
      this.blobs.set(expected.digest, { desc: expected, offset });
      if (keep) this.manifests.set(expected.digest, Buffer.concat(keep));
    });
  }

  async exists(desc: Descriptor): Promise<boolean> {
    return this.blobs.get(desc.digest)?.desc.size === desc.size;
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    const w = this.blobs.get(desc.digest);
    if (!w || w.desc.size !== desc.size) {
      throw new SealimgError(isManifest(desc.mediaType) ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${desc.digest}: not in ${this.where}`);
    }
    // Wait for writes queued before this call, so the bytes are on disk.
    await this.queue;
    const kept = this.manifests.get(desc.digest);
    let body: Readable;
    if (kept) body = Readable.from([kept]);
    else if (this.sink.readBack && w.offset !== undefined) body = this.sink.readBack(w.offset, w.desc.size);
    else throw new SealimgError('UNSUPPORTED', `${this.where} is written as a stream; its blobs cannot be read back`);
    const verify = new VerifyStream(desc, `${this.where}:`);
    body.on('error', (e) => verify.destroy(e));
    return markVerified(body.pipe(verify), desc.digest);
  }

  async resolve(ref: string): Promise<Descriptor> {
    if (isDigest(ref)) {
      const w = this.blobs.get(ref);
      if (w && isManifest(w.desc.mediaType)) return w.desc;
    } else if (ref === '' && this.tags.size === 1) {
      return [...this.tags.values()][0]!;
    } else {
      const d = this.tags.get(ref);
      if (d) return d;
    }
    throw new SealimgError('MANIFEST_UNKNOWN', `${ref || 'the image'}: not in ${this.where}`);
  }

  /** Names an image in index.json and manifest.json; `ref` is written as given. */
  async tag(desc: Descriptor, ref: string): Promise<void> {
    if (ref === '') throw new SealimgError('USAGE', 'a tag cannot be empty');
    if (!(await this.exists(desc))) throw new SealimgError('MANIFEST_UNKNOWN', `cannot tag ${ref}: ${desc.digest} is not in ${this.where}`);
    this.tags.delete(ref);
    this.tags.set(ref, desc);
  }

  /** Lists an image in index.json without a name (an image saved by ID). */
  async addUntagged(desc: Descriptor): Promise<void> {
    if (!(await this.exists(desc))) throw new SealimgError('MANIFEST_UNKNOWN', `${desc.digest} is not in ${this.where}`);
    if (!this.untagged.some((d) => d.digest === desc.digest)) this.untagged.push(desc);
  }

  /**
   * Writes index.json and manifest.json and ends the archive. An archive in
   * which nothing was named is not kept: it would load as nothing.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.failure || (this.tags.size === 0 && this.untagged.length === 0)) {
      await this.abort();
      return;
    }
    await this.serial(async () => {
      try {
        if (this.format !== 'docker-archive') await this.writeEntry('index.json', Buffer.from(`${JSON.stringify(this.indexJson())}\n`));
        if (this.format !== 'oci-archive') await this.writeEntry('manifest.json', Buffer.from(`${JSON.stringify(this.dockerManifest())}\n`));
        await this.sink.write(END_OF_ARCHIVE);
        await this.sink.finish();
      } catch (e) {
        this.failure = e;
        await this.sink.abort();
        throw e;
      }
    });
    this.closed = true;
  }

  /** Drops the archive: a file target is removed, a stream is cut. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.sink.abort();
  }

  private indexJson(): ImageIndex {
    const manifests: Descriptor[] = [];
    for (const [ref, d] of this.tags) manifests.push(entry(d, { ...d.annotations, [REF_NAME_ANNOTATION]: ref }));
    for (const d of this.untagged) manifests.push(entry(d, d.annotations));
    return { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
  }

  /** docker save's manifest.json: one item per image, with every name it was saved under. */
  private dockerManifest(): Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }> {
    const items = new Map<string, { Config: string; RepoTags: string[] | null; Layers: string[] }>();
    const add = (d: Descriptor, ref: string | undefined) => {
      const image = this.imageFor(d);
      if (!image) return;
      let item = items.get(image.digest);
      if (!item) {
        const m = parseManifest(this.manifests.get(image.digest)!, image.mediaType, image.digest).manifest as ImageManifest;
        item = { Config: blobPath(m.config.digest), RepoTags: null, Layers: m.layers.map((l) => blobPath(l.digest)) };
        items.set(image.digest, item);
      }
      const tag = ref === undefined ? undefined : dockerTag(ref);
      if (tag) (item.RepoTags ??= []).push(tag);
    };
    for (const [ref, d] of this.tags) add(d, ref);
    for (const d of this.untagged) add(d, undefined);
    return [...items.values()];
  }

  /** The image manifest docker's manifest.json can describe for `d`: itself, or one platform of an index. */
  private imageFor(d: Descriptor): Descriptor | undefined {
    const bytes = this.manifests.get(d.digest);
    if (!bytes) return undefined;
    if (isImageManifest(d.mediaType)) {
      const m = parseManifest(bytes, d.mediaType, d.digest).manifest as ImageManifest;
      const present = [m.config, ...m.layers].every((x) => this.blobs.has(x.digest));
      return present && (m.config.mediaType === OCI_CONFIG || m.config.mediaType === DOCKER_CONFIG) ? d : undefined;
    }
    if (!isIndex(d.mediaType)) return undefined;
    const children = (parseManifest(bytes, d.mediaType, d.digest).manifest as ImageIndex).manifests.filter((c) => this.manifests.has(c.digest));
    const want = this.platform;
    const pick = children.find((c) => c.platform?.os === want.os && c.platform.architecture === want.architecture) ?? children[0];
    return pick ? this.imageFor(pick) : undefined;
  }
}

function entry(d: Descriptor, annotations: Record<string, string> | undefined): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform) out.platform = d.platform;
  if (d.artifactType) out.artifactType = d.artifactType;
  if (annotations && Object.keys(annotations).length > 0) out.annotations = annotations;
  return out;
}

function blobPath(digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return `blobs/${algorithm}/${hex}`;
}

/** docker's short form (`nginx:latest`); refs that are not image names are left out of RepoTags. */
function dockerTag(ref: string): string | undefined {
  try {
    const r = parseReference(ref);
    return r.tag === undefined ? undefined : `${familiarName(r)}:${r.tag}`;
  } catch {
    return undefined;
  }
}
