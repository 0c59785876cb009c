/**
 * The registry's HTTP API, distribution-spec v1.1.0
 * (https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md),
 * as a node:http request handler over a distribution storage directory:
 * `http.createServer(createRegistryHandler(storage))`.
 *
 * Bytes stream between socket and disk; a manifest (4 MiB at most) is the only
 * body read whole. Upload sessions live on disk (uploads.ts), so they
 * outlive the process.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { SealimgError } from '../src/errors.js';
import { parseDigest } from '../src/oci/digest.js';
import { OCI_INDEX } from '../src/oci/mediatypes.js';
import { MAX_MANIFEST_SIZE } from '../src/oci/validate.js';
import { apiError, toApiError, writeError, type ApiError } from './errors.js';
import { route, splitUrl, type Route } from './routes.js';
import type { DistributionStorage, Repository } from '../src/content/distribution/storage.js';
import { checkRepositoryName, checkTag, isRepositoryName } from '../src/content/distribution/layout.js';
import { Uploads } from './uploads.js';
import type { PullThrough, ProxyTarget } from './proxy.js';
import { sendFile } from './send-file.js';

/** What a request needs to be allowed to do, in the token scope grammar (`repository:NAME:pull,push`). */
export interface Access {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

/** Checks a request's credentials; returns the user name, or undefined to refuse. */
export interface Authenticator {
  authenticate(authorization: string | undefined, access: Access[]): Promise<string | undefined>;
  /** The WWW-Authenticate value sent with a 401. */
  challenge(access: Access[]): string;
}

/** The access a request needs: pull to read, push to write, delete to delete, catalog for _catalog. */
export function accessFor(rt: Route | undefined, method: string): Access[] {
  if (!rt || rt.kind === 'base') return [];
  if (rt.kind === 'catalog') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  const action = method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push';
  // A mount's source repository is not required here: without pull on it, the mount
  // quietly becomes an ordinary upload (startUpload checks), as clients expect.
  return [{ type: 'repository', name: rt.name, actions: action === 'push' ? ['pull', 'push'] : [action] }];
}

export interface RequestLog {
  method: string;
  path: string;
  status: number;
  bytes: number;
  ms: number;
  user?: string;
  error?: string;
}

export interface RegistryHandlerOptions {
  /** Refuse every write with 405 UNSUPPORTED (as the CNCF registry's read-only mode). */
  readOnly?: boolean;
  auth?: Authenticator;
  /** Called once per request, after the response is sent. */
  log?: (entry: RequestLog) => void;
  /** Answer pages of tags and catalog at most this long (default 1000). */
  maxPage?: number;
  /** Pull-through mirror: reads that miss go upstream; names it serves take no pushes. */
  proxy?: PullThrough;
}

export type RegistryHandler = (req: IncomingMessage, res: ServerResponse) => void;

const API_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' };
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  query: URLSearchParams;
}

function send(res: ServerResponse, status: number, headers: Record<string, string | number>, body?: string | Buffer): void {
  const h: Record<string, string | number> = { ...API_HEADER, ...headers };
  if (body === undefined) h['Content-Length'] ??= 0;
  else h['Content-Length'] = Buffer.byteLength(body);
  res.writeHead(status, h);
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, doc: unknown, headers: Record<string, string> = {}): void {
  send(res, status, { 'Content-Type': 'application/json', ...headers }, JSON.stringify(doc));
}

function checkDigest(digest: string | null, what = 'digest'): string {
  if (digest === null || digest === '') throw new SealimgError('INVALID_DIGEST', `${what} is missing`);
  parseDigest(digest, what);
  return digest;
}

/** `bytes=A-B`, `bytes=A-`, `bytes=-N` against a blob of `size` bytes; undefined when unsatisfiable. */
export function parseRange(header: string, size: number): { start: number; end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return undefined;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (!Number.isSafeInteger(start) || start > end || start >= size) return undefined;
  return { start, end };
}

