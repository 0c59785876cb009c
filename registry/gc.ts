/**
 * Garbage collection of a distribution storage directory: mark every blob a
 * kept manifest reaches, sweep the rest. Without `deleteUntagged` every
 * manifest revision is kept (as the CNCF registry's gc does); with it, only
 * what tags reach, plus the referrers of what is kept.
 *
 * It is safe beside a running server: a blob younger than the grace period is
 * never swept (an upload may be about to be referenced by a manifest, and the
 * server refreshes the time of blobs clients find by HEAD or mount), and a
 * manifest push naming a blob swept meanwhile is refused, never stored broken.
 */
import { join } from 'node:path';
import { withLock } from '../src/content/fsutil.js';
import { isManifest } from '../src/oci/mediatypes.js';
import { childrenOf } from '../src/oci/validate.js';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { removeDir, type DistributionStorage } from '../src/content/distribution/storage.js';

export interface GcOptions {
  dryRun?: boolean;
  deleteUntagged?: boolean;
  /** Blobs younger than this are spared (default one hour). */
  graceMs?: number;
  /** Upload sessions untouched for longer than this are removed (default 7 days, as the CNCF registry's purge). */
  uploadMaxAgeMs?: number;
  signal?: AbortSignal;
}

export interface GcReport {
  /** Blobs deleted (or that would be, with dryRun). */
  blobs: Array<{ digest: string; size: number }>;
  bytes: number;
  /** Untagged manifests removed from their repositories. */
  manifests: Array<{ repository: string; digest: string }>;
  /** Unreferenced blobs kept because they are younger than the grace period. */
  spared: number;
  /** Abandoned upload sessions removed. */
  uploads: number;
}

export async function collectGarbage(storage: DistributionStorage, opts: GcOptions = {}): Promise<GcReport> {
  const dir = join(storage.layout.v2, '_sealimg');
  await mkdir(dir, { recursive: true });
  return withLock(join(dir, 'gc.lock'), () => run(storage, opts), 5_000);
}

async function run(storage: DistributionStorage, opts: GcOptions): Promise<GcReport> {
  const grace = opts.graceMs ?? 3_600_000;
  const started = Date.now();
  const marked = new Set<string>();
  const report: GcReport = { blobs: [], bytes: 0, manifests: [], spared: 0, uploads: 0 };

  for (const name of await storage.repositories()) {
    opts.signal?.throwIfAborted();
    const repo = storage.repository(name);
    const revisions = await repo.revisions();
    const kept = new Set<string>();
    const keep = async (digest: string): Promise<void> => {
      if (kept.has(digest)) return;
      kept.add(digest);
      marked.add(digest);
      const m = await storage.readManifestBlob(digest);
      if (!m) return;
      for (const child of childrenOf(m.parsed)) {
        if (isManifest(child.mediaType)) await keep(child.digest);
        else marked.add(child.digest);
      }
    };
    if (!opts.deleteUntagged) {
      for (const d of revisions) await keep(d);
      continue;
    }
    for (const tag of await repo.tags()) {
      const d = await repo.resolveTag(tag);
      if (d) await keep(d);
    }
    // Referrers (signatures, SBOMs) of a kept manifest are kept, to a fixed point.
    for (let changed = true; changed; ) {
      changed = false;
      for (const d of revisions) {
        if (kept.has(d)) continue;
        const subject = (await storage.readManifestBlob(d))?.parsed.manifest.subject;
        if (subject && kept.has(subject.digest)) {
          await keep(d);
          changed = true;
        }
      }
    }
    for (const d of revisions) {
      if (kept.has(d)) continue;
      report.manifests.push({ repository: name, digest: d });
      if (!opts.dryRun) await repo.deleteManifest(d);
    }
  }

  const swept = new Set<string>();
  for await (const b of storage.blobs()) {
    opts.signal?.throwIfAborted();
    if (marked.has(b.digest)) continue;
    if (started - b.mtimeMs < grace) {
      report.spared++;
      continue;
    }
    report.blobs.push({ digest: b.digest, size: b.size });
    report.bytes += b.size;
    swept.add(b.digest);
    if (!opts.dryRun) await storage.deleteBlob(b.digest);
  }
  const maxAge = opts.uploadMaxAgeMs ?? 7 * 86_400_000;
  for (const name of await storage.repositories('_uploads')) {
    const dir = storage.layout.uploadsDir(name);
    for (const id of await readdir(dir).catch(() => [] as string[])) {
      // The data file's mtime is the last chunk received: an upload still moving is never old.
      const s = await stat(join(dir, id, 'data')).catch(() => stat(join(dir, id)).catch(() => undefined));
      if (!s || started - s.mtimeMs < maxAge) continue;
      report.uploads++;
      if (!opts.dryRun) await removeDir(join(dir, id));
    }
  }
  if (!opts.dryRun && swept.size > 0) {
    // Links to swept blobs would only answer 404 later; remove them now.
    for (const name of await storage.repositories('_layers')) {
      const repo = storage.repository(name);
      for (const d of await repo.layers()) if (swept.has(d)) await repo.unlinkBlob(d);
    }
  }
  return report;
}
