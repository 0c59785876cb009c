/**
 * Referrers (signatures, SBOMs, attestations: manifests whose `subject` is an
 * image) travel with the image when asked (--referrers). They are found
 * through the referrers API (distribution-spec v1.1.0 "Listing Referrers")
 * where a store has one, else through the tag-schema fallback: an index
 * tagged `sha256-<hex>` that lists them. On the destination, a registry that
 * answers a manifest PUT with OCI-Subject keeps the list itself; anywhere
 * else the fallback index is written (read, add, push, tag), as oras and regctl do.
 */
import { Readable } from 'node:stream';
import { isSealimgError } from '../errors.js';
import { digestOf, parseDigest } from '../oci/digest.js';
import { OCI_INDEX } from '../oci/mediatypes.js';
import type { Descriptor, ImageIndex, ImageManifest } from '../oci/types.js';
import { parseManifest } from '../oci/validate.js';
import { copyGraph, type CopyOptions } from './copy.js';
import { fetchAll, type ReadOnlyStore, type Store } from './store.js';

/** A store that can list referrers itself (a registry with the referrers API). */
export interface ReferrersLister {
  /** The referrers of `subject`, or undefined when the store has no such API. */
  referrers(subject: Descriptor, signal?: AbortSignal): Promise<Descriptor[] | undefined>;
}

/** A store that tells whether it indexed a pushed manifest's subject itself. */
export interface SubjectAware {
  indexedSubject(manifestDigest: string): boolean;
}

function canListReferrers(s: object): s is ReferrersLister {
  return typeof (s as Partial<ReferrersLister>).referrers === 'function';
}
function isSubjectAware(s: object): s is SubjectAware {
  return typeof (s as Partial<SubjectAware>).indexedSubject === 'function';
}

/** The tag-schema fallback tag for a subject: `sha256-<hex>`. */
export function fallbackTag(subject: string): string {
  const { algorithm, hex } = parseDigest(subject);
  return `${algorithm}-${hex}`;
}

/** Maps a bare tag to the ref a store wants (the local store files tags under full names). */
export type RefFor = (tag: string) => string;

async function fallbackIndex(store: ReadOnlyStore, ref: string, signal?: AbortSignal): Promise<ImageIndex | undefined> {
  let desc: Descriptor;
  try {
    desc = await store.resolve(ref, signal);
  } catch (e) {
    if (isSealimgError(e, 'MANIFEST_UNKNOWN') || isSealimgError(e, 'NAME_UNKNOWN')) return undefined;
    throw e;
  }
  const parsed = parseManifest(await fetchAll(store, desc, signal), desc.mediaType, desc.digest);
  return 'manifests' in parsed.manifest ? parsed.manifest : undefined;
}

export async function listReferrers(store: ReadOnlyStore, subject: Descriptor, refFor: RefFor, signal?: AbortSignal): Promise<Descriptor[]> {
  if (canListReferrers(store)) {
    const api = await store.referrers(subject, signal);
    if (api) return api;
  }
  return (await fallbackIndex(store, refFor(fallbackTag(subject.digest)), signal))?.manifests ?? [];
}

/** Adds `referrer` to the destination's fallback index for `subject`. */
async function recordFallback(dst: Store, subject: Descriptor, referrer: Descriptor, refFor: RefFor, signal?: AbortSignal): Promise<void> {
  const ref = refFor(fallbackTag(subject.digest));
  const index: ImageIndex = (await fallbackIndex(dst, ref, signal)) ?? { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
  if (index.manifests.some((m) => m.digest === referrer.digest)) return;
  index.manifests.push(referrer);
  const bytes = Buffer.from(JSON.stringify(index));
  const desc: Descriptor = { mediaType: OCI_INDEX, digest: digestOf(bytes), size: bytes.length };
  await dst.push(desc, Readable.from([bytes]), signal);
  await dst.tag(desc, ref, signal);
}

/**
 * Copies the referrers of `subject` (and theirs, to a bounded depth) from
 * `src` to `dst`. Returns how many were copied.
 */
export async function copyReferrers(src: ReadOnlyStore, srcRefFor: RefFor, dst: Store, dstRefFor: RefFor, subject: Descriptor, opts: CopyOptions = {}, depth = 3): Promise<number> {
  if (depth === 0) return 0;
  let n = 0;
  for (const r of await listReferrers(src, subject, srcRefFor, opts.signal)) {
    // The listing's descriptor carries artifactType and annotations; keep them for the destination's list.
    const entry: Descriptor = { ...r };
    if (entry.artifactType === undefined) {
      const m = parseManifest(await fetchAll(src, r, opts.signal), r.mediaType, r.digest).manifest as ImageManifest;
      const type = m.artifactType ?? ('config' in m ? m.config.mediaType : undefined);
      if (type) entry.artifactType = type;
    }
    await copyGraph(src, dst, r, opts);
    if (!(isSubjectAware(dst) && dst.indexedSubject(r.digest))) await recordFallback(dst, subject, entry, dstRefFor, opts.signal);
    n += 1 + (await copyReferrers(src, srcRefFor, dst, dstRefFor, r, opts, depth - 1));
  }
  return n;
}
