/**
 * Storage over the CNCF distribution filesystem layout (see layout.ts): global
 * content-addressed blobs, and per repository the links that say which blobs,
 * manifests and tags it holds. The registry handler and the Store adapters
 * (store.ts) both sit on this; `docker-registry` can serve the same directory.
 *
 * Every file is written to a temp name, fsynced and renamed, so a crash leaves
 * either nothing or a whole file: a blob becomes visible only once complete and
 * verified, and a link only after what it points to.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { SealimgError, errnoCode } from '../../errors.js';
import { VerifyStream, digestOf, isVerified, parseDigest, type Algorithm } from '../../oci/digest.js';
import { isImageManifest } from '../../oci/mediatypes.js';
import type { Descriptor, ImageManifest } from '../../oci/types.js';
import { childrenOf, parseManifest, type ParsedManifest } from '../../oci/validate.js';
import { fsyncDir, pipeToFile, writeFileAtomic } from '../fsutil.js';
import { Layout, checkRepositoryName, isRepositoryName, isTag } from './layout.js';

/** A manifest as stored: its bytes, parsed, with its digest. */
export interface StoredManifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
  parsed: ParsedManifest;
}

const ENOENT_LIKE = new Set(['ENOENT', 'ENOTDIR']);
function missing(e: unknown): boolean {
  return ENOENT_LIKE.has(errnoCode(e) ?? '');
}

/**
 * Manifests are content-addressed and small, so parsed copies are kept in
 * memory (bounded by bytes): a manifest GET then costs the link reads only.
 */
class ManifestCache {
  private readonly entries = new Map<string, StoredManifest>();
  private bytes = 0;
  constructor(private readonly limit: number) {}
  get(digest: string): StoredManifest | undefined {
    const m = this.entries.get(digest);
    if (m) {
      this.entries.delete(digest);
      this.entries.set(digest, m);
    }
    return m;
  }
  set(m: StoredManifest): void {
    if (this.entries.has(m.digest) || m.bytes.length > this.limit) return;
    this.entries.set(m.digest, m);
    this.bytes += m.bytes.length;
    for (const [k, v] of this.entries) {
      if (this.bytes <= this.limit) break;
      this.entries.delete(k);
      this.bytes -= v.bytes.length;
    }
  }
}

export class DistributionStorage {
  readonly layout: Layout;
  private readonly manifests = new ManifestCache(32 << 20);

  private constructor(readonly root: string) {
    this.layout = new Layout(root);
  }

  /**
   * Opens a storage root (the directory docker-registry calls rootdirectory).
   * With `create`, a missing directory is made; without, a directory that
   * holds no `docker/registry/v2` is refused.
   */
  static async open(root: string, opts: { create?: boolean } = {}): Promise<DistributionStorage> {
    const s = new DistributionStorage(root);
    if (opts.create) {
      await mkdir(s.layout.v2, { recursive: true });
      return s;
    }
    try {
      if (!(await stat(s.layout.v2)).isDirectory()) throw new Error('not a directory');
    } catch {
      throw new SealimgError('NAME_UNKNOWN', `${root} is not a distribution storage directory (no docker/registry/v2 in it)`, {
        hint: "the directory a CNCF registry (or 'sealimg registry serve --root') keeps its data in",
      });
    }
    return s;
  }

  repository(name: string): Repository {
    return new Repository(this, name);
  }

