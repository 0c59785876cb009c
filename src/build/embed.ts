/**
 * Embedding container images into a cluster image, so it installs with no
 * internet: each image is copied (copy(), several at once, with a bound) from
 * its registry into a directory in the CNCF distribution storage layout, with
 * the registry host dropped from the repository path as sealos does
 * (`docker.io/library/nginx:1.25` -> `library/nginx:1.25`), so the registry the
 * cluster runs serves it unchanged. Two images whose paths collide once the
 * host is dropped are an error naming both.
 *
 * Then the directory becomes layers: every file of 1 MiB or more (in practice
 * a blob's `data`) is a layer of its own, uncompressed and deterministic, so
 * one container image gives the same layers in every cluster image that
 * carries it; everything else (links, small blobs, directories) is one more
 * layer. `single` makes the whole directory one layer, as sealos does.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { copy } from '../content/copy.js';
import { openSource, parseLocation, type OpenContext } from '../content/locations.js';
import { canClose } from '../content/store.js';
import { SealimgError, isSealimgError } from '../errors.js';
import { parseReference } from '../oci/reference.js';
import type { Platform } from '../oci/types.js';
import type { LayerEntry } from './tar-writer.js';

/** Files this big get a layer of their own. */
export const OWN_LAYER_MIN = 1 << 20;
/** Where the registry directory lives in a cluster image (sealos' layout). */
export const REGISTRY_DIR = 'registry';

export type RegistryLayers = 'split' | 'single';

export interface EmbedOptions {
  open: OpenContext;
  /** Keep only this platform out of a multi-arch index (unless allPlatforms, or the reference pins a digest). */
  platform?: Platform;
  allPlatforms?: boolean;
  /** Images copied at once (default 3; sealos copies one at a time). */
  concurrency?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

/** Where an image goes in the embedded registry: its repository path without the host, and the ref there. */
export function embeddedName(image: string): { repository: string; ref: string; source: string } {
  const r = parseReference(image);
  // A reference pinned by digest keeps every platform and gets a tag that names the digest:
  // the registry serves a manifest by digest only when a tag links it into the repository.
  const ref = r.tag !== undefined && r.digest === undefined ? r.tag : `${r.digest!.replace(':', '-')}`;
  return { repository: r.repository, ref, source: `${r.registry}/${r.repository}` };
}

/** An `images/skopeo/tar.txt` entry: a local archive and the name it gets in the embedded registry. */
export interface ArchiveImage {
  kind: 'docker-archive' | 'oci-archive';
  /** Absolute path of the archive. */
  path: string;
  /** `REPO:TAG` as written after the `@`. */
  name: string;
}

/** Parses `docker-archive:PATH@REPO[:TAG]`; PATH is relative to images/skopeo/, as the list is. */
export function parseArchiveLine(line: string, skopeoDir: string): ArchiveImage {
  const m = /^(docker-archive|oci-archive):([^@]+)@(.+)$/.exec(line.trim());
  if (!m) throw new SealimgError('BUILD_FAILED', `images/skopeo/tar.txt: "${line}" is not docker-archive:PATH@REPO or oci-archive:PATH@REPO`);
  const rel = m[2]!;
  if (rel.startsWith('/') || rel.split('/').includes('..')) {
    throw new SealimgError('BUILD_FAILED', `images/skopeo/tar.txt: ${rel} must be a path inside images/skopeo/`);
  }
  return { kind: m[1] as ArchiveImage['kind'], path: join(skopeoDir, rel), name: m[3]! };
}

/** Copies `images` (normalized references) and `archives` into the distribution directory `dir`. */
export async function embedImages(images: string[], dir: string, opts: EmbedOptions, archives: ArchiveImage[] = []): Promise<void> {
  const owners = new Map<string, string>();
  const sources = [...images.map((image) => ({ image, ...embeddedName(image) })), ...archives.map((a) => ({ image: `${a.kind}:${a.path}`, ...embeddedName(a.name) }))];
  for (const { repository, source } of sources) {
    const other = owners.get(repository);
    if (other !== undefined && other !== source) {
      throw new SealimgError('BUILD_FAILED', `${other} and ${source} would both be ${repository} in the embedded registry (the registry host is dropped from the path)`, {
        hint: 'embed only one of them, or retag one under another repository path',
      });
    }
    owners.set(repository, source);
  }
  const { DistributionStore } = await import('../content/distribution/store.js');
  const dst = await DistributionStore.open(dir, { create: true });
  // The first failure stops the other copies.
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sources.length && !signal.aborted) {
      const { image, repository, ref } = sources[next++]!;
      const archive = image.startsWith('docker-archive:') || image.startsWith('oci-archive:');
      const r = archive ? undefined : parseReference(image);
      const src = await openSource(parseLocation(archive ? image : `docker://${image}`, 'registry'), opts.open);
      try {
        const pinned = r?.digest !== undefined;
        // An archive holds one image: '' names it.
        await copy(src, archive ? '' : r!.digest ?? r!.tag!, dst, `${repository}:${ref}`, {
          platform: pinned || opts.allPlatforms ? undefined : opts.platform,
          signal,
        });
        opts.log?.(`  embedded ${image} as ${repository}:${ref}`);
      } catch (e) {
        stop.abort();
        throw new SealimgError(isSealimgError(e) ? e.code : 'IO', `embedding ${image}: ${(e as Error).message}`, { cause: e, hint: isSealimgError(e) ? e.hint : undefined });
      } finally {
        if (canClose(src)) await src.close();
      }
    }
  };
  const n = Math.max(1, Math.min(opts.concurrency ?? 3, sources.length));
  const results = await Promise.allSettled(Array.from({ length: n }, worker));
  const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * The layers of a registry directory, as entry lists: the small files and
 * every directory first, then one list per big file. Modes are fixed (0755
 * directories, 0644 files) so the layers do not depend on the umask.
 */
export async function registryLayers(dir: string, mode: RegistryLayers): Promise<Array<{ entries: LayerEntry[]; what: string }>> {
  const small: LayerEntry[] = [{ path: REGISTRY_DIR, type: 'dir', mode: 0o755 }];
  const big: Array<{ entries: LayerEntry[]; what: string }> = [];
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, r));
      const path = `${REGISTRY_DIR}/${r}`;
      if (st.isDirectory()) {
        small.push({ path, type: 'dir', mode: 0o755 });
        await visit(r);
      } else if (st.isFile()) {
        const e: LayerEntry = { path, type: 'file', mode: 0o644, size: st.size, source: join(dir, r) };
        if (mode === 'split' && st.size >= OWN_LAYER_MIN) big.push({ entries: [e], what: `registry blob ${r.split('/').slice(-2, -1)[0]}` });
        else small.push(e);
      } else if (st.isSymbolicLink()) {
        throw new SealimgError('BUILD_FAILED', `the embedded registry holds a symlink (${r}); it should hold none`);
      }
    }
  };
  await visit('');
  return [{ entries: small, what: mode === 'split' ? 'registry links and small blobs' : 'registry' }, ...big];
}
