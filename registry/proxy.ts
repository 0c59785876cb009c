/**
 * Pull-through mirror: a read that misses the local directory is answered
 * from an upstream registry and kept. Blobs stream to the client while they
 * are written (verified, then moved into place), and a blob many clients ask
 * for at once is fetched once. Tags are taken from the upstream again after a
 * TTL; when the upstream is down, what is cached is still served.
 *
 * Several upstreams are told apart by registry host, as containerd names them:
 * `?ns=docker.io`, or the host as the first path component
 * (`/v2/docker.io/library/nginx/...`). One upstream without a host serves every name.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { SealimgError } from '../src/errors.js';
import { isDigest, parseDigest } from '../src/oci/digest.js';
import { RemoteStore } from '../src/content/remote.js';
import { header, readText, type RegistryOptions } from '../src/content/registry-client.js';
import { fetchAll } from '../src/content/store.js';
import type { DistributionStorage, StoredManifest } from '../src/content/distribution/storage.js';
import { isRepositoryName } from '../src/content/distribution/layout.js';

const MAX_REMOTES = 256;

export interface Upstream {
  /** The registry host clients name (`docker.io`), or '' for the one that serves every name. */
  key: string;
  url: URL;
}

export interface ProxyTarget {
  /** Repository name in the local directory. */
  local: string;
  /** Repository name upstream. */
  remote: string;
  upstream: Upstream;
}