  /** Size of a stored blob, or undefined. */
  async blobSize(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.layout.blobData(digest))).size;
    } catch (e) {
      if (missing(e)) return undefined;
      throw e;
    }
  }

  /** A blob's data file, open for reading; the caller closes it. */
  async openBlob(digest: string): Promise<FileHandle> {
    try {
      return await open(this.layout.blobData(digest), 'r');
    } catch (e) {
      if (missing(e)) throw new SealimgError('BLOB_UNKNOWN', `blob ${digest} is not in ${this.root}`);
      throw e;
    }
  }

  /** Streams a blob. */
  async readBlob(digest: string): Promise<Readable> {
    return (await this.openBlob(digest)).createReadStream({ highWaterMark: 1 << 20 });
  }

  /**
   * Stores a blob from a stream; nothing is visible unless it is exactly
   * `expected`. A stream already verified upstream is not hashed again.
   */
  async ingest(expected: { digest: string; size: number }, body: Readable, signal?: AbortSignal): Promise<void> {
    const dir = this.layout.ingestDir;
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${parseDigest(expected.digest).hex}.${process.pid}.${randomBytes(6).toString('hex')}`);
    try {
      const stages: NodeJS.ReadWriteStream[] = isVerified(body, expected.digest) ? [] : [new VerifyStream(expected)];
      await pipeToFile([body, ...stages], tmp, { flags: 'wx' }, signal);
      await this.commitBlob(tmp, expected.digest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /** Moves a complete, verified file into place as the blob `digest` (fsync, rename, fsync dir). */
  async commitBlob(file: string, digest: string): Promise<void> {
    const fh = await open(file, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const dir = this.layout.blobDir(digest);
    await mkdir(dir, { recursive: true });
    await rename(file, join(dir, 'data'));
    await fsyncDir(dir);
  }

  /** Stores small bytes (a manifest) as a blob, if not there yet. */
  async putBytes(digest: string, bytes: Buffer): Promise<void> {
    if ((await this.blobSize(digest)) === bytes.length) return;
    const dir = this.layout.ingestDir;
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${parseDigest(digest).hex}.${process.pid}.${randomBytes(6).toString('hex')}`);
    try {
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(bytes);
      } finally {
        await fh.close();
      }
      await this.commitBlob(tmp, digest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /**
   * Reads a link file: the digest it holds, or undefined when there is none.
   * Read synchronously on purpose: a link is ~71 bytes in the page cache, and
   * one sync read costs ~7 us where the promise API's open/stat/read/close
   * round trips through the thread pool cost ~90 us; manifest GETs are all links.
   */
  async readLink(path: string): Promise<string | undefined> {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if (missing(e) || errnoCode(e) === 'EISDIR') return undefined;
      throw e;
    }
    const digest = text.trim();
    try {
      parseDigest(digest, path);
    } catch (e) {
      throw new SealimgError('STORE_CORRUPT', (e as Error).message);
    }
    return digest;
  }

  /** Writes a link the way the CNCF registry does: the digest, no newline. */
  async writeLink(path: string, digest: string): Promise<void> {
    await writeFileAtomic(path, digest);
  }

  /** Reads, verifies and parses a manifest blob (cached; content-addressed, so never stale). */
  async readManifestBlob(digest: string): Promise<StoredManifest | undefined> {
    const cached = this.manifests.get(digest);
    if (cached) return cached;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.layout.blobData(digest));
    } catch (e) {
      if (missing(e)) return undefined;
      throw e;
    }
    const actual = digestOf(bytes, parseDigest(digest).algorithm);
    if (actual !== digest) throw new SealimgError('STORE_CORRUPT', `${this.layout.blobData(digest)}: content hashes to ${actual}`);
    const parsed = parseManifest(bytes, undefined, digest);
    const m = { digest, bytes, mediaType: parsed.mediaType, parsed };
    this.manifests.set(m);
    return m;
  }

  /**
   * Marks a blob as just used (a client found it and may reference it next),
   * so a gc running beside the server spares it. Cheap: only old files are touched.
   */
  async touchBlob(digest: string): Promise<void> {
    const path = this.layout.blobData(digest);
    try {
      const s = await stat(path);
      if (Date.now() - s.mtimeMs > 60_000) await utimes(path, new Date(), new Date());
    } catch (e) {
      if (!missing(e)) throw e;
    }
  }

  /** Every stored blob, with its size and modification time. */
  async *blobs(): AsyncGenerator<{ digest: string; size: number; mtimeMs: number }> {
    for (const alg of await listDir(this.layout.blobsDir)) {
      for (const prefix of await listDir(join(this.layout.blobsDir, alg))) {
        for (const hex of await listDir(join(this.layout.blobsDir, alg, prefix))) {
          const digest = `${alg}:${hex}`;
          if (!isDigestString(digest)) continue;
          try {
            const s = await stat(join(this.layout.blobsDir, alg, prefix, hex, 'data'));
            yield { digest, size: s.size, mtimeMs: s.mtimeMs };
          } catch (e) {
            if (!missing(e)) throw e;
          }
        }
      }
    }
  }

  /** Removes a blob from the directory (gc only: repositories may still link it). */
  async deleteBlob(digest: string): Promise<void> {
    await removeDir(this.layout.blobDir(digest));
  }

  /**
   * Every repository name, sorted. A repository is a directory holding
   * `_manifests`, as the CNCF registry decides; gc also asks for those holding uploads or links.
   */
  async repositories(marker: '_manifests' | '_uploads' | '_layers' = '_manifests'): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string, prefix: string, depth: number): Promise<void> => {
      if (depth > 64) return;
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if (missing(e)) return;
        throw e;
      }
      for (const ent of entries) {
        if (!ent.isDirectory()) continue;
        if (ent.name === marker) {
          if (isRepositoryName(prefix)) out.push(prefix);
          continue;
        }
        if (ent.name.startsWith('_') || ent.name.startsWith('.')) continue;
        await walk(join(dir, ent.name), prefix === '' ? ent.name : `${prefix}/${ent.name}`, depth + 1);
      }
    };
    await walk(this.layout.repositoriesDir, '', 0);
    return out.sort();
  }
}

