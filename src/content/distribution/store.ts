/**
 * The store contract (src/content/store.ts) over a distribution storage
 * directory, so copy() can fill a registry's directory offline (a cluster
 * image's `registry/`) or read one, with no server running.
 *
 * Two views: `RepositoryStore` is one repository, refs are tags or digests;
 * `DistributionStore` is the whole directory, refs are `REPO:TAG`,
 * `REPO@DIGEST` or a bare digest. Blobs pushed to the whole directory belong to
 * no repository until a tag links the image's graph into one, which is what
 * the CNCF registry needs to serve them.
 */
import type { Readable } from 'node:stream';
import { SealimgError } from '../../errors.js';
import { VerifyStream, isDigest, isVerified, markVerified } from '../../oci/digest.js';
import { isManifest } from '../../oci/mediatypes.js';
import type { Descriptor } from '../../oci/types.js';
import { MAX_MANIFEST_SIZE, childrenOf } from '../../oci/validate.js';
import type { Closer, Deleter, Mounter, ReadOnlyStore, Store, TagLister, TaggedDescriptor, Untagger } from '../store.js';
import { DistributionStorage, type Repository, type StoredManifest } from './storage.js';
import { checkTag } from './layout.js';

function descriptorOf(m: StoredManifest): Descriptor {
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
}

function unknown(desc: Descriptor, where: string): SealimgError {
  return isManifest(desc.mediaType)
    ? new SealimgError('MANIFEST_UNKNOWN', `manifest ${desc.digest} is not in ${where}`)
    : new SealimgError('BLOB_UNKNOWN', `blob ${desc.digest} is not in ${where}`);
}

async function verifiedBlob(storage: DistributionStorage, desc: Descriptor): Promise<Readable> {
  const file = await storage.readBlob(desc.digest);
  const verify = new VerifyStream(desc, `${storage.layout.blobData(desc.digest)}:`);
  file.on('error', (e) => verify.destroy(e));
  verify.on('close', () => file.destroy());
  return markVerified(file.pipe(verify), desc.digest);
}

/** Reads a manifest body whole (at most 4 MiB), verified against `desc`. */
async function readSmall(desc: Descriptor, body: Readable): Promise<Buffer> {
  if (desc.size > MAX_MANIFEST_SIZE) {
    body.destroy();
    throw new SealimgError('MANIFEST_INVALID', `manifest ${desc.digest} is ${desc.size} bytes, over the ${MAX_MANIFEST_SIZE}-byte limit`);
  }
  const stream = isVerified(body, desc.digest) ? body : body.pipe(new VerifyStream(desc, 'manifest'));
  if (stream !== body) body.on('error', (e) => stream.destroy(e));
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** One repository of a distribution directory as a Store: refs are tags or digests. */
export class RepositoryStore implements Store, TagLister, Untagger, Deleter, Mounter {
  readonly repo: Repository;
  constructor(readonly storage: DistributionStorage, readonly name: string) {
    this.repo = storage.repository(name);
  }

  private get where(): string {
    return `${this.storage.root} (repository ${this.name})`;
  }

  async resolve(ref: string): Promise<Descriptor> {
    const digest = isDigest(ref) ? ref : await this.repo.resolveTag(ref === '' ? 'latest' : (checkTag(ref), ref));
    const m = digest ? await this.repo.manifest(digest) : undefined;
    if (!m) throw new SealimgError('MANIFEST_UNKNOWN', `${this.name}:${ref || 'latest'}: no such manifest in ${this.storage.root}`);
    return descriptorOf(m);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    if (isManifest(desc.mediaType)) return (await this.repo.manifest(desc.digest))?.bytes.length === desc.size;
    return (await this.repo.blobSize(desc.digest)) === desc.size;
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    if (!(await this.exists(desc))) throw unknown(desc, this.where);
    return verifiedBlob(this.storage, desc);
  }

  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    if (isManifest(expected.mediaType)) {
      const bytes = await readSmall(expected, body);
      await this.repo.putManifest(bytes, { contentType: expected.mediaType, digest: expected.digest });
      return;
    }
    if ((await this.storage.blobSize(expected.digest)) === expected.size) {
      // Another repository brought it already: link, and leave the body unread.
      body.destroy();
    } else {
      await this.storage.ingest(expected, body, signal);
    }
    await this.repo.linkBlob(expected.digest);
  }

  async tag(desc: Descriptor, ref: string): Promise<void> {
    checkTag(ref);
    if (!(await this.repo.hasManifest(desc.digest))) throw unknown(desc, this.where);
    await this.repo.tag(ref, desc.digest);
  }

  async list(): Promise<TaggedDescriptor[]> {
    const out: TaggedDescriptor[] = [];
    for (const tag of await this.repo.tags()) {
      const digest = await this.repo.resolveTag(tag);
      const m = digest ? await this.repo.manifest(digest) : undefined;
      if (m) out.push({ ref: tag, descriptor: descriptorOf(m) });
    }
    return out;
  }

  untag(ref: string): Promise<boolean> {
    checkTag(ref);
    return this.repo.untag(ref);
  }

  async delete(desc: Descriptor): Promise<void> {
    if (isManifest(desc.mediaType)) await this.repo.deleteManifest(desc.digest);
    else await this.repo.unlinkBlob(desc.digest);
  }

  /** A blob another repository of the same directory holds is linked, not copied. */
  async mount(desc: Descriptor, from: ReadOnlyStore): Promise<boolean> {
    if (!(from instanceof RepositoryStore) || from.storage.root !== this.storage.root) return false;
    if ((await from.repo.blobSize(desc.digest)) !== desc.size) return false;
    await this.repo.linkBlob(desc.digest);
    return true;
  }
}

