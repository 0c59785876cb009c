/**
 * A store over one repository of a registry (OCI distribution-spec v1.1.0):
 * `pull` reads, `push` writes, over the transport in registry-client.ts.
 * Every byte read is verified against its digest before anyone trusts it;
 * a download that breaks resumes with Range from the byte it reached.
 * A ref given to resolve or tag may be a tag, a digest, or a whole reference,
 * of which the tag or digest is used: the store is the repository.
 */
import { Readable } from 'node:stream';
import { SealimgError, isSealimgError } from '../errors.js';
import { VerifyStream, digestOf, isDigest, isVerified, markVerified } from '../oci/digest.js';
import { MANIFEST_TYPES, OCI_INDEX, isManifest } from '../oci/mediatypes.js';
import { parseReference } from '../oci/reference.js';
import type { Descriptor } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, parseManifest } from '../oci/validate.js';
import { RegistryClient, header, readText, type RegistryOptions, type Response } from './registry-client.js';
import { responseError } from './registry-errors.js';
import { ResumingBody } from './resuming-body.js';
import { backoff, sleep } from './retry.js';
import type { Closer, Mounter, RangeFetcher, ReadOnlyStore, Store } from './store.js';
import type { ReferrersLister, SubjectAware } from './referrers.js';
import { DEFAULT_CHUNK_SIZE, uploadBlob } from './upload.js';

const ACCEPT = MANIFEST_TYPES.join(', ');
/** Manifests pushed or fetched lately, so tagging one does not download it again. */
const MANIFEST_CACHE = 64;

/** Blobs from this size on download on a connection of their own (bulk-get.ts); a connection setup costs less than their bytes save. */
const BULK_MIN_SIZE = 4 << 20;

function isBulk(desc: Descriptor): boolean {
  return !isManifest(desc.mediaType) && desc.size >= BULK_MIN_SIZE;
}

export type Access = 'pull' | 'push';

export class RemoteStore implements Store, Closer, Mounter, RangeFetcher, ReferrersLister, SubjectAware {
  private readonly manifests = new Map<string, Buffer>();
  /** Manifests the registry answered with OCI-Subject: it lists them as referrers itself. */
  private readonly subjectIndexed = new Set<string>();

  private constructor(
    readonly client: RegistryClient,
    /** Repository path inside the registry: `library/nginx`. */
    readonly repo: string,
    private readonly access: Access,
  ) {}

  /** Opens `host/repo[:tag]` (the tag is ignored here; refs carry it). */
  static async open(name: string, opts: RegistryOptions, access: Access): Promise<RemoteStore> {
    const ref = parseReference(name);
    return new RemoteStore(await RegistryClient.open(ref.registry, opts), ref.repository, access);
  }

  /** `host/repo` */
  get name(): string {
    return `${this.client.host}/${this.repo}`;
  }

  private get scopes(): string[] {
    return [`repository:${this.repo}:${this.access === 'push' ? 'pull,push' : 'pull'}`];
  }

  /** The tag or digest part of a ref. */
  private refPart(ref: string): string {
    if (ref === '') return 'latest';
    if (isDigest(ref)) return ref;
    if (ref.includes('/') || ref.includes('@') || ref.includes(':')) {
      const r = parseReference(ref);
      return r.digest ?? r.tag ?? 'latest';
    }
    return ref;
  }

  private remember(digest: string, bytes: Buffer): void {
    this.manifests.set(digest, bytes);
    if (this.manifests.size > MANIFEST_CACHE) this.manifests.delete(this.manifests.keys().next().value!);
  }

  async resolve(ref: string, signal?: AbortSignal): Promise<Descriptor> {
    const part = this.refPart(ref);
    const what = `manifest ${this.name}${isDigest(part) ? '@' : ':'}${part}`;
    const head = await this.client.request({ method: 'HEAD', url: `/v2/${this.repo}/manifests/${part}`, headers: { accept: ACCEPT }, scopes: this.scopes, signal });
    await head.body.dump();
    if (head.statusCode === 200) {
      const digest = header(head, 'docker-content-digest');
      const mediaType = header(head, 'content-type')?.split(';')[0]?.trim();
      const size = Number(header(head, 'content-length'));
      if (digest && isDigest(digest) && (!isDigest(part) || digest === part) && isManifest(mediaType) && Number.isInteger(size) && size > 0) {
        return { mediaType: mediaType!, digest, size };
      }
    } else if (head.statusCode === 404) {
      throw new SealimgError('MANIFEST_UNKNOWN', `${what}: not found`, { hint: 'check the name and tag' });
    } else if (head.statusCode !== 405) {
      throw await responseError(head, what, 'MANIFEST_UNKNOWN');
    }
    // The HEAD did not say enough (or is not allowed): read the manifest and describe it ourselves.
    const res = await this.client.request({ method: 'GET', url: `/v2/${this.repo}/manifests/${part}`, headers: { accept: ACCEPT }, scopes: this.scopes, signal });
    if (res.statusCode !== 200) throw await responseError(res, what, 'MANIFEST_UNKNOWN');
    const bytes = Buffer.from(await readText(res, MAX_MANIFEST_SIZE), 'utf8');
    const digest = digestOf(bytes);
    if (isDigest(part) && digest !== part) {
      throw new SealimgError('DIGEST_MISMATCH', `${what}: content hashes to ${digest}`, { hint: 'the registry served other bytes than it was asked for' });
    }
    const parsed = parseManifest(bytes, header(res, 'content-type')?.split(';')[0]?.trim(), what);
    this.remember(digest, bytes);
    return { mediaType: parsed.mediaType, digest, size: bytes.length };
  }