/** What a referrers response lists for one manifest (image-spec v1.1.0 descriptor, with artifactType). */
export function referrerDescriptor(m: StoredManifest): Descriptor {
  const doc = m.parsed.manifest;
  const d: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
  const artifactType = doc.artifactType ?? (isImageManifest(m.mediaType) ? (doc as ImageManifest).config.mediaType : undefined);
  if (artifactType) d.artifactType = artifactType;
  if (doc.annotations) d.annotations = doc.annotations;
  return d;
}

/** One repository: its links to blobs, manifests, tags and referrers. */
export class Repository {
  private readonly layout: Layout;
  constructor(readonly storage: DistributionStorage, readonly name: string) {
    checkRepositoryName(name);
    this.layout = storage.layout;
  }

  /** The size of a blob this repository holds, or undefined. Manifests count too, as pushed by digest. */
  async blobSize(digest: string): Promise<number | undefined> {
    let link = await this.storage.readLink(this.layout.layerLink(this.name, digest));
    link ??= await this.storage.readLink(this.layout.revisionLink(this.name, digest));
    if (link !== digest) return undefined;
    return this.storage.blobSize(digest);
  }

  async linkBlob(digest: string): Promise<void> {
    await this.storage.writeLink(this.layout.layerLink(this.name, digest), digest);
  }

  /** Removes the repository's link to a blob (the blob itself goes at gc). */
  async unlinkBlob(digest: string): Promise<boolean> {
    const link = this.layout.layerLink(this.name, digest);
    if ((await this.storage.readLink(link)) === undefined) return false;
    await removeDir(join(link, '..'));
    return true;
  }

  /** A manifest of this repository by digest, or undefined. */
  async manifest(digest: string): Promise<StoredManifest | undefined> {
    if ((await this.storage.readLink(this.layout.revisionLink(this.name, digest))) !== digest) return undefined;
    return this.storage.readManifestBlob(digest);
  }

  async hasManifest(digest: string): Promise<boolean> {
    return (await this.storage.readLink(this.layout.revisionLink(this.name, digest))) === digest && (await this.storage.blobSize(digest)) !== undefined;
  }

  async resolveTag(tag: string): Promise<string | undefined> {
    return this.storage.readLink(this.layout.tagCurrentLink(this.name, tag));
  }

  /**
   * Stores a manifest and links it (and its referrers entry). With
   * `requireChildren`, a manifest naming a blob or manifest this repository
   * lacks is refused with MANIFEST_BLOB_UNKNOWN, as the spec asks of a registry.
   */
  async putManifest(
    bytes: Buffer,
    opts: { contentType?: string; digest?: string; tag?: string; requireChildren?: boolean } = {},
  ): Promise<StoredManifest & { subject?: Descriptor }> {
    const algorithm: Algorithm = opts.digest ? parseDigest(opts.digest).algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (opts.digest && opts.digest !== digest) {
      throw new SealimgError('DIGEST_MISMATCH', `manifest for ${this.name}: content hashes to ${digest}, not ${opts.digest}`);
    }
    const parsed = parseManifest(bytes, opts.contentType, `manifest for ${this.name}`);
    if (opts.requireChildren) {
      for (const child of childrenOf(parsed)) {
        if (child.urls && child.urls.length > 0) continue; // foreign layers live elsewhere
        const have = isManifestChild(parsed) ? await this.hasManifest(child.digest) : (await this.blobSize(child.digest)) === child.size;
        if (!have) {
          throw new SealimgError('MANIFEST_BLOB_UNKNOWN', `manifest for ${this.name} names ${child.digest}, which the repository does not hold`, {
            hint: 'push the blobs (and child manifests) before the manifest',
          });
        }
      }
    }
    await this.storage.putBytes(digest, bytes);
    await this.storage.writeLink(this.layout.revisionLink(this.name, digest), digest);
    const subject = parsed.manifest.subject;
    if (subject) await this.storage.writeLink(this.layout.referrerLink(this.name, subject.digest, digest), digest);
    if (opts.tag !== undefined) await this.tag(opts.tag, digest);
    return { digest, bytes, mediaType: parsed.mediaType, parsed, subject };
  }

