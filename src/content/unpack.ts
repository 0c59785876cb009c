/**
 * Unpacks an image's layers into a directory, in order, applying OCI
 * whiteouts (image-spec v1.1.0 layer.md): `.wh.NAME` deletes NAME from the
 * layers below, `.wh..wh..opq` empties its directory of what those layers put
 * there. The runner uses it to read cluster images without a container runtime.
 *
 * Paths from a layer are never trusted: `..`, absolute link targets for hard
 * links, and writes through a symlink are refused, so nothing lands outside `dir`.
 * Entries are applied strictly one after another, so a whiteout and a new file
 * for the same path in one layer always end in the layer's order.
 */
import { createWriteStream } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Parser, type ReadEntry } from 'tar';
import { SealimgError, errnoCode } from '../errors.js';
import { isImageManifest, isIndex } from '../oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform } from '../oci/types.js';
import { parseImageConfig, parseManifest } from '../oci/validate.js';
import { platformMatches } from './copy.js';
import { fetchAll, type ReadOnlyStore } from './store.js';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** A layer entry's path, made relative and checked; throws on anything that could leave the root. */
export function safeEntryPath(raw: string, where: string): string {
  const p = posix.normalize(raw.replace(/^(\.\/|\/)+/, ''));
  if (p === '.' || p === '') return '';
  if (p.split('/').includes('..') || posix.isAbsolute(p)) {
    throw new SealimgError('ARCHIVE_INVALID', `${where}: entry "${raw}" leaves the root`);
  }
  return p.replace(/\/$/, '');
}

/**
 * What one layer's unpacking knows about the tree without asking the file
 * system again: thousands of small files would otherwise cost an lstat per
 * parent, a mkdir and an lstat each. Anything removed is forgotten.
 */
class Known {
  /** Real directories (relative paths), checked or made by us. */
  readonly dirs = new Set<string>(['']);
  /** Directories we made empty: what is in them is exactly what `written` says. */
  readonly fresh = new Set<string>();
  /** Paths this layer wrote. */
  readonly written = new Set<string>();

  /** Small new files being written in the background, oldest first. */
  private pending: Array<Promise<void>> = [];

  /** Runs `write` beside the next entries, at most WRITES_AHEAD at once. */
  async background(write: () => Promise<void>): Promise<void> {
    const p = write();
    p.catch(() => undefined); // drain() reports it
    this.pending.push(p);
    if (this.pending.length >= WRITES_AHEAD) await this.pending.shift();
  }

  /** Waits for every background write; the first failure throws. */
  async drain(): Promise<void> {
    const all = this.pending;
    this.pending = [];
    const results = await Promise.allSettled(all);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  forget(rel: string): void {
    for (const set of [this.dirs, this.fresh, this.written]) {
      for (const k of set) if (k === rel || k.startsWith(`${rel}/`)) set.delete(k);
    }
  }
}

/** Fails when any parent of `rel` inside `root` is a symlink: writing through it could escape. */
async function checkParents(root: string, rel: string, where: string, known: Known): Promise<void> {
  const parts = rel.split('/').slice(0, -1);
  let cur = '';
  for (const part of parts) {
    cur = cur ? `${cur}/${part}` : part;
    if (known.dirs.has(cur)) continue;
    try {
      const s = await lstat(join(root, cur));
      if (s.isSymbolicLink()) throw new SealimgError('ARCHIVE_INVALID', `${where}: "${rel}" would be written through the symlink "${part}"`);
      if (s.isDirectory()) known.dirs.add(cur);
      else await rm(join(root, cur), { force: true }); // a file where a directory must be: the layer replaces it
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw e;
    }
  }
}

/** Makes the directory `rel` (and its parents), noting the ones made fresh. */
async function makeDirs(root: string, rel: string, known: Known): Promise<void> {
  if (known.dirs.has(rel)) return;
  const first = await mkdir(join(root, rel), { recursive: true });
  // mkdir returns the first directory it made: it and everything below it up to rel are new and empty.
  if (first !== undefined) {
    for (let d = rel; ; d = posix.dirname(d)) {
      known.fresh.add(d);
      known.dirs.add(d);
      if (join(root, d) === first || d === '.' || !d.includes('/')) break;
    }
  }
  known.dirs.add(rel);
}

/** Small files written at once: one by one, open/write/close/utimes round trips cost more than the bytes. */
const WRITES_AHEAD = 16;
const SMALL_FILE = 1 << 20;

const UMASK = process.umask();
const UID = process.getuid?.();
const GID = process.getgid?.();

async function applyEntry(root: string, entry: ReadEntry, known: Known, where: string, asRoot: boolean): Promise<void> {
  const rel = safeEntryPath(entry.path, where);
  const base = posix.basename(rel);
  const parent = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
  if (base === OPAQUE) {
    entry.resume();
    await known.drain();
    const dir = join(root, parent);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const child = parent ? `${parent}/${name}` : name;
      if (!known.written.has(child)) {
        await rm(join(dir, name), { recursive: true, force: true });
        known.forget(child);
      }
    }
    return;
  }
  if (base.startsWith(WHITEOUT)) {
    entry.resume();
    await known.drain();
    const gone = parent ? `${parent}/${base.slice(WHITEOUT.length)}` : base.slice(WHITEOUT.length);
    await rm(join(root, gone), { recursive: true, force: true });
    known.forget(gone);
    return;
  }
  if (rel === '') {
    entry.resume();
    return;
  }
  const isFile = entry.type === 'File' || entry.type === 'OldFile' || entry.type === 'ContiguousFile';
  const mode = (entry.mode ?? 0o644) & 0o7777;
  // A file is made with its mode; the umask may have taken bits the entry asks for, and only then is a chmod needed.
  const needsChmod = (mode & UMASK) !== 0 || mode > 0o777;
  const chownTo = asRoot && entry.uid !== undefined && entry.gid !== undefined && (entry.uid !== UID || entry.gid !== GID) ? [entry.uid, entry.gid] as const : undefined;
  if (isFile && (entry.size ?? 0) <= SMALL_FILE && known.fresh.has(parent) && !known.written.has(rel) && !known.dirs.has(rel)) {
    // A new small file in a directory we made: nothing can be in its way, so it is written in the background.
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    known.written.add(rel);
    const target = join(root, rel);
    const mtime = entry.mtime;
    await known.background(async () => {
      await writeFile(target, Buffer.concat(chunks), { mode, flag: 'wx' });
      if (needsChmod) await chmod(target, mode);
      if (chownTo) await chown(target, ...chownTo);
      if (mtime) await utimes(target, mtime, mtime);
    });
    return;
  }
  // Everything else happens in order, after the background writes.
  await known.drain();
  await checkParents(root, rel, where, known);
  await makeDirs(root, parent, known);
  const target = join(root, rel);
  // In a directory we made, only what we wrote exists: no need to ask.
  const existing = known.fresh.has(parent) && !known.written.has(rel) && !known.dirs.has(rel) ? undefined : await lstat(target).catch(() => undefined);
  known.written.add(rel);
  if (existing && !(existing.isDirectory() && entry.type === 'Directory')) {
    await rm(target, { recursive: true, force: true });
    known.forget(rel);
    known.written.add(rel);
  }
  switch (entry.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      await pipeline(entry, createWriteStream(target, { mode, highWaterMark: 1 << 20 }));
      if (needsChmod) await chmod(target, mode);
      break;
    case 'Directory':
      entry.resume();
      // Made with mkdir's default mode (or there already): directories are few, each gets its mode.
      if (!existing) await makeDirs(root, rel, known);
      await chmod(target, mode);
      break;
    case 'SymbolicLink':
      entry.resume();
      await symlink(entry.linkpath ?? '', target);
      break;
    case 'Link': {
      entry.resume();
      const from = safeEntryPath(entry.linkpath ?? '', where);
      await checkParents(root, from, where, known);
      await link(join(root, from), target);
      break;
    }
    default:
      // Devices and FIFOs have no place in a cluster image's files; say so rather than skip silently.
      entry.resume();
      throw new SealimgError('ARCHIVE_INVALID', `${where}: entry "${entry.path}" is a ${entry.type}, which sealimg does not unpack`);
  }
  if (chownTo) await (entry.type === 'SymbolicLink' ? lchown : chown)(target, ...chownTo);
  if (entry.mtime) {
    if (entry.type === 'SymbolicLink') await lutimes(target, entry.mtime, entry.mtime);
    else await utimes(target, entry.mtime, entry.mtime);
  }
}

