/**
 * The store contract (DESIGN.md): every place an image can live implements it,
 * and everything that moves images is copy() between two of them. Abilities
 * only some stores have are optional interfaces found with a type guard.
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';

export interface ReadOnlyStore {
  /** A tag or digest to the descriptor of its manifest. */
  resolve(ref: string, signal?: AbortSignal): Promise<Descriptor>;
  /** The bytes of a blob or manifest; the stream errors if they do not match `desc`. */
  fetch(desc: Descriptor, signal?: AbortSignal): Promise<Readable>;
  exists(desc: Descriptor, signal?: AbortSignal): Promise<boolean>;
}

export interface Store extends ReadOnlyStore {
  /** Stores `body`, failing (and storing nothing) unless it is exactly `expected`. */
  push(expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void>;
  /** Points `ref` at a manifest already in the store. */
  tag(desc: Descriptor, ref: string, signal?: AbortSignal): Promise<void>;
}

/** A tag as a store lists it. */
export interface TaggedDescriptor {
  ref: string;
  descriptor: Descriptor;
}

export interface TagLister {
  /** Every tag with its manifest descriptor. */
  list(signal?: AbortSignal): Promise<TaggedDescriptor[]>;
}

export interface Untagger {
  /** Removes a tag; returns false when there was none. */
  untag(ref: string, signal?: AbortSignal): Promise<boolean>;
}

export interface Deleter {
  delete(desc: Descriptor, signal?: AbortSignal): Promise<void>;
}

export interface Closer {
  close(): Promise<void>;
}

/** Source and destination share a registry: a blob can be mounted instead of copied. */
export interface Mounter {
  mount(desc: Descriptor, from: ReadOnlyStore, signal?: AbortSignal): Promise<boolean>;
}

/**
 * A destination that keeps what an interrupted download wrote, so the next
 * copy asks the source only for the rest (a pull killed half-way resumes).
 */
export interface ResumableIngest {
  /** Bytes of `desc` an earlier, interrupted transfer left (0 when none). */
  ingestOffset(desc: Descriptor, signal?: AbortSignal): Promise<number>;
  /** Like push, where `rest` holds the bytes from `offset` on; the whole blob is verified. */
  pushFrom(expected: Descriptor, offset: number, rest: Readable, signal?: AbortSignal): Promise<void>;
  /** Drops what an interrupted transfer of `desc` left, for a caller whose source cannot resume. */
  abandonIngest(desc: Descriptor): Promise<void>;
}

/** A source that can send a blob from an offset (HTTP Range). */
export interface RangeFetcher {
  /** The bytes of `desc` from `offset` on, unverified (the receiver checks the whole); undefined when it cannot. */
  fetchFrom(desc: Descriptor, offset: number, signal?: AbortSignal): Promise<Readable | undefined>;
}

export function canResumeIngest(s: object): s is ResumableIngest {
  return typeof (s as Partial<ResumableIngest>).ingestOffset === 'function' && typeof (s as Partial<ResumableIngest>).pushFrom === 'function';
}
export function canFetchFrom(s: object): s is RangeFetcher {
  return typeof (s as Partial<RangeFetcher>).fetchFrom === 'function';
}

/**
 * A store on a local filesystem that can take a finished file by renaming it
 * into place: a builder that hashed the bytes as it wrote them saves a copy.
 */
export interface FileIngester {
  /** A directory on the store's filesystem to write such files in. */
  ingestDir(): Promise<string>;
  /** Moves `path` (in ingestDir, exactly `desc`, as the caller hashed it) into the store. */
  ingestFile(desc: Descriptor, path: string): Promise<void>;
}

export function canList(s: object): s is TagLister {
  return typeof (s as Partial<TagLister>).list === 'function';
}
export function canUntag(s: object): s is Untagger {
  return typeof (s as Partial<Untagger>).untag === 'function';
}
export function canDelete(s: object): s is Deleter {
  return typeof (s as Partial<Deleter>).delete === 'function';
}
export function canClose(s: object): s is Closer {
  return typeof (s as Partial<Closer>).close === 'function';
}
export function canIngestFile(s: object): s is FileIngester {
  return typeof (s as Partial<FileIngester>).ingestFile === 'function';
}
export function canMount(s: object): s is Mounter {
  return typeof (s as Partial<Mounter>).mount === 'function';
}

/** Reads a small document (a manifest or config) whole; blobs are streamed, never this. */
export async function fetchAll(store: ReadOnlyStore, desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
  const stream = await store.fetch(desc, signal);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
