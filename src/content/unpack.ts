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
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, readdir, rm, symlink, utimes } from 'node:fs/promises';
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

/** Fails when any parent of `rel` inside `root` is a symlink: writing through it could escape. */
async function checkParents(root: string, rel: string, where: string): Promise<void> {
  const parts = rel.split('/').slice(0, -1);
  let cur = root;
  for (const part of parts) {
    cur = join(cur, part);
    try {
      const s = await lstat(cur);
      if (s.isSymbolicLink()) throw new SealimgError('ARCHIVE_INVALID', `${where}: "${rel}" would be written through the symlink "${part}"`);
      if (!s.isDirectory()) await rm(cur, { force: true }); // a file where a directory must be: the layer replaces it
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw e;
    }
  }
}

async function applyEntry(root: string, entry: ReadEntry, written: Set<string>, where: string, asRoot: boolean): Promise<void> {
  const rel = safeEntryPath(entry.path, where);
  const base = posix.basename(rel);
  const parent = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
  if (base === OPAQUE) {
    entry.resume();
    const dir = join(root, parent);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const child = parent ? `${parent}/${name}` : name;
      if (!written.has(child)) await rm(join(dir, name), { recursive: true, force: true });
    }
    return;
  }
  if (base.startsWith(WHITEOUT)) {
    entry.resume();
    await rm(join(root, parent, base.slice(WHITEOUT.length)), { recursive: true, force: true });
    return;
  }
  if (rel === '') {
    entry.resume();
    return;
  }
  await checkParents(root, rel, where);
  const target = join(root, rel);
  await mkdir(dirname(target), { recursive: true });
  written.add(rel);
  const existing = await lstat(target).catch(() => undefined);
  if (existing && !(existing.isDirectory() && entry.type === 'Directory')) await rm(target, { recursive: true, force: true });
  const mode = (entry.mode ?? 0o644) & 0o7777;
  switch (entry.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      await pipeline(entry, createWriteStream(target, { mode }));
      await chmod(target, mode);
      break;
    case 'Directory':
      entry.resume();
      await mkdir(target, { recursive: true });
      await chmod(target, mode);
      break;
    case 'SymbolicLink':
      entry.resume();
      await symlink(entry.linkpath ?? '', target);
      break;
    case 'Link': {
      entry.resume();
      const from = safeEntryPath(entry.linkpath ?? '', where);
      await checkParents(root, from, where);
      await link(join(root, from), target);
      break;
    }
    default:
      // Devices and FIFOs have no place in a cluster image's files; say so rather than skip silently.
      entry.resume();
      throw new SealimgError('ARCHIVE_INVALID', `${where}: entry "${entry.path}" is a ${entry.type}, which sealimg does not unpack`);
  }
  if (asRoot && entry.uid !== undefined && entry.gid !== undefined) {
    await (entry.type === 'SymbolicLink' ? lchown : chown)(target, entry.uid, entry.gid);
  }
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
  const written = new Set<string>();
  let chain: Promise<void> = Promise.resolve();
  let failure: unknown;
  const parser = new Parser({ strict: true });
  parser.on('entry', (entry: ReadEntry) => {
    // One entry at a time, in order; the parser waits (back-pressure) until we read each.
    chain = chain.then(async () => {
      if (failure !== undefined) return entry.resume();
      try {
        await applyEntry(dir, entry, written, where, asRoot);
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
    throw failure ?? new SealimgError('ARCHIVE_INVALID', `${where}: not a valid tar stream (${(e as Error).message})`, { cause: e });
  }
  await chain;
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
