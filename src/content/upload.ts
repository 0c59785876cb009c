/**
 * Blob uploads to a registry (distribution-spec v1.1.0, "Pushing blobs"):
 * small blobs in one PUT; large ones as POST, PATCH chunks, closing PUT.
 * Chunks are held in memory one ahead (2 x chunk size per blob, whatever the
 * blob's size), which is what lets a failed chunk be sent again from the
 * offset the registry reports. The bytes are verified while read; the closing
 * PUT, which makes the blob exist, is sent only after the whole body matched
 * its digest, and a refused body leaves no upload behind.
 */
import { Readable } from 'node:stream';
import { SealimgError, isSealimgError } from '../errors.js';
import { VerifyStream, isVerified } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import { header, type RegistryClient } from './registry-client.js';
import { responseError } from './registry-errors.js';
import { backoff, sleep } from './retry.js';
import { UploadStateFile } from './upload-state.js';

/** Default bytes per PATCH; registries that cap chunks (GHCR: 4 MiB) need --chunk-size. */
export const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;
/** Times a lost upload session is started again when the bytes are still at hand (monolithic). */
const MONOLITHIC_RESTARTS = 3;

export interface UploadTarget {
  client: RegistryClient;
  repo: string;
  scopes: string[];
  chunkSize: number;
  /** Where chunked uploads record their progress, to resume after a restart. */
  stateDir?: string;
}

/** Reads a stream in pieces of at most n bytes, without copying. */
class ChunkReader {
  private readonly it: AsyncIterator<Buffer>;
  private rest?: Buffer;
  ended = false;
  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }
  async read(n: number): Promise<Buffer[]> {
    const out: Buffer[] = [];
    let have = 0;
    while (have < n) {
      let b = this.rest;
      this.rest = undefined;
      if (!b) {
        const r = await this.it.next();
        if (r.done) {
          this.ended = true;
          break;
        }
        b = r.value;
      }
      if (have + b.length > n) {
        this.rest = b.subarray(n - have);
        b = b.subarray(0, n - have);
      }
      out.push(b);
      have += b.length;
    }
    return out;
  }
  async close(): Promise<void> {
    await this.it.return?.();
  }
}

const total = (bufs: Buffer[]) => bufs.reduce((n, b) => n + b.length, 0);

