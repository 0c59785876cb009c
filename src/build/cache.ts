/**
 * The build cache: a COPY/ADD layer whose inputs did not change is taken from
 * the store as it is, without reading or compressing its files again. The key
 * is the entries the layer would hold (path, type, mode, size, link target)
 * with each source file's identity on disk (device, inode, size, mtime and
 * ctime in nanoseconds: any write changes ctime), plus everything that shapes
 * the bytes (compression, level, timestamps, format version). Keys live in
 * `<store>/.build-cache/`; an entry whose blob is gone is a miss.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../content/fsutil.js';
import type { Store } from '../content/store.js';
import { errnoCode } from '../errors.js';
import type { Descriptor } from '../oci/types.js';
import { fileIdentity } from './sources.js';
import type { LayerEntry } from './tar-writer.js';

/** Bumped whenever the same entries would give other layer bytes. */
const FORMAT = 4;

export interface CachedLayer {
  descriptor: Descriptor;
  diffId: string;
}

/** fn over items, BATCH at a time: one lstat after another costs a round trip to the thread pool each. */
async function mapBatched<T, R>(items: T[], fn: (t: T) => Promise<R>): Promise<R[]> {
  const BATCH = 64;
  const out: R[] = [];
  for (let i = 0; i < items.length; i += BATCH) out.push(...(await Promise.all(items.slice(i, i + BATCH).map(fn))));
  return out;
}

export class LayerCache {
  constructor(private readonly dir: string) {}

  /** The key of a layer made of `entries` with these output settings. */
  async key(entries: LayerEntry[], settings: Record<string, unknown>, contentAddressed = false): Promise<string> {
    const h = createHash('sha256');
    h.update(JSON.stringify({ FORMAT, settings, contentAddressed }));
    const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    // A file whose path names its digest (a registry blob, verified when it was written) is known by its path.
    const ids = await mapBatched(sorted, async (e) => {
      if (!e.source || contentAddressed) return '';
      return e.identity ?? fileIdentity(await lstat(e.source, { bigint: true }));
    });
    sorted.forEach((e, i) => h.update(`${JSON.stringify([e.path, e.type, e.mode, e.size ?? 0, e.linkname ?? '', ids[i]])}\n`));
    return h.digest('hex');
  }

  async get(key: string, store: Store): Promise<CachedLayer | undefined> {
    let hit: CachedLayer;
    try {
      hit = JSON.parse(await readFile(join(this.dir, `${key}.json`), 'utf8')) as CachedLayer;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || e instanceof SyntaxError) return undefined;
      throw e;
    }
    if (typeof hit?.diffId !== 'string' || typeof hit.descriptor?.digest !== 'string') return undefined;
    return (await store.exists(hit.descriptor)) ? hit : undefined;
  }

  async put(key: string, layer: CachedLayer): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(join(this.dir, `${key}.json`), JSON.stringify({ descriptor: layer.descriptor, diffId: layer.diffId }));
  }
}