/** Applies one layer blob from `store` onto `dir`. */
export async function unpackLayer(store: ReadOnlyStore, layer: Descriptor, dir: string, signal?: AbortSignal): Promise<void> {
  if (/zstd/.test(layer.mediaType)) {
    throw new SealimgError('UNSUPPORTED', `layer ${layer.digest} is zstd-compressed, which Node 20 cannot decompress`);
  }
  const where = `layer ${layer.digest}`;
  const asRoot = process.getuid?.() === 0;
  const known = new Known();
  let chain: Promise<void> = Promise.resolve();
  let failure: unknown;
  const parser = new Parser({ strict: true });
  parser.on('entry', (entry: ReadEntry) => {
    // One entry at a time, in order; the parser waits (back-pressure) until we read each.
    chain = chain.then(async () => {
      if (failure !== undefined) return entry.resume();
      try {
        await applyEntry(dir, entry, known, where, asRoot);
      } catch (e) {
        failure = e;
        entry.resume();
      }
    });
  });
  const body = await store.fetch(layer, signal);
  try {
    await pipeline(body, parser, { signal });
  } catch (e) {
    // Nothing may still be writing when the caller cleans up.
    await chain;
    await known.drain().catch(() => undefined);
    throw failure ?? new SealimgError('ARCHIVE_INVALID', `${where}: not a valid tar stream (${(e as Error).message})`, { cause: e });
  }
  await chain;
  await known.drain().catch((e) => (failure ??= e));
  if (failure !== undefined) throw failure;
}

/**
 * Unpacks the image `desc` names into `dir` (which should be empty) and
 * returns its config. An index is resolved to `platform`'s image.
 */
export async function unpackImage(store: ReadOnlyStore, desc: Descriptor, dir: string, opts: { platform?: Platform; signal?: AbortSignal } = {}): Promise<ImageConfig> {
  let d = desc;
  if (isIndex(d.mediaType)) {
    const index = parseManifest(await fetchAll(store, d, opts.signal), d.mediaType, d.digest).manifest as ImageIndex;
    const want = opts.platform ?? { os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch };
    const hit = index.manifests.find((m) => platformMatches(want, m.platform));
    if (!hit) throw new SealimgError('MANIFEST_UNKNOWN', `${d.digest} has no image for ${want.os}/${want.architecture}`);
    d = hit;
  }
  if (!isImageManifest(d.mediaType)) throw new SealimgError('UNSUPPORTED', `${d.digest} is a ${d.mediaType}, not an image`);
  const manifest = parseManifest(await fetchAll(store, d, opts.signal), d.mediaType, d.digest).manifest as ImageManifest;
  const config = parseImageConfig(await fetchAll(store, manifest.config, opts.signal), manifest.config.digest);
  await mkdir(dir, { recursive: true });
  for (const layer of manifest.layers) await unpackLayer(store, layer, dir, opts.signal);
  return config;
}
