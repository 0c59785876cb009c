/**
 * What a chunked upload has reached, kept on disk so that a push killed
 * half-way resumes on the next run instead of sending the blob again: the
 * upload's location and the bytes the registry confirmed. One small JSON file
 * per registry, repository and digest, replaced atomically after each chunk.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './fsutil.js';

export interface UploadState {
  /** The upload URL the registry last handed us. */
  location: string;
  /** Bytes the registry confirmed (its Range end + 1). */
  offset: number;
  digest: string;
  size: number;
}

/** Registries drop idle uploads after a week (distribution's default purge age): so do we. */
const STALE_MS = 7 * 24 * 3600 * 1000;
const pruned = new Set<string>();

/** Removes saved uploads no registry still holds; once per directory and process. */
async function pruneStale(dir: string): Promise<void> {
  if (pruned.has(dir)) return;
  pruned.add(dir);
  const now = Date.now();
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    const s = await stat(path).catch(() => undefined);
    if (s && now - s.mtimeMs > STALE_MS) await rm(path, { force: true }).catch(() => undefined);
  }
}

export class UploadStateFile {
  private readonly path: string;

  constructor(private readonly dir: string, origin: string, repo: string, readonly digest: string) {
    const key = createHash('sha256').update(`${origin}\n${repo}\n${digest}`).digest('hex').slice(0, 32);
    this.path = join(dir, `${key}.json`);
  }

  async read(): Promise<UploadState | undefined> {
    await pruneStale(this.dir);
    try {
      const s = JSON.parse(await readFile(this.path, 'utf8')) as UploadState;
      if (s.digest !== this.digest || typeof s.location !== 'string' || !Number.isSafeInteger(s.offset) || s.offset < 0) return undefined;
      return s;
    } catch {
      return undefined; // missing or damaged: start a new upload
    }
  }

  /** Best effort: a state that cannot be saved costs a resume, never the push. */
  async write(s: UploadState): Promise<void> {
    await writeFileAtomic(this.path, JSON.stringify(s), 0o600).catch(() => undefined);
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