  async tag(tag: string, digest: string): Promise<void> {
    await this.storage.writeLink(this.layout.tagIndexLink(this.name, tag, digest), digest);
    await this.storage.writeLink(this.layout.tagCurrentLink(this.name, tag), digest);
  }

  async untag(tag: string): Promise<boolean> {
    if ((await this.resolveTag(tag)) === undefined) return false;
    await removeDir(this.layout.tagDir(this.name, tag));
    return true;
  }

  /** Every tag, in lexical order (distribution-spec v1.1.0 "Listing Tags"). */
  async tags(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.layout.tagsDir(this.name));
    } catch (e) {
      if (missing(e)) return [];
      throw e;
    }
    return names.filter(isTag).sort();
  }

  /** True when the repository exists at all (has ever held a blob or manifest). */
  async exists(): Promise<boolean> {
    try {
      return (await stat(this.layout.repository(this.name))).isDirectory();
    } catch (e) {
      if (missing(e)) return false;
      throw e;
    }
  }

  /** Removes a manifest from the repository, with the tags that point at it and its referrers entry. */
  async deleteManifest(digest: string): Promise<boolean> {
    const m = await this.manifest(digest);
    if (!m) return false;
    for (const tag of await this.tags()) {
      if ((await this.resolveTag(tag)) === digest) await removeDir(this.layout.tagDir(this.name, tag));
    }
    const subject = m.parsed.manifest.subject;
    if (subject) await removeDir(join(this.layout.referrerLink(this.name, subject.digest, digest), '..'));
    await removeDir(join(this.layout.revisionLink(this.name, digest), '..'));
    return true;
  }

  /** Digests of every manifest revision the repository holds. */
  async revisions(): Promise<string[]> {
    return linkedDigests(join(this.layout.repository(this.name), '_manifests', 'revisions'));
  }

  /** Digests of every blob the repository links. */
  async layers(): Promise<string[]> {
    return linkedDigests(join(this.layout.repository(this.name), '_layers'));
  }

  /** The manifests that name `subject` as their subject, optionally only those of one artifactType. */
  async referrers(subject: string, artifactType?: string): Promise<Descriptor[]> {
    const dir = this.layout.referrersDir(this.name, subject);
    const out: Descriptor[] = [];
    let algs: string[];
    try {
      algs = await readdir(dir);
    } catch (e) {
      if (missing(e)) return out;
      throw e;
    }
    for (const alg of algs.sort()) {
      for (const hex of (await readdir(join(dir, alg)).catch(() => [] as string[])).sort()) {
        const digest = await this.storage.readLink(join(dir, alg, hex, 'link'));
        if (!digest) continue;
        const m = await this.manifest(digest);
        if (!m) continue;
        const d = referrerDescriptor(m);
        if (artifactType === undefined || d.artifactType === artifactType) out.push(d);
      }
    }
    return out;
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if (missing(e)) return [];
    throw e;
  }
}

function isDigestString(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

/** `<dir>/<alg>/<hex>/link` entries as digests (the layout of _layers and revisions). */
async function linkedDigests(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const alg of await listDir(dir)) {
    for (const hex of await listDir(join(dir, alg))) {
      const d = `${alg}:${hex}`;
      if (isDigestString(d)) out.push(d);
    }
  }
  return out;
}

function isManifestChild(parsed: ParsedManifest): boolean {
  return 'manifests' in parsed.manifest;
}

/** Removes a directory so no reader sees it half gone: rename aside first, then delete. */
export async function removeDir(dir: string): Promise<void> {
  const aside = join(dir, '..', `.rm-${randomBytes(6).toString('hex')}`);
  try {
    await rename(dir, aside);
  } catch (e) {
    if (missing(e)) return;
    throw e;
  }
  await rm(aside, { recursive: true, force: true });
}