/** Splits `REPO:TAG` / `REPO@DIGEST` / `REPO` (meaning latest). */
export function splitRepositoryRef(ref: string): { name: string; reference: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { name: ref.slice(0, at), reference: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { name: ref.slice(0, colon), reference: ref.slice(colon + 1) };
  return { name: ref, reference: 'latest' };
}

/** A whole distribution directory as a Store: refs are `REPO:TAG`, `REPO@DIGEST` or a bare digest. */
export class DistributionStore implements Store, TagLister, Untagger, Closer {
  private constructor(readonly storage: DistributionStorage) {}

  static async open(root: string, opts: { create?: boolean } = {}): Promise<DistributionStore> {
    return new DistributionStore(await DistributionStorage.open(root, opts));
  }

  repository(name: string): RepositoryStore {
    return new RepositoryStore(this.storage, name);
  }

  async resolve(ref: string): Promise<Descriptor> {
    if (isDigest(ref)) {
      const m = await this.storage.readManifestBlob(ref).catch(() => undefined);
      if (!m) throw new SealimgError('MANIFEST_UNKNOWN', `${ref}: no such manifest in ${this.storage.root}`);
      return descriptorOf(m);
    }
    if (ref === '') {
      throw new SealimgError('MANIFEST_UNKNOWN', `${this.storage.root} holds repositories; name one`, { hint: 'add :REPO:TAG to the location' });
    }
    const { name, reference } = splitRepositoryRef(ref);
    return this.repository(name).resolve(reference);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    return (await this.storage.blobSize(desc.digest)) === desc.size;
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    if (!(await this.exists(desc))) throw unknown(desc, this.storage.root);
    return verifiedBlob(this.storage, desc);
  }

  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    if (isManifest(expected.mediaType)) await this.storage.putBytes(expected.digest, await readSmall(expected, body));
    else await this.storage.ingest(expected, body, signal);
  }

  /** Links the image's whole graph into the repository `ref` names, then tags it. */
  async tag(desc: Descriptor, ref: string): Promise<void> {
    const { name, reference } = splitRepositoryRef(ref);
    checkTag(reference);
    const repo = this.storage.repository(name);
    await this.linkGraph(repo, desc, new Set());
    await repo.tag(reference, desc.digest);
  }

  private async linkGraph(repo: Repository, desc: Descriptor, seen: Set<string>): Promise<void> {
    if (seen.has(desc.digest)) return;
    seen.add(desc.digest);
    if (!isManifest(desc.mediaType)) {
      if ((await this.storage.blobSize(desc.digest)) !== desc.size) throw unknown(desc, this.storage.root);
      await repo.linkBlob(desc.digest);
      return;
    }
    const m = await this.storage.readManifestBlob(desc.digest);
    if (!m) throw unknown(desc, this.storage.root);
    for (const child of childrenOf(m.parsed)) await this.linkGraph(repo, child, seen);
    await repo.putManifest(m.bytes, { digest: m.digest });
  }

  async list(): Promise<TaggedDescriptor[]> {
    const out: TaggedDescriptor[] = [];
    for (const name of await this.storage.repositories()) {
      for (const t of await this.repository(name).list()) out.push({ ref: `${name}:${t.ref}`, descriptor: t.descriptor });
    }
    return out;
  }

  async untag(ref: string): Promise<boolean> {
    const { name, reference } = splitRepositoryRef(ref);
    return this.repository(name).untag(reference);
  }

  async close(): Promise<void> {}
}