  private path(desc: Descriptor): string {
    return `/v2/${this.repo}/${isManifest(desc.mediaType) ? 'manifests' : 'blobs'}/${desc.digest}`;
  }

  async fetch(desc: Descriptor, signal?: AbortSignal): Promise<Readable> {
    const kind = isManifest(desc.mediaType) ? 'manifest' : 'blob';
    const what = `${kind} ${this.name}@${desc.digest}`;
    const cached = this.manifests.get(desc.digest);
    const verify = new VerifyStream(desc, `${this.name}:`);
    if (cached) return markVerified(Readable.from([cached]).pipe(verify), desc.digest);
    const first = await this.client.request({ method: 'GET', url: this.path(desc), headers: { accept: ACCEPT }, scopes: this.scopes, signal, follow: true, bulk: isBulk(desc) });
    if (first.statusCode !== 200) throw await responseError(first, what, kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN');
    const body = this.resumingBody(desc, first, what, signal);
    body.on('error', (e) => verify.destroy(e));
    // Errors reach the consumer through its pipeline, even one that fails before it attaches.
    verify.on('error', () => undefined);
    verify.on('close', () => body.destroy());
    return markVerified(body.pipe(verify), desc.digest);
  }

  /**
   * The bytes of a download from `start`; when the connection breaks, asks
   * again from the byte reached (Range), so a reset costs a round trip, not the blob.
   */
  private resumingBody(desc: Descriptor, first: Response, what: string, signal?: AbortSignal, start = 0): Readable {
    return new ResumingBody(first.body, start, desc.size, this.client.retry.times, async (offset, attempt) => {
      await sleep(backoff(this.client.retry, attempt), signal);
      const res = await this.client.request({ method: 'GET', url: this.path(desc), headers: { accept: ACCEPT, range: `bytes=${offset}-` }, scopes: this.scopes, signal, follow: true, bulk: isBulk(desc) });
      if (res.statusCode === 206) {
        const from = Number(/bytes\s+(\d+)-/.exec(header(res, 'content-range') ?? '')?.[1] ?? NaN);
        if (from !== offset) {
          await res.body.dump();
          throw new SealimgError('REGISTRY_ERROR', `${what}: asked to resume at byte ${offset}, the registry answered from ${from}`);
        }
        return { body: res.body, skip: 0 };
      }
      if (res.statusCode === 200) return { body: res.body, skip: offset };
      throw await responseError(res, what, 'BLOB_UNKNOWN');
    }, signal);
  }

  /** The bytes from `offset` on (Range), for a receiver that has the rest and verifies the whole. */
  async fetchFrom(desc: Descriptor, offset: number, signal?: AbortSignal): Promise<Readable | undefined> {
    const what = `blob ${this.name}@${desc.digest}`;
    const res = await this.client.request({ method: 'GET', url: this.path(desc), headers: { accept: ACCEPT, range: `bytes=${offset}-` }, scopes: this.scopes, signal, follow: true, bulk: isBulk(desc) });
    if (res.statusCode === 200 || res.statusCode === 416) {
      await res.body.dump(); // no ranges here (or the blob changed size): the caller fetches it whole
      return undefined;
    }
    if (res.statusCode !== 206) throw await responseError(res, what, isManifest(desc.mediaType) ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN');
    const start = Number(/bytes\s+(\d+)-/.exec(header(res, 'content-range') ?? '')?.[1] ?? NaN);
    if (start !== offset) {
      await res.body.dump();
      return undefined;
    }
    const body = this.resumingBody(desc, res, what, signal, offset);
    body.on('error', () => undefined); // the consumer's pipeline reports it
    return body;
  }

  async exists(desc: Descriptor, signal?: AbortSignal): Promise<boolean> {
    const res = await this.client.request({ method: 'HEAD', url: this.path(desc), headers: { accept: ACCEPT }, scopes: this.scopes, signal });
    await res.body.dump();
    if (res.statusCode === 404) return false;
    if (res.statusCode !== 200) throw await responseError(res, `${this.name}@${desc.digest}`);
    const size = header(res, 'content-length');
    return size === undefined || Number(size) === desc.size;
  }

  async push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    if (isManifest(expected.mediaType)) return this.pushManifest(expected, body, expected.digest, signal);
    try {
      await uploadBlob({ client: this.client, repo: this.repo, scopes: this.scopes, chunkSize: this.client.opts.chunkSize ?? DEFAULT_CHUNK_SIZE, stateDir: this.client.opts.stateDir }, expected, body, signal);
    } catch (e) {
      // The closing request may have landed while its answer was lost.
      if (isSealimgError(e, 'NETWORK') && !signal?.aborted && (await this.exists(expected, signal).catch(() => false))) return;
      throw e;
    }
  }

  /** Manifests are small (4 MiB at most): read whole, verified, then one PUT by digest or tag. */
  private async pushManifest(expected: Descriptor, body: Readable, ref: string, signal?: AbortSignal): Promise<void> {
    if (expected.size > MAX_MANIFEST_SIZE) throw new SealimgError('MANIFEST_INVALID', `manifest ${expected.digest} is ${expected.size} bytes; registries accept ${MAX_MANIFEST_SIZE} at most`);
    const stream = isVerified(body, expected.digest) ? body : body.pipe(new VerifyStream(expected, 'manifest'));
    if (stream !== body) body.on('error', (e) => stream.destroy(e));
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    await this.putManifest(expected, bytes, ref, signal);
    this.remember(expected.digest, bytes);
  }

  private async putManifest(desc: Descriptor, bytes: Buffer, ref: string, signal?: AbortSignal): Promise<void> {
    const res = await this.client.request({
      method: 'PUT',
      url: `/v2/${this.repo}/manifests/${ref}`,
      headers: { 'content-type': desc.mediaType, 'content-length': String(bytes.length) },
      body: bytes,
      scopes: this.scopes,
      signal,
    });
    if (res.statusCode !== 201) throw await responseError(res, `manifest ${this.name}${isDigest(ref) ? '@' : ':'}${ref}`, 'NAME_UNKNOWN');
    await res.body.dump();
    if (header(res, 'oci-subject')) this.subjectIndexed.add(desc.digest);
    const got = header(res, 'docker-content-digest');
    if (got && got !== desc.digest) {
      throw new SealimgError('DIGEST_MISMATCH', `manifest ${this.name}:${ref}: the registry stored it as ${got}, expected ${desc.digest}`);
    }
  }

  async tag(desc: Descriptor, ref: string, signal?: AbortSignal): Promise<void> {
    const part = this.refPart(ref);
    if (isDigest(part)) {
      if (part !== desc.digest) throw new SealimgError('USAGE', `cannot tag ${desc.digest} as the digest ${part}`);
      return;
    }
    let bytes = this.manifests.get(desc.digest);
    if (!bytes) {
      const stream = await this.fetch(desc, signal).catch((e) => {
        throw isSealimgError(e, 'BLOB_UNKNOWN') || isSealimgError(e, 'MANIFEST_UNKNOWN')
          ? new SealimgError('MANIFEST_UNKNOWN', `cannot tag ${this.name}:${part}: manifest ${desc.digest} is not in the repository`)
          : e;
      });
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      bytes = Buffer.concat(chunks);
    }
    await this.putManifest(desc, bytes, part, signal);
  }

  /**
   * Cross-repository mount: when `from` is another repository on the same
   * registry, the registry links the blob instead of us copying it.
   */
  async mount(desc: Descriptor, from: ReadOnlyStore, signal?: AbortSignal): Promise<boolean> {
    if (!(from instanceof RemoteStore) || from.client.base.origin !== this.client.base.origin || from.repo === this.repo || isManifest(desc.mediaType)) return false;
    const url = `/v2/${this.repo}/blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from.repo)}`;
    const res = await this.client.request({
      method: 'POST',
      url,
      headers: { 'content-length': '0' },
      scopes: [...this.scopes, `repository:${from.repo}:pull`],
      signal,
    });
    await res.body.dump();
    if (res.statusCode === 201) return true;
    if (res.statusCode === 202) {
      // The registry opened an ordinary upload instead: close it, the blob is copied.
      const loc = header(res, 'location');
      if (loc) await this.client.request({ method: 'DELETE', url: new URL(loc, this.client.base), scopes: this.scopes, noRetry: true }).then((r) => r.body.dump(), () => undefined);
    }
    return false;
  }

  indexedSubject(manifestDigest: string): boolean {
    return this.subjectIndexed.has(manifestDigest);
  }

  /** The referrers API; undefined when the registry has none (404), so the tag fallback is used. */
  async referrers(subject: Descriptor, signal?: AbortSignal): Promise<Descriptor[] | undefined> {
    const res = await this.client.request({ method: 'GET', url: `/v2/${this.repo}/referrers/${subject.digest}`, headers: { accept: OCI_INDEX }, scopes: this.scopes, signal });
    if (res.statusCode === 404 || res.statusCode === 400 || res.statusCode === 405) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode !== 200) throw await responseError(res, `referrers of ${this.name}@${subject.digest}`);
    const bytes = Buffer.from(await readText(res, MAX_MANIFEST_SIZE), 'utf8');
    const parsed = parseManifest(bytes, OCI_INDEX, `referrers of ${this.name}@${subject.digest}`);
    return 'manifests' in parsed.manifest ? parsed.manifest.manifests : [];
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
