/**
 * What a COPY/ADD puts in its layer: sources found in the build context (or in
 * another image's files for --from), globs expanded, ignore rules applied,
 * directories walked without following their symlinks, and destinations named
 * as docker names them. A source that resolves outside its root (`../x`, a
 * symlink leaving the context) is an error, never a silent copy.
 */
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { lstat, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { SealimgError, errnoCode } from '../errors.js';
import { hasGlob, globToRegExp, type IgnoreRules } from './ignore.js';
import type { LayerEntry } from './tar-writer.js';

export interface SourceRoot {
  /** Host directory the sources are relative to. */
  dir: string;
  /** `the build context` or `image X`, for messages. */
  label: string;
  ignore?: IgnoreRules;
  /**
   * `context`: a symlink that leaves the root is an error. `image`: symlinks
   * resolve inside the root as a chroot would (an image's /etc/x -> /usr/y).
   */
  kind: 'context' | 'image';
}

/** Normalizes a `/`-separated path; `..` that climbs above the start is kept as a leading `..`. */
export function normalize(p: string): string {
  const parts: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..' && parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
    else parts.push(c);
  }
  return parts.join('/');
}

function escapeError(where: string, source: string, root: SourceRoot, why: string): SealimgError {
  return new SealimgError('BUILD_FAILED', `${where}: ${source} is outside ${root.label}${why ? ` (${why})` : ''}`, {
    hint: 'only files inside the build context can be copied; move the file into the context',
  });
}

/**
 * Follows symlinks in `rel` component by component under `root`. Returns the
 * host path of what it names, checked to stay inside the root.
 */
export async function resolveInRoot(root: SourceRoot, rel: string, where: string, source: string): Promise<string> {
  const rootReal = await realpath(root.dir);
  let done: string[] = [];
  let todo = rel.split('/').filter((c) => c !== '' && c !== '.');
  let via = '';
  for (let hops = 0; todo.length > 0; ) {
    const c = todo.shift()!;
    if (c === '..') {
      if (done.length === 0) {
        if (root.kind === 'context') throw escapeError(where, source, root, via);
        continue; // an image's / is its own parent, as in a chroot
      }
      done.pop();
      continue;
    }
    const host = join(rootReal, ...done, c);
    let st;
    try {
      st = await lstat(host);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return join(host, ...todo);
      throw e;
    }
    if (!st.isSymbolicLink()) {
      done.push(c);
      continue;
    }
    if (++hops > 40) throw new SealimgError('BUILD_FAILED', `${where}: ${source}: too many levels of symbolic links`);
    const target = await readlink(host);
    via = `the symlink ${[...done, c].join('/')} points to ${target}`;
    if (target.startsWith('/')) {
      if (root.kind === 'context') throw escapeError(where, source, root, via);
      done = [];
    }
    todo = [...target.split('/').filter((x) => x !== '' && x !== '.'), ...todo];
  }
  return join(rootReal, ...done);
}

/** Expands a glob source into the matching context-relative paths, in sorted order. */
async function expandGlob(root: SourceRoot, pattern: string): Promise<string[]> {
  const parts = pattern.split('/');
  let found: string[] = [''];
  for (const part of parts) {
    const next: string[] = [];
    for (const base of found) {
      if (!hasGlob(part)) {
        next.push(base ? `${base}/${part}` : part);
        continue;
      }
      const re = globToRegExp(part);
      let names: string[];
      try {
        names = await readdir(join(root.dir, base));
      } catch (e) {
        if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') continue;
        throw e;
      }
      for (const n of names.sort()) if (re.test(n)) next.push(base ? `${base}/${n}` : n);
    }
    found = next;
  }
  return found.filter((p) => !root.ignore?.ignores(p));
}

export interface CollectOptions {
  where: string;
  /** Absolute image path; a trailing `/` means "into this directory". */
  dest: string;
  chmod?: number;
}

/** A map from image path to entry: later sources overwrite earlier ones, as files would. */
export type EntryMap = Map<string, LayerEntry>;

function imagePath(p: string): string {
  return normalize(p);
}

