/**
 * A working copy of an image's files on the build host: unpacked from its
 * layers (whiteouts applied), kept up to date with each new layer, and
 * compared before and after a RUN so that what the command added, changed
 * or deleted becomes the next layer (deletions as OCI whiteouts).
 */
import { spawn } from 'node:child_process';
import { chmod, copyFile, link, lstat, mkdir, readdir, readlink, rm, symlink } from 'node:fs/promises';
import { rmSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { ReadOnlyStore } from '../content/store.js';
import { SealimgError } from '../errors.js';
import { OCI_LAYER_ZSTD } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import { normalize } from './sources.js';
import type { LayerEntry } from './tar-writer.js';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** Unpacks one layer blob into `dir`, applying its whiteouts to what lower layers left there. */
export async function unpackLayer(store: ReadOnlyStore, desc: Descriptor, dir: string, signal?: AbortSignal): Promise<void> {
  const body = await store.fetch(desc, signal);
  const stages: NodeJS.ReadWriteStream[] = [];
  const mt = desc.mediaType;
  let zstd: ReturnType<typeof spawn> | undefined;
  if (/gzip$/.test(mt)) stages.push(createGunzip());
  else if (mt === OCI_LAYER_ZSTD || /zstd$/.test(mt)) {
    zstd = spawn('zstd', ['-q', '-d', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
  } else if (!/tar$/.test(mt)) {
    throw new SealimgError('UNSUPPORTED', `layer ${desc.digest} has media type ${mt}, which sealimg cannot unpack`);
  }
  const written = new Set<string>();
  const { x: extract } = await import('tar'); // loaded when needed: ~40 ms of start-up otherwise
  const unpack = extract({
    cwd: dir,
    strict: true,
    chmod: true,
    processUmask: 0,
    preserveOwner: false,
    filter: (path: string) => {
      const p = normalize(path);
      const slash = p.lastIndexOf('/');
      const parent = p.slice(0, slash + 1);
      const name = p.slice(slash + 1);
      if (name === OPAQUE) {
        // Everything lower layers put in this directory goes; this layer's own entries stay.
        const host = join(dir, parent);
        let names: string[] = [];
        try {
          names = readdirSync(host);
        } catch {
          return false;
        }
        for (const n of names) if (!written.has(`${parent}${n}`)) rmSync(join(host, n), { recursive: true, force: true });
        return false;
      }
      if (name.startsWith(WHITEOUT)) {
        rmSync(join(dir, parent, name.slice(WHITEOUT.length)), { recursive: true, force: true });
        return false;
      }
      written.add(p);
      return true;
    },
  });
  if (zstd) {
    const child = zstd;
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new SealimgError('ARCHIVE_INVALID', `zstd could not decompress layer ${desc.digest}`))));
    });
    await Promise.all([pipeline(body, child.stdin!), pipeline(child.stdout!, unpack), exited]);
  } else {
    await pipeline([body, ...stages, unpack], { signal });
  }
}

/** Writes entries (a layer about to be, or just, written) into the working copy. */
export async function applyEntries(entries: LayerEntry[], dir: string): Promise<void> {
  for (const e of [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const host = join(dir, e.path);
    if (e.type === 'whiteout') {
      await rm(host, { recursive: true, force: true });
      continue;
    }
    await mkdir(dirname(host), { recursive: true });
    const old = await lstat(host).catch(() => undefined);
    if (old && (e.type !== 'dir' || !old.isDirectory())) await rm(host, { recursive: true, force: true });
    if (e.type === 'dir') {
      await mkdir(host, { recursive: true });
      await chmod(host, e.mode);
    } else if (e.type === 'file') {
      await copyFile(e.source!, host);
      await chmod(host, e.mode);
    } else if (e.type === 'hardlink') {
      await link(join(dir, e.linkname!), host);
    } else {
      await symlink(e.linkname!, host);
    }
  }
}

interface Stamp {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  size: bigint;
  mtime: bigint;
  ctime: bigint;
  ino: bigint;
  dev: bigint;
  nlink: bigint;
  link?: string;
}

export type Snapshot = Map<string, Stamp>;

/** Records every path under `dir` with what tells a change: type, mode, size, times, inode, link target. */
export async function snapshot(dir: string): Promise<Snapshot> {
  const out: Snapshot = new Map();
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const st = await lstat(join(dir, r), { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
      const stamp: Stamp = { type, mode: Number(st.mode & 0o7777n), size: st.size, mtime: st.mtimeNs, ctime: st.ctimeNs, ino: st.ino, dev: st.dev, nlink: st.nlink };
      if (type === 'symlink') stamp.link = await readlink(join(dir, r));
      out.set(r, stamp);
      if (type === 'dir') await visit(r);
    }
  };
  await visit('');
  return out;
}

/**
 * What changed between two snapshots, as layer entries: new and changed
 * paths with their current content, deleted ones as whiteouts (only the
 * topmost deleted path: a whiteout of a directory hides all below it).
 */
export function diffSnapshots(before: Snapshot, after: Snapshot, dir: string): LayerEntry[] {
  const out: LayerEntry[] = [];
  for (const [p, s] of after) {
    const old = before.get(p);
    const same = old !== undefined && old.type === s.type && old.mode === s.mode && old.link === s.link &&
      (s.type === 'dir' || (old.size === s.size && old.mtime === s.mtime && old.ctime === s.ctime && old.ino === s.ino));
    if (same) continue;
    if (s.type === 'other') throw new SealimgError('BUILD_FAILED', `RUN made ${p}, a socket, fifo or device; a layer cannot hold it`);
    if (s.type === 'dir') out.push({ path: p, type: 'dir', mode: s.mode });
    else if (s.type === 'file') out.push({ path: p, type: 'file', mode: s.mode, size: Number(s.size), source: join(dir, p), ...(s.nlink > 1n ? { inode: `${s.dev}:${s.ino}` } : {}) });
    else out.push({ path: p, type: 'symlink', mode: 0o777, linkname: s.link! });
  }
  for (const p of before.keys()) {
    if (after.has(p)) continue;
    const slash = p.lastIndexOf('/');
    if (slash > 0) {
      const parent = after.get(p.slice(0, slash));
      if (!parent) continue; // the parent's own whiteout covers it
      if (parent.type !== 'dir') continue; // the parent became a file or link, which replaces the whole directory
    }
    out.push({ path: p, type: 'whiteout', mode: 0 });
  }
  return out;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last 64 KiB of stdout and stderr, interleaved. */
  output: string;
}

/** Runs `argv` with `cwd` and `env`, passing its output on and keeping the tail of it. */
export function runCommand(argv: string[], cwd: string, env: Record<string, string>, onOutput?: (chunk: Buffer) => void, signal?: AbortSignal): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], signal });
    let tail = Buffer.alloc(0);
    const keep = (d: Buffer): void => {
      onOutput?.(d);
      tail = Buffer.concat([tail, d]);
      if (tail.length > 65536) tail = tail.subarray(tail.length - 65536);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') resolve({ code: 127, signal: null, output: `${argv[0]}: command not found\n` });
      else reject(e);
    });
    child.on('close', (code, sig) => resolve({ code, signal: sig, output: tail.toString('utf8') }));
  });
}
