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
import type { LayerEntry } from './tar-writer.js';

/** Bumped whenever the same entries would give other layer bytes. */
const FORMAT = 2;

export interface CachedLayer {
  descriptor: Descriptor;
  diffId: string;
}

export class LayerCache {
  constructor(private readonly dir: string) {}

  /** The key of a layer made of `entries` with these output settings. */
  async key(entries: LayerEntry[], settings: Record<string, unknown>, contentAddressed = false): Promise<string> {
    const h = createHash('sha256');
    h.update(JSON.stringify({ FORMAT, settings, contentAddressed }));
    for (const e of [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
      let id = '';
      // A file whose path names its digest (a registry blob, verified when it was written) is known by its path.
      if (e.source && !contentAddressed) {
        const st = await lstat(e.source, { bigint: true });
        id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      }
      h.update(`${JSON.stringify([e.path, e.type, e.mode, e.size ?? 0, e.linkname ?? '', id])}\n`);
    }
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