/** The bytes of `bufs` from `from` on, without copying. */
function sliceFrom(bufs: Buffer[], from: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = from;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

function verified(expected: Descriptor, body: Readable): Readable {
  if (isVerified(body, expected.digest)) return body;
  const verify = new VerifyStream(expected);
  body.on('error', (e) => verify.destroy(e));
  verify.on('close', () => body.destroy());
  return body.pipe(verify);
}

function lost(t: UploadTarget, expected: Descriptor, why: string): SealimgError {
  return new SealimgError('NETWORK', `upload of ${expected.digest} to ${t.client.host}/${t.repo} was lost: ${why}`, {
    hint: 'the registry dropped the upload session; run the command again',
  });
}

export async function uploadBlob(t: UploadTarget, expected: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
  const reader = new ChunkReader(verified(expected, body));
  try {
    if (expected.size <= t.chunkSize) {
      // Small: read (and verify) it all first, so a bad body never opens an upload.
      const bufs = await reader.read(expected.size + 1);
      await putMonolithic(t, expected, bufs, signal);
      return;
    }
    await putChunked(t, expected, reader, signal);
  } finally {
    await reader.close().catch(() => undefined);
  }
}

async function startUpload(t: UploadTarget, expected: Descriptor, signal?: AbortSignal): Promise<{ location: URL; minChunk: number }> {
  const res = await t.client.request({ method: 'POST', url: `/v2/${t.repo}/blobs/uploads/`, scopes: t.scopes, signal, headers: { 'content-length': '0' } });
  if (res.statusCode !== 202) throw await responseError(res, `start upload of ${expected.digest} to ${t.client.host}/${t.repo}`);
  await res.body.dump();
  const loc = header(res, 'location');
  if (!loc) throw new SealimgError('REGISTRY_ERROR', `${t.client.host}: upload started without a Location header`);
  const min = Number(header(res, 'oci-chunk-min-length') ?? 0);
  return { location: new URL(loc, t.client.base), minChunk: Number.isFinite(min) && min > 0 ? min : 0 };
}

function withDigest(location: URL, digest: string): URL {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u;
}

async function cancel(t: UploadTarget, location: URL): Promise<void> {
  try {
    const res = await t.client.request({ method: 'DELETE', url: location, scopes: t.scopes, noRetry: true });
    await res.body.dump();
  } catch {
    // Best effort: the registry expires abandoned uploads itself.
  }
}

async function putMonolithic(t: UploadTarget, expected: Descriptor, bufs: Buffer[], signal?: AbortSignal): Promise<void> {
  for (let restart = 0; ; restart++) {
    const { location } = await startUpload(t, expected, signal);
    try {
      const res = await t.client.request({
        method: 'PUT',
        url: withDigest(location, expected.digest),
        scopes: t.scopes,
        signal,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(expected.size) },
        body: () => Readable.from(bufs),
      });
      if (res.statusCode === 201) {
        await res.body.dump();
        return;
      }
      // A PUT that broke mid-body makes some registries (distribution) drop the session: start over.
      if (res.statusCode === 404 && restart < MONOLITHIC_RESTARTS) {
        await res.body.dump();
        continue;
      }
      throw await responseError(res, `upload of ${expected.digest} to ${t.client.host}/${t.repo}`, 'BLOB_UNKNOWN');
    } catch (e) {
      if (isSealimgError(e, 'NETWORK') && restart < MONOLITHIC_RESTARTS && !signal?.aborted) continue;
      await cancel(t, location);
      throw e;
    }
  }
}

/** How many bytes the registry holds for an upload, or undefined when it no longer knows it. */
async function uploadOffset(t: UploadTarget, location: URL, signal?: AbortSignal): Promise<{ offset: number; location: URL } | undefined> {
  const res = await t.client.request({ method: 'GET', url: location, scopes: t.scopes, signal });
  await res.body.dump();
  if (res.statusCode === 404) return undefined;
  if (res.statusCode !== 204 && res.statusCode !== 202) throw await responseError(res, `status of upload at ${t.client.host}`);
  const range = header(res, 'range');
  const m = range ? /(\d+)-(\d+)\s*$/.exec(range) : null;
  const loc = header(res, 'location');
  return { offset: m ? Number(m[2]) + 1 : 0, location: loc ? new URL(loc, t.client.base) : location };
}

/**
 * Sends bytes [start, start + len) of the blob, then (when `close`) completes
 * it. A failed request is not blindly repeated: the registry is asked what it
 * holds and only the rest is sent again.
 */
async function sendChunk(t: UploadTarget, expected: Descriptor, location: URL, bufs: Buffer[], start: number, close: boolean, signal?: AbortSignal): Promise<URL> {
  const len = total(bufs);
  let sent = 0; // bytes of this chunk the registry holds
  for (let attempt = 0; ; ) {
    const part = sliceFrom(bufs, sent);
    const n = len - sent;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'content-length': String(n) };
    if (n > 0 && !close) headers['content-range'] = `${start + sent}-${start + len - 1}`;
    let failure: unknown;
    try {
      const res = await t.client.request({
        method: close ? 'PUT' : 'PATCH',
        url: close ? withDigest(location, expected.digest) : location,
        scopes: t.scopes,
        signal,
        headers,
        body: () => Readable.from(part),
        noRetry: true,
      });
      const ok = close ? res.statusCode === 201 : res.statusCode === 202;
      if (ok) {
        await res.body.dump();
        const loc = header(res, 'location');
        return loc ? new URL(loc, t.client.base) : location;
      }
      if (res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429 && res.statusCode !== 416 && res.statusCode !== 404) {
        throw await responseError(res, `upload of ${expected.digest} to ${t.client.host}/${t.repo}`, 'BLOB_UNKNOWN');
      }
      failure = await responseError(res, `upload of ${expected.digest} to ${t.client.host}/${t.repo}`);
    } catch (e) {
      if (!isSealimgError(e, 'NETWORK')) throw e;
      failure = e;
    }
    if (++attempt > t.client.retry.times || signal?.aborted) throw failure;
    await sleep(backoff(t.client.retry, attempt), signal);
    const state = await uploadOffset(t, location, signal);
    if (!state) throw lost(t, expected, `the registry no longer knows it (after: ${(failure as Error).message})`);
    if (state.offset < start || state.offset > start + len) throw lost(t, expected, `the registry holds ${state.offset} bytes, outside the chunk at ${start}`);
    sent = state.offset - start;
    location = state.location;
  }
}

