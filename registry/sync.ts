/**
 * Registry sync: every repository and tag of one registry (or distribution
 * directory, such as a cluster image's `registry/`) copied to another with
 * copy(), which skips blobs the target has; a tag already at the same digest
 * is skipped whole. One failed image does not stop the rest: failures are
 * collected and reported at the end.
 */
import { copy } from '../src/content/copy.js';
import { RegistryClient, header, readText, type RegistryOptions } from '../src/content/registry-client.js';
import { RemoteStore } from '../src/content/remote.js';
import { canClose, type ReadOnlyStore, type Store } from '../src/content/store.js';
import { SealimgError } from '../src/errors.js';
import { DistributionStorage } from '../src/content/distribution/storage.js';
import { RepositoryStore } from '../src/content/distribution/store.js';

/** One side of a sync: what it holds, and a store per repository. */
export interface SyncEndpoint {
  readonly name: string;
  repositories(signal?: AbortSignal): Promise<string[]>;
  tags(repo: string, signal?: AbortSignal): Promise<string[]>;
  open(repo: string, access: 'pull' | 'push'): Promise<Store>;
  close(): Promise<void>;
}

class DirectoryEndpoint implements SyncEndpoint {
  constructor(readonly storage: DistributionStorage, readonly name: string) {}
  repositories(): Promise<string[]> {
    return this.storage.repositories();
  }
  tags(repo: string): Promise<string[]> {
    return this.storage.repository(repo).tags();
  }
  async open(repo: string): Promise<Store> {
    return new RepositoryStore(this.storage, repo);
  }
  async close(): Promise<void> {}
}

class RegistryEndpoint implements SyncEndpoint {
  constructor(
    private readonly client: RegistryClient,
    private readonly opts: RegistryOptions,
    readonly name: string,
  ) {}

  /** Follows the Link header page by page (bounded), as distribution-spec v1.1.0 describes. */
  private async pages(path: string, key: 'repositories' | 'tags', scopes: string[], signal?: AbortSignal): Promise<string[]> {
    const out: string[] = [];
    let next: string | undefined = path;
    for (let i = 0; next && i < 10_000; i++) {
      const res = await this.client.request({ method: 'GET', url: next, scopes, signal });
      if (res.statusCode === 404 && key === 'tags') {
        await res.body.dump();
        return out;
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new SealimgError('REGISTRY_ERROR', `${this.name}: GET ${next} answered HTTP ${res.statusCode}`, {
          hint: key === 'repositories' ? 'the registry must allow listing its catalog (GET /v2/_catalog)' : undefined,
        });
      }
      const doc = JSON.parse(await readText(res, 64 << 20)) as Record<string, unknown>;
      const items = doc[key];
      if (Array.isArray(items)) out.push(...items.filter((x): x is string => typeof x === 'string'));
      next = /<([^>]+)>;\s*rel="?next"?/.exec(header(res, 'link') ?? '')?.[1];
    }
    return out;
  }

  repositories(signal?: AbortSignal): Promise<string[]> {
    return this.pages('/v2/_catalog?n=1000', 'repositories', ['registry:catalog:*'], signal);
  }
  tags(repo: string, signal?: AbortSignal): Promise<string[]> {
    return this.pages(`/v2/${repo}/tags/list?n=1000`, 'tags', [`repository:${repo}:pull`], signal);
  }
  open(repo: string, access: 'pull' | 'push'): Promise<Store> {
    return RemoteStore.open(`${this.client.host}/${repo}`, this.opts, access);
  }
  async close(): Promise<void> {
    await this.client.close();
  }
}

/**
 * Opens `distribution:DIR` (a directory in the CNCF layout; created when it is
 * the target) or a registry host: `HOST[:PORT]`, `docker://HOST[:PORT]`.
 */
export async function openEndpoint(spec: string, role: 'source' | 'target', opts: RegistryOptions): Promise<SyncEndpoint> {
  if (spec.startsWith('distribution:')) {
    const dir = spec.slice('distribution:'.length);
    if (dir === '') throw new SealimgError('USAGE', `${spec}: missing the directory after "distribution:"`);
    return new DirectoryEndpoint(await DistributionStorage.open(dir, { create: role === 'target' }), dir);
  }
  const host = spec.replace(/^docker:\/\//, '').replace(/\/+$/, '');
  if (!/^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(:\d+)?$/.test(host)) {
    throw new SealimgError('USAGE', `"${spec}" is neither distribution:DIR nor a registry HOST[:PORT]`);
  }
  return new RegistryEndpoint(await RegistryClient.open(host, opts), opts, host);
}

/** `*` matches within one path component, `**` across them; a pattern with `:` matches REPO:TAG, else REPO. */
export function globMatcher(patterns: string[]): (repo: string, tag: string) => boolean {
  const res = patterns.map((p) => {
    const re = p.split(/(\*\*|\*|\?)/).map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
    return { withTag: p.includes(':'), re: new RegExp(`^${re}$`) };
  });
  return (repo, tag) => res.some((r) => r.re.test(r.withTag ? `${repo}:${tag}` : repo));
}

export interface SyncOptions {
  include?: string[];
  exclude?: string[];
  concurrency?: number;
  signal?: AbortSignal;
  /** One line per image: copied, skipped or failed. */
  onImage?: (event: { repo: string; tag: string; result: 'copied' | 'skipped' | 'failed'; digest?: string; error?: string }) => void;
}

export interface SyncReport {
  copied: number;
  skipped: number;
  failed: Array<{ ref: string; error: string }>;
}

export async function sync(src: SyncEndpoint, dst: SyncEndpoint, opts: SyncOptions = {}): Promise<SyncReport> {
  const include = opts.include?.length ? globMatcher(opts.include) : () => true;
  const exclude = opts.exclude?.length ? globMatcher(opts.exclude) : () => false;
  const report: SyncReport = { copied: 0, skipped: 0, failed: [] };
  const fail = (repo: string, tag: string, e: unknown) => {
    const error = e instanceof Error ? e.message : String(e);
    report.failed.push({ ref: `${repo}${tag ? `:${tag}` : ''}`, error });
    opts.onImage?.({ repo, tag, result: 'failed', error });
  };
  for (const repo of await src.repositories(opts.signal)) {
    let tags: string[];
    try {
      tags = (await src.tags(repo, opts.signal)).filter((t) => include(repo, t) && !exclude(repo, t));
    } catch (e) {
      fail(repo, '', e);
      continue;
    }
    if (tags.length === 0) continue;
    const open: Array<ReadOnlyStore | Store> = [];
    try {
      const from = await src.open(repo, 'pull');
      open.push(from);
      const to = await dst.open(repo, 'push');
      open.push(to);
      for (const tag of tags) {
        opts.signal?.throwIfAborted();
        try {
          const want = await from.resolve(tag, opts.signal);
          const have = await to.resolve(tag, opts.signal).catch(() => undefined);
          if (have?.digest === want.digest) {
            report.skipped++;
            opts.onImage?.({ repo, tag, result: 'skipped', digest: want.digest });
            continue;
          }
          await copy(from, want.digest, to, tag, { concurrency: opts.concurrency, signal: opts.signal });
          report.copied++;
          opts.onImage?.({ repo, tag, result: 'copied', digest: want.digest });
        } catch (e) {
          if (opts.signal?.aborted) throw e;
          fail(repo, tag, e);
        }
      }
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      fail(repo, '', e);
    } finally {
      for (const s of open) if (canClose(s)) await s.close();
    }
  }
  return report;
}