/** `URL` or `HOST=URL`, as given to --proxy. */
export function parseProxySpec(spec: string): Upstream {
  const eq = spec.indexOf('=');
  const key = eq < 0 ? '' : spec.slice(0, eq);
  const raw = eq < 0 ? spec : spec.slice(eq + 1);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SealimgError('USAGE', `--proxy "${spec}": "${raw}" is not a URL`, { hint: 'write --proxy https://HOST or --proxy docker.io=https://HOST' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new SealimgError('USAGE', `--proxy "${spec}": the URL must be http or https`);
  if (key !== '' && !/^[a-zA-Z0-9.-]+(:\d+)?$/.test(key)) throw new SealimgError('USAGE', `--proxy "${spec}": "${key}" is not a registry host`);
  return { key, url };
}

export interface PullThroughOptions {
  /** Re-check a cached tag upstream after this long (default 5 minutes). */
  tagTtlMs?: number;
  /** Transport and credentials for the upstreams (auth files are searched by upstream host). */
  registry?: RegistryOptions;
  /** Told when a stale tag is served because the upstream failed. */
  warn?: (message: string) => void;
}

export class PullThrough {
  private readonly remotes = new Map<string, Promise<RemoteStore>>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly ttl: number;

  constructor(
    readonly storage: DistributionStorage,
    readonly upstreams: Upstream[],
    private readonly opts: PullThroughOptions = {},
  ) {
    this.ttl = opts.tagTtlMs ?? 300_000;
    const keys = new Set<string>();
    for (const u of upstreams) {
      if (keys.has(u.key)) throw new SealimgError('USAGE', `--proxy given twice for ${u.key || 'every name'}`);
      keys.add(u.key);
    }
  }

  /** Which upstream serves `name` (with containerd's `ns`), or undefined when none does. */
  target(name: string, ns: string | null): ProxyTarget | undefined {
    if (ns) {
      const u = this.upstreams.find((x) => x.key === ns);
      if (u && isRepositoryName(`${ns}/${name}`)) return { local: `${ns}/${name}`, remote: name, upstream: u };
    }
    const slash = name.indexOf('/');
    if (slash > 0) {
      const u = this.upstreams.find((x) => x.key !== '' && x.key === name.slice(0, slash));
      if (u) return { local: name, remote: name.slice(slash + 1), upstream: u };
    }
    const fallback = this.upstreams.find((x) => x.key === '');
    return fallback ? { local: name, remote: name, upstream: fallback } : undefined;
  }

  private remote(t: ProxyTarget): Promise<RemoteStore> {
    const key = `${t.upstream.key}|${t.remote}`;
    let p = this.remotes.get(key);
    if (!p) {
      const base = this.opts.registry ?? {};
      p = RemoteStore.open(`${t.upstream.url.host}/${t.remote}`, { retryTimes: 1, ...base, plainHttp: t.upstream.url.protocol === 'http:' }, 'pull');
      p.catch(() => this.remotes.delete(key));
      // Each remote store holds a connection pool: keep the most recently opened ones only.
      if (this.remotes.size >= MAX_REMOTES) {
        const [oldest, store] = this.remotes.entries().next().value!;
        this.remotes.delete(oldest);
        void store.then((r) => r.close(), () => undefined);
      }
      this.remotes.set(key, p);
    }
    return p;
  }

  /** A manifest by tag or digest: from disk when fresh, else from upstream (and kept). */
  async manifest(t: ProxyTarget, reference: string): Promise<StoredManifest> {
    const repo = this.storage.repository(t.local);
    if (isDigest(reference)) {
      const have = await repo.manifest(reference);
      if (have) return have;
      return this.fetchManifest(t, reference);
    }
    const cached = await repo.resolveTag(reference);
    if (cached) {
      const linked = await stat(this.storage.layout.tagCurrentLink(t.local, reference)).catch(() => undefined);
      const age = linked ? Date.now() - linked.mtimeMs : Infinity;
      const m = await repo.manifest(cached);
      if (m && age < this.ttl) return m;
      try {
        return await this.fetchManifest(t, reference, cached);
      } catch (e) {
        if (!m) throw e;
        this.opts.warn?.(`serving ${t.local}:${reference} from cache: upstream ${t.upstream.url.host} failed: ${(e as Error).message}`);
        return m;
      }
    }
    return this.fetchManifest(t, reference);
  }

  private async fetchManifest(t: ProxyTarget, reference: string, cached?: string): Promise<StoredManifest> {
    const remote = await this.remote(t);
    const desc = await remote.resolve(reference);
    const repo = this.storage.repository(t.local);
    const tag = isDigest(reference) ? undefined : reference;
    if (cached === desc.digest) {
      const m = await repo.manifest(cached);
      if (m) {
        await repo.tag(reference, cached); // rewriting the link restarts the TTL
        return m;
      }
    }
    const bytes = await fetchAll(remote, desc);
    return repo.putManifest(bytes, { contentType: desc.mediaType, digest: desc.digest, tag });
  }

  /** The size of a blob upstream (for HEAD), without fetching it. */
  async blobSize(t: ProxyTarget, digest: string): Promise<number | undefined> {
    const remote = await this.remote(t);
    const res = await remote.client.request({ method: 'HEAD', url: `/v2/${remote.repo}/blobs/${digest}`, scopes: [`repository:${remote.repo}:pull`], follow: true });
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    const size = Number(header(res, 'content-length'));
    if (res.statusCode !== 200 || !Number.isSafeInteger(size)) {
      throw new SealimgError('REGISTRY_ERROR', `HEAD blob ${digest} at ${t.upstream.url.host}/${t.remote}: status ${res.statusCode}`);
    }
    return size;
  }

  /**
   * Brings a blob in from upstream. The first caller gets a stream of the
   * bytes as they arrive; callers meanwhile wait for the download to finish
   * and read the file (`stream` undefined). Returns undefined when upstream lacks it.
   */
  async fetchBlob(t: ProxyTarget, digest: string): Promise<{ size: number; stream?: Readable } | undefined> {
    const running = this.inflight.get(digest);
    if (running) {
      await running;
      const size = await this.storage.blobSize(digest);
      if (size === undefined) return undefined;
      await this.storage.repository(t.local).linkBlob(digest);
      return { size };
    }
    // Registered before the first await, so a second caller in the same tick finds it.
    const starting = this.download(t, digest);
    const completion = starting.then((r) => r?.done);
    this.inflight.set(digest, completion);
    completion.then(
      () => this.inflight.delete(digest),
      () => this.inflight.delete(digest),
    );
    const r = await starting;
    return r && { size: r.size, stream: r.stream };
  }

  private async download(t: ProxyTarget, digest: string): Promise<{ size: number; stream?: Readable; done: Promise<void> } | undefined> {
    // A download that finished between the caller's look at the disk and now: nothing to fetch.
    const have = await this.storage.blobSize(digest);
    if (have !== undefined) {
      await this.storage.repository(t.local).linkBlob(digest);
      return { size: have, done: Promise.resolve() };
    }
    const size = await this.blobSize(t, digest);
    if (size === undefined) return undefined;
    const remote = await this.remote(t);
    const source = await remote.fetch({ mediaType: 'application/octet-stream', digest, size });
    const dir = this.storage.layout.ingestDir;
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${parseDigest(digest).hex}.${process.pid}.${randomBytes(6).toString('hex')}`);
    const file = createWriteStream(tmp, { flags: 'wx', highWaterMark: 1 << 20 });
    const client = new PassThrough({ highWaterMark: 1 << 20 });
    source.on('error', (e) => {
      file.destroy(e);
      client.destroy(e);
    });
    // Both ends pull from one verified source: the slower sets the pace, and a
    // client that leaves is unpiped while the file still fills.
    source.pipe(file);
    source.pipe(client);
    const done = (async () => {
      try {
        await finished(file);
        await this.storage.commitBlob(tmp, digest);
        await this.storage.repository(t.local).linkBlob(digest);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    })();
    done.catch(() => undefined);
    return { size, stream: client, done };
  }

  /** Upstream's tag list (the query passed on), or undefined when it cannot be had. */
  async tags(t: ProxyTarget, query: string): Promise<string | undefined> {
    try {
      const remote = await this.remote(t);
      const res = await remote.client.request({ method: 'GET', url: `/v2/${remote.repo}/tags/list${query}`, scopes: [`repository:${remote.repo}:pull`] });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return undefined;
      }
      const doc = JSON.parse(await readText(res, 16 << 20)) as { tags?: unknown };
      return JSON.stringify({ name: t.local, tags: Array.isArray(doc.tags) ? doc.tags : [] });
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    for (const p of this.remotes.values()) await (await p.catch(() => undefined))?.close();
    this.remotes.clear();
  }
}