/** Drops `n` bytes of the stream (already sent in an earlier run), a chunk at a time, still hashing them. */
async function skip(reader: ChunkReader, n: number, piece: number): Promise<void> {
  for (let left = n; left > 0; ) {
    const got = total(await reader.read(Math.min(piece, left)));
    if (got === 0) break;
    left -= got;
  }
}

/** A saved upload the registry still holds, or undefined to start afresh. */
async function resumable(t: UploadTarget, expected: Descriptor, saved: UploadStateFile | undefined, signal?: AbortSignal): Promise<{ location: URL; offset: number } | undefined> {
  const s = await saved?.read();
  if (!s || s.size !== expected.size) return undefined;
  let location: URL;
  try {
    location = new URL(s.location);
  } catch {
    return undefined;
  }
  if (location.origin !== t.client.base.origin) return undefined;
  const state = await uploadOffset(t, location, signal).catch(() => undefined);
  if (!state || state.offset <= 0 || state.offset >= expected.size) return undefined;
  return state;
}

async function putChunked(t: UploadTarget, expected: Descriptor, reader: ChunkReader, signal?: AbortSignal): Promise<void> {
  const saved = t.stateDir ? new UploadStateFile(t.stateDir, t.client.base.origin, t.repo, expected.digest) : undefined;
  let location: URL;
  let minChunk = 0;
  let offset = 0;
  const resumed = await resumable(t, expected, saved, signal);
  if (resumed) {
    ({ location, offset } = resumed);
    await skip(reader, offset, t.chunkSize);
  } else {
    await saved?.remove();
    ({ location, minChunk } = await startUpload(t, expected, signal));
  }
  const size = Math.max(t.chunkSize, minChunk);
  try {
    let next = reader.read(size);
    for (;;) {
      const bufs = await next;
      const len = total(bufs);
      const last = offset + len >= expected.size;
      if (last) {
        // Drive the stream to its end so the digest check runs before the blob is committed.
        const extra = await reader.read(1);
        if (total(extra) > 0) throw new SealimgError('SIZE_MISMATCH', `blob ${expected.digest}: more than the expected ${expected.size} bytes`);
        await sendChunk(t, expected, location, bufs, offset, true, signal);
        await saved?.remove();
        return;
      }
      next = reader.read(size); // read ahead while this chunk is on the wire
      next.catch(() => undefined);
      location = await sendChunk(t, expected, location, bufs, offset, false, signal);
      offset += len;
      await saved?.write({ location: location.href, offset, digest: expected.digest, size: expected.size });
    }
  } catch (e) {
    // A network failure or an interrupt keeps the session for the next run; anything else ends it.
    const keep = saved !== undefined && (isSealimgError(e, 'NETWORK') || isSealimgError(e, 'ABORTED') || signal?.aborted) && !/was lost/.test((e as Error).message);
    if (!keep) {
      await saved?.remove();
      await cancel(t, location);
    }
    throw e;
  }
}