/** Reads a manifest body, refusing more than the 4 MiB limit before reading it all. */
async function readManifestBody(req: IncomingMessage): Promise<Buffer> {
  const tooBig = () =>
    apiError(413, 'MANIFEST_INVALID', `manifest is larger than the ${MAX_MANIFEST_SIZE}-byte limit`);
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > MAX_MANIFEST_SIZE) {
    req.resume();
    throw tooBig();
  }
  // Past the limit the rest is read and dropped, so the client gets the 413 rather than a reset.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= MAX_MANIFEST_SIZE) chunks.push(c);
      else chunks.length = 0;
    });
    req.on('end', () => (n > MAX_MANIFEST_SIZE ? reject(tooBig()) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

/** A page of a sorted list after `last`, with the Link header for the next page. */
function page(all: string[], query: URLSearchParams, max: number, base: string): { items: string[]; link?: string } {
  const nRaw = query.get('n');
  let n = max;
  if (nRaw !== null) {
    n = Number(nRaw);
    if (!Number.isInteger(n) || n < 0) throw apiError(400, 'PAGINATION_NUMBER_INVALID', `n=${nRaw} must be a whole number`);
    n = Math.min(n, max);
  }
  const last = query.get('last');
  let from = 0;
  if (last !== null) {
    from = all.findIndex((x) => x > last);
    if (from < 0) from = all.length;
  }
  const items = all.slice(from, from + n);
  if (from + n < all.length && items.length > 0) {
    const next = `${base}?n=${n}&last=${encodeURIComponent(items[items.length - 1]!)}`;
    return { items, link: `<${next}>; rel="next"` };
  }
  return { items };
}

export function createRegistryHandler(storage: DistributionStorage, opts: RegistryHandlerOptions = {}): RegistryHandler {
  const uploads = new Uploads(storage);
  const maxPage = opts.maxPage ?? 1000;

  const repo = (name: string): Repository => {
    checkRepositoryName(name);
    return storage.repository(name);
  };

  /** May the caller read `name`? (Always, without auth.) */
  const mayRead = async (c: Call, name: string): Promise<boolean> =>
    !opts.auth || (await opts.auth.authenticate(c.req.headers.authorization, [{ type: 'repository', name, actions: ['pull'] }])) !== undefined;

  const proxyTarget = (c: Call, name: string): ProxyTarget | undefined => {
    if (!opts.proxy) return undefined;
    checkRepositoryName(name);
    return opts.proxy.target(name, c.query.get('ns'));
  };

  const uploadHeaders = (name: string, id: string, size: number): Record<string, string> => ({
    Location: `/v2/${name}/blobs/uploads/${id}`,
    Range: `0-${Math.max(0, size - 1)}`,
    'Docker-Upload-UUID': id,
  });

  const blobCreated = (res: ServerResponse, name: string, digest: string) =>
    send(res, 201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest });

  async function manifest(c: Call, name: string, reference: string): Promise<void> {
    const r = repo(name);
    const byDigest = reference.includes(':');
    if (byDigest) parseDigest(reference, 'reference');
    else checkTag(reference);
    const method = c.req.method;
    if (method === 'GET' || method === 'HEAD') {
      const target = proxyTarget(c, name);
      let m;
      if (target) m = await opts.proxy!.manifest(target, reference);
      else {
        const digest = byDigest ? reference : await r.resolveTag(reference);
        m = digest ? await r.manifest(digest) : undefined;
      }
      if (!m) throw new SealimgError('MANIFEST_UNKNOWN', `manifest ${name}:${reference} is not in this registry`);
      const headers = { 'Content-Type': m.mediaType, 'Docker-Content-Digest': m.digest, ETag: `"${m.digest}"`, 'Content-Length': m.bytes.length };
      if (method === 'HEAD') send(c.res, 200, headers);
      else send(c.res, 200, headers, m.bytes);
      return;
    }
    if (method === 'PUT') {
      const bytes = await readManifestBody(c.req);
      const contentType = c.req.headers['content-type']?.split(';')[0]?.trim();
      const stored = await r.putManifest(bytes, {
        contentType,
        digest: byDigest ? reference : undefined,
        tag: byDigest ? undefined : reference,
        requireChildren: true,
      });
      const headers: Record<string, string> = { Location: `/v2/${name}/manifests/${stored.digest}`, 'Docker-Content-Digest': stored.digest };
      if (stored.subject) headers['OCI-Subject'] = stored.subject.digest;
      send(c.res, 201, headers);
      return;
    }
    if (method === 'DELETE') {
      const gone = byDigest ? await r.deleteManifest(reference) : await r.untag(reference);
      if (!gone) throw new SealimgError('MANIFEST_UNKNOWN', `manifest ${name}:${reference} is not in this registry`);
      send(c.res, 202, {});
      return;
    }
    throw notAllowed(method);
  }

  async function blob(c: Call, name: string, digestParam: string): Promise<void> {
    const r = repo(name);
    const digest = checkDigest(digestParam);
    const method = c.req.method;
    if (method === 'DELETE') {
      if (!(await r.unlinkBlob(digest))) throw new SealimgError('BLOB_UNKNOWN', `blob ${digest} is not in ${name}`);
      send(c.res, 202, {});
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method);
    const target = proxyTarget(c, name);
    let size = await (target ? storage.repository(target.local) : r).blobSize(digest);
    if (size === undefined && target) {
      if (method === 'HEAD') size = await opts.proxy!.blobSize(target, digest);
      else {
        const got = await opts.proxy!.fetchBlob(target, digest);
        if (got?.stream) {
          // The first reader gets the bytes as they arrive from upstream, whole (a Range is honoured from disk later).
          c.res.writeHead(200, { ...API_HEADER, 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', 'Content-Length': got.size });
          await pipeline(got.stream, c.res);
          return;
        }
        size = got?.size;
      }
    }
    if (size === undefined) throw new SealimgError('BLOB_UNKNOWN', `blob ${digest} is not in ${name}`);
    const base = { 'Docker-Content-Digest': digest, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream', ETag: `"${digest}"` };
    const rangeHeader = c.req.headers.range;
    let range: { start: number; end: number } | undefined;
    if (rangeHeader !== undefined && size > 0) {
      range = parseRange(rangeHeader, size);
      if (!range) {
        writeError(c.res, { status: 416, code: 'BLOB_UNKNOWN', message: `range ${rangeHeader} is outside the blob's ${size} bytes` }, {
          ...API_HEADER,
          'Content-Range': `bytes */${size}`,
        });
        return;
      }
    }
    const headers: Record<string, string | number> = { ...API_HEADER, ...base };
    if (range) {
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
      headers['Content-Length'] = range.end - range.start + 1;
    } else headers['Content-Length'] = size;
    if (method === 'HEAD') {
      // A client that finds a blob may reference it next: keep it young for a gc running beside us.
      await storage.touchBlob(digest);
      c.res.writeHead(range ? 206 : 200, headers);
      c.res.end();
      return;
    }
    const fh = await storage.openBlob(digest);
    try {
      c.res.writeHead(range ? 206 : 200, headers);
      await sendFile(fh, c.res, range?.start ?? 0, range?.end ?? size - 1);
    } finally {
      await fh.close();
    }
  }

  async function startUpload(c: Call, name: string): Promise<void> {
    const r = repo(name);
    if (c.req.method !== 'POST') throw notAllowed(c.req.method);
    const mount = c.query.get('mount');
    if (mount !== null) {
      const digest = checkDigest(mount, 'mount');
      const from = c.query.get('from');
      let size: number | undefined;
      if (from !== null && isRepositoryName(from) && (await mayRead(c, from))) size = await storage.repository(from).blobSize(digest);
      // Anonymous mount (any blob this registry holds) only where there is no auth: with it, a digest must not open other repositories.
      else if (from === null && !opts.auth) size = await storage.blobSize(digest);
      if (size !== undefined) {
        c.req.resume();
        await storage.touchBlob(digest);
        await r.linkBlob(digest);
        blobCreated(c.res, name, digest);
        return;
      }
    }
    const digestParam = c.query.get('digest');
    const id = await uploads.start(name);
    if (digestParam !== null && mount === null) {
      const digest = checkDigest(digestParam);
      try {
        await uploads.finish(name, id, digest, c.req);
      } catch (e) {
        await uploads.cancel(name, id).catch(() => undefined);
        throw e;
      }
      blobCreated(c.res, name, digest);
      return;
    }
    c.req.resume();
    send(c.res, 202, uploadHeaders(name, id, 0));
  }

  async function upload(c: Call, name: string, id: string): Promise<void> {
    repo(name);
    const method = c.req.method;
    if (method === 'GET') {
      const size = await uploads.size(name, id);
      send(c.res, 204, uploadHeaders(name, id, size));
      return;
    }
    if (method === 'DELETE') {
      await uploads.cancel(name, id);
      send(c.res, 204, {});
      return;
    }
    if (method === 'PATCH') {
      let start: number | undefined;
      const contentRange = c.req.headers['content-range'];
      if (contentRange !== undefined) {
        // The spec's form is START-END; the HTTP form (bytes START-END/TOTAL) is taken too.
        const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(contentRange.trim());
        if (!m) throw apiError(416, 'BLOB_UPLOAD_INVALID', `Content-Range "${contentRange}" must be START-END`);
        start = Number(m[1]);
        const end = Number(m[2]);
        const length = c.req.headers['content-length'];
        if (end < start || (length !== undefined && Number(length) !== end - start + 1)) {
          throw apiError(416, 'BLOB_UPLOAD_INVALID', `Content-Range ${contentRange} does not match Content-Length ${length}`);
        }
      }
      const size = await uploads.append(name, id, c.req, start);
      send(c.res, 202, uploadHeaders(name, id, size));
      return;
    }
    if (method === 'PUT') {
      const digest = checkDigest(c.query.get('digest'));
      const hasBody = Number(c.req.headers['content-length'] ?? 0) > 0 || c.req.headers['transfer-encoding'] !== undefined;
      if (!hasBody) c.req.resume();
      await uploads.finish(name, id, digest, hasBody ? c.req : undefined);
      blobCreated(c.res, name, digest);
      return;
    }
    throw notAllowed(method);
  }

  async function tags(c: Call, name: string): Promise<void> {
    const r = repo(name);
    if (c.req.method !== 'GET') throw notAllowed(c.req.method);
    const target = proxyTarget(c, name);
    if (target) {
      const q = c.query.toString();
      const upstream = await opts.proxy!.tags(target, q ? `?${q}` : '');
      if (upstream !== undefined) {
        send(c.res, 200, { 'Content-Type': 'application/json' }, upstream);
        return;
      }
    }
    const all = await r.tags();
    if (all.length === 0 && !(await r.exists())) throw new SealimgError('NAME_UNKNOWN', `repository ${name} is not in this registry`);
    const { items, link } = page(all, c.query, maxPage, `/v2/${name}/tags/list`);
    sendJson(c.res, 200, { name, tags: items }, link ? { Link: link } : {});
  }

  async function catalog(c: Call): Promise<void> {
    if (c.req.method !== 'GET') throw notAllowed(c.req.method);
    const { items, link } = page(await storage.repositories(), c.query, maxPage, '/v2/_catalog');
    sendJson(c.res, 200, { repositories: items }, link ? { Link: link } : {});
  }

  async function referrers(c: Call, name: string, digestParam: string): Promise<void> {
    const r = repo(name);
    if (c.req.method !== 'GET') throw notAllowed(c.req.method);
    const digest = checkDigest(digestParam);
    const artifactType = c.query.get('artifactType') ?? undefined;
    const manifests = await r.referrers(digest, artifactType);
    const headers: Record<string, string> = { 'Content-Type': OCI_INDEX };
    if (artifactType !== undefined) headers['OCI-Filters-Applied'] = 'artifactType';
    send(c.res, 200, headers, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
  }

  async function dispatch(c: Call, rt: Route): Promise<void> {
    if (opts.proxy && 'name' in rt && WRITE_METHODS.has(c.req.method ?? '') && proxyTarget(c, rt.name)) {
      c.req.resume();
      throw apiError(405, 'UNSUPPORTED', `${rt.name} is mirrored from an upstream registry; push there instead`);
    }
    switch (rt.kind) {
      case 'base':
        sendJson(c.res, 200, {});
        return;
      case 'catalog':
        return catalog(c);
      case 'tags':
        return tags(c, rt.name);
      case 'manifest':
        return manifest(c, rt.name, rt.reference);
      case 'blob':
        return blob(c, rt.name, rt.digest);
      case 'uploads':
        return startUpload(c, rt.name);
      case 'upload':
        return upload(c, rt.name, rt.id);
      case 'referrers':
        return referrers(c, rt.name, rt.digest);
    }
  }

  return (req, res) => {
    const started = Date.now();
    const { path, query } = splitUrl(req.url ?? '/');
    let user: string | undefined;
    let failure: string | undefined;
    if (opts.log) {
      res.on('finish', () => {
        const bytes = Number(res.getHeader('content-length') ?? 0);
        opts.log!({ method: req.method ?? '?', path, status: res.statusCode, bytes, ms: Date.now() - started, user, error: failure });
      });
    }
    const fail = (err: ApiError, headers: Record<string, string> = {}) => {
      failure = `${err.code}: ${err.message}`;
      writeError(res, err, { ...API_HEADER, ...headers });
    };
    void (async () => {
      try {
        const rt = route(path);
        if (opts.auth) {
          const access = accessFor(rt, req.method ?? 'GET');
          user = await opts.auth.authenticate(req.headers.authorization, access);
          if (user === undefined) {
            req.resume();
            fail({ status: 401, code: 'UNAUTHORIZED', message: 'authentication required' }, { 'WWW-Authenticate': opts.auth.challenge(access) });
            return;
          }
        }
        if (!rt) {
          req.resume();
          fail({ status: 404, code: 'NOT_FOUND', message: `${path} is not a registry endpoint` });
          return;
        }
        if (opts.readOnly && WRITE_METHODS.has(req.method ?? '')) {
          req.resume();
          fail({ status: 405, code: 'UNSUPPORTED', message: 'this registry is read-only' });
          return;
        }
        await dispatch({ req, res, query }, rt);
      } catch (e) {
        const api = (e as { api?: ApiError }).api ?? toApiError(e);
        if (!req.complete) req.resume();
        fail(api);
        // The client gets no internals; the log gets the real cause.
        if (api.status === 500) failure = `UNKNOWN: ${(e as Error)?.stack ?? String(e)}`;
      }
    })();
  };
}

function notAllowed(method: string | undefined): Error {
  return apiError(405, 'UNSUPPORTED', `method ${method} is not allowed here`);
}
