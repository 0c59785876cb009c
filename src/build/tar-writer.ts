/**
 * What a layer's tar is made of: entries, sorted by path, and their headers:
 * POSIX ustar (PAX records only for what ustar cannot hold), uid/gid 0, no
 * user or group names, one fixed mtime, no atime/ctime. The same entries give
 * the same bytes on any machine. tar-worker.ts writes the stream, checking
 * that each file is still the size it was listed with.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { tarHeader } from '../content/tar.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'whiteout';

export interface LayerEntry {
  /** Path in the image, relative, `/`-separated, no leading or trailing slash. */
  path: string;
  type: EntryType;
  /** Permission bits, including setuid/setgid/sticky (07777). */
  mode: number;
  /** Bytes of a file. */
  size?: number;
  /** `dev:ino` of a file with more than one link: files that share it become tar hard links. */
  inode?: string;
  /** Host path a file's bytes are read from. */
  source?: string;
  /** The source's identity on disk when it was listed (sources.ts fileIdentity), for the build cache. */
  identity?: string;
  /** Target of a symlink; for a hard link, the image path of the file it links to. */
  linkname?: string;
}


/**
 * Orders entries bytewise by path (a parent always sorts before its children)
 * and turns files that are one file on disk (same inode) into hard links to
 * the first of them, as tar and umoci do: the bytes are stored once.
 */
export function sortEntries(entries: LayerEntry[]): LayerEntry[] {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(tarPath(a)), Buffer.from(tarPath(b))));
  const first = new Map<string, string>();
  return sorted.map((e) => {
    if (e.type !== 'file' || e.inode === undefined) return e;
    const target = first.get(e.inode);
    if (target === undefined) {
      first.set(e.inode, e.path);
      return e;
    }
    return { path: e.path, type: 'hardlink', mode: e.mode, linkname: target };
  });
}

/** The name an entry has in the tar: whiteouts become `.wh.<name>` (image-spec layer.md). */
export function tarPath(e: LayerEntry): string {
  if (e.type !== 'whiteout') return e.path;
  const slash = e.path.lastIndexOf('/');
  return `${e.path.slice(0, slash + 1)}.wh.${e.path.slice(slash + 1)}`;
}

/** The header block(s) of one entry, its mtime set to `mtime` (seconds). */
export function entryHeader(e: LayerEntry, mtime: number): Buffer {
  const flag = e.type === 'dir' ? '5' : e.type === 'symlink' ? '2' : e.type === 'hardlink' ? '1' : '0';
  return tarHeader({
    name: e.type === 'dir' ? `${tarPath(e)}/` : tarPath(e),
    flag,
    mode: e.type === 'whiteout' ? 0 : e.mode,
    size: e.type === 'file' ? e.size ?? 0 : 0,
    mtime,
    linkname: e.linkname,
  });
}

/** A piece of the tar stream; `stored` marks file bytes that are already compressed. */
export interface TarChunk {
  data: Buffer;
  stored: boolean;
  /** The consumer's claim on the memory behind `data`; released once it no longer reads it. */
  claim: Claim;
}

/**
 * A claim on reusable memory (a page of tar-thread.ts): once every claim is
 * released the memory is filled with later bytes, so a consumer that keeps
 * bytes past the call that gave them (a write in flight, a member being
 * deflated) releases only when done. A claim not released is only garbage.
 */
export interface Claim {
  /** Another claim on the same memory, for a part kept longer than the rest. */
  also(): Claim;
  /** Idempotent. */
  release(): void;
}

/** Names of files that are compressed already, whatever their first bytes. */
export const COMPRESSED_EXT = /\.(gz|tgz|zst|zstd|xz|txz|bz2|tbz2?|lz4|lzma|zip|jar|war|whl|7z|rar|png|jpe?g|gif|webp|mp4|woff2?)$/i;

/** True when a file's first bytes are a compressed format's magic: deflating them again gains nothing. */
export function looksCompressed(head: Buffer): boolean {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return true; // gzip (also every gzip layer blob)
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return true; // zstd
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true; // xz
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return true;
  if (head.length >= 4 && head.readUInt32BE(0) === 0x504b0304) return true; // zip, jar
  if (head.length >= 8 && head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return true; // png
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return true; // jpeg
  return false;
}

/**
 * True when at most 1% of the tar of `entries` would be deflated: nearly all
 * its bytes are files compressed already (registry blobs, archives). Such a
 * layer is kept as a plain tar: gzip would only wrap the same bytes, and the
 * layer's digest is then its diffID, hashed once. Reads the first bytes of
 * files, largest first, and stops as soon as the answer is known.
 */
export function mostlyCompressed(entries: LayerEntry[]): boolean {
  const files = entries.filter((e) => e.type === 'file' && e.size && e.source).sort((a, b) => b.size! - a.size!);
  const total = entries.length * 512 + files.reduce((n, e) => n + e.size!, 0);
  let plain = entries.length * 512;
  const head = Buffer.alloc(16);
  for (const e of files) {
    if (plain * 100 > total) return false;
    if (COMPRESSED_EXT.test(e.path)) continue;
    const fd = openSync(e.source!, 'r');
    try {
      if (!looksCompressed(head.subarray(0, readSync(fd, head, 0, head.length, 0)))) plain += e.size!;
    } finally {
      closeSync(fd);
    }
  }
  return plain * 100 <= total;
}