/** Adds what one source names (a file, a directory's contents, after globbing) to `out`. */
export async function collectSource(root: SourceRoot, source: string, opts: CollectOptions, out: EntryMap, multi: boolean): Promise<void> {
  const rel = normalize(source.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../')) throw escapeError(opts.where, source, root, '');
  const matches = hasGlob(rel) ? await expandGlob(root, rel) : root.ignore?.ignores(rel) ? [] : [rel];
  if (matches.length === 0) {
    throw new SealimgError('BUILD_FAILED', `${opts.where}: ${source}: no such file or directory in ${root.label}${root.ignore?.file && !hasGlob(rel) && root.ignore.ignores(rel) ? ` (${root.ignore.file} excludes it)` : ''}`);
  }
  const intoDir = opts.dest.endsWith('/') || multi || matches.length > 1;
  if (matches.length > 1 && !opts.dest.endsWith('/')) {
    throw new SealimgError('SEALFILE_SYNTAX', `${opts.where}: ${source} matches ${matches.length} files; the destination must be a directory ending in "/"`);
  }
  for (const m of matches) {
    const host = await resolveInRoot(root, m, opts.where, source);
    let st;
    try {
      st = await stat(host);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new SealimgError('BUILD_FAILED', `${opts.where}: ${source}: no such file or directory in ${root.label}`);
      throw e;
    }
    if (st.isDirectory()) {
      const destDir = imagePath(opts.dest);
      if (destDir !== '') addEntry(out, { path: destDir, type: 'dir', mode: opts.chmod ?? st.mode & 0o7777 });
      await walk(root, host, m, destDir, opts, out);
    } else if (st.isFile()) {
      const dest = intoDir ? imagePath(`${opts.dest}/${basename(m)}`) : imagePath(opts.dest);
      if (dest === '') throw new SealimgError('SEALFILE_SYNTAX', `${opts.where}: cannot copy the file ${source} onto /`);
      addEntry(out, { path: dest, type: 'file', mode: opts.chmod ?? st.mode & 0o7777, size: st.size, source: host });
    } else {
      throw new SealimgError('BUILD_FAILED', `${opts.where}: ${source} is not a regular file, directory or symlink`);
    }
  }
}

function addEntry(out: EntryMap, e: LayerEntry): void {
  // A file over a directory (or the reverse) replaces everything under it.
  const old = out.get(e.path);
  if (old && old.type === 'dir' && e.type !== 'dir') {
    for (const k of out.keys()) if (k.startsWith(`${e.path}/`)) out.delete(k);
  }
  out.set(e.path, e);
}

/**
 * Walks a directory, not following symlinks, skipping ignored paths. With
 * synchronous calls: metadata is in the page cache, and each await of an
 * lstat or readlink was a round trip to libuv's thread pool (the 3135 entries
 * of bench/build.sh's lib tree took 0.3 s to list; about 0.1 s like this).
 */
async function walk(root: SourceRoot, hostDir: string, relDir: string, destDir: string, opts: CollectOptions, out: EntryMap): Promise<void> {
  const relOf = (name: string): string => (relDir ? `${relDir}/${name}` : name);
  const exceptions = root.ignore?.hasExceptions ?? false;
  for (const name of readdirSync(hostDir).sort()) {
    const rel = relOf(name);
    const ignored = root.ignore?.ignores(rel) ?? false;
    if (ignored && !exceptions) continue;
    const host = join(hostDir, name);
    const dest = destDir ? `${destDir}/${name}` : name;
    const st = lstatSync(host, { bigint: true });
    const mode = opts.chmod ?? Number(st.mode & 0o7777n);
    if (st.isDirectory()) {
      // With `!` exceptions an ignored directory may still hold included files.
      if (!ignored) addEntry(out, { path: dest, type: 'dir', mode });
      await walk(root, host, rel, dest, opts, out);
    } else if (ignored) {
      continue;
    } else if (st.isFile()) {
      addEntry(out, { path: dest, type: 'file', mode, size: Number(st.size), source: host, identity: fileIdentity(st), ...(st.nlink > 1n ? { inode: `${st.dev}:${st.ino}` } : {}) });
    } else if (st.isSymbolicLink()) {
      // Copied as a link, as docker does; its target is checked like a source so the context cannot leak.
      const target = readlinkSync(host);
      if (root.kind === 'context') {
        const resolved = normalize(target.startsWith('/') ? target : `${relDir}/${target}`);
        if (target.startsWith('/') || resolved === '..' || resolved.startsWith('../')) {
          throw escapeError(opts.where, rel, root, `the symlink points to ${target}`);
        }
      }
      addEntry(out, { path: dest, type: 'symlink', mode: 0o777, linkname: target });
    } else {
      throw new SealimgError('BUILD_FAILED', `${opts.where}: ${rel} in ${root.label} is a socket, fifo or device; a layer cannot hold it`);
    }
  }
}

/** A file as it is on disk (device, inode, size, mtime and ctime in ns: any write changes ctime), for the build cache's key. */
export function fileIdentity(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}
