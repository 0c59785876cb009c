/**
 * A deterministic tar stream from a list of entries: POSIX ustar headers
 * (PAX records only for what ustar cannot hold), sorted by path, uid/gid 0, no
 * user or group names, one fixed mtime, no atime/ctime. The same entries give
 * the same bytes on any machine. File bodies are streamed from disk, and a
 * file whose size changed since it was listed fails the stream.
 */
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ReadAhead } from '../content/fsutil.js';
import { END_OF_ARCHIVE, padding, tarHeader } from '../content/tar.js';
import { SealimgError } from '../errors.js';

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
}

const COMPRESSED_EXT = /\.(gz|tgz|zst|zstd|xz|txz|bz2|tbz2?|lz4|lzma|zip|jar|war|whl|7z|rar|png|jpe?g|gif|webp|mp4|woff2?)$/i;

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

function changedError(source: string, grew: boolean): SealimgError {
  return new SealimgError('BUILD_FAILED', `${source} ${grew ? 'grew' : 'shrank'} while it was being added to a layer`);
}

/** A large file's bytes in pieces of at most 1 MiB, checked to be exactly `size` long; the next piece is read while this one is used. */
async function* readPieces(source: string, size: number): AsyncGenerator<Buffer> {
  const fh = await open(source, 'r');
  const PIECE = 1 << 20;
  // A fresh buffer per read: the consumer keeps chunks while later ones are read.
  const readAt = async (at: number): Promise<Buffer> => {
    const buf = Buffer.allocUnsafe(Math.min(PIECE, size - at));
    const { bytesRead } = await fh.read(buf, 0, buf.length, at);
    if (bytesRead === 0) throw changedError(source, false);
    return bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
  };
  let next: Promise<Buffer> | undefined;
  try {
    let at = 0;
    next = readAt(0);
    while (next) {
      const piece: Buffer = await next;
      at += piece.length;
      next = at < size ? readAt(at) : undefined;
      next?.catch(() => undefined); // awaited on the next turn, or dropped if the consumer stops
      yield piece;
    }
    if ((await fh.read(Buffer.alloc(1), 0, 1, size)).bytesRead !== 0) throw changedError(source, true);
  } finally {
    await next?.catch(() => undefined);
    await fh.close();
  }
}

/**
 * The tar of `entries` (already sorted) as chunks, every mtime set to `mtime`
 * (seconds). Small files are read ahead of the writer (ReadAhead).
 */
export async function* tarChunks(entries: LayerEntry[], mtime: number): AsyncGenerator<TarChunk> {
  const ahead = new ReadAhead(entries.map((e) => (e.type === 'file' && e.size ? { path: e.source!, size: e.size } : undefined)));
  try {
    for (const [i, e] of entries.entries()) {
      const whole = ahead.take(i);
      yield { data: entryHeader(e, mtime), stored: false };
      if (e.type !== 'file' || !e.size) continue;
      if (whole) {
        const data = await whole;
        if (data.length !== e.size) throw changedError(e.source!, data.length > e.size);
        yield { data, stored: COMPRESSED_EXT.test(e.path) || looksCompressed(data) };
      } else {
        let stored: boolean | undefined;
        for await (const data of readPieces(e.source!, e.size)) {
          stored ??= COMPRESSED_EXT.test(e.path) || looksCompressed(data);
          yield { data, stored };
        }
      }
      yield { data: padding(e.size), stored: false };
    }
    yield { data: Buffer.from(END_OF_ARCHIVE), stored: false };
  } finally {
    await ahead.close();
  }
}

/** The tar of `entries` as a byte stream. */
export function tarStream(entries: LayerEntry[], mtime: number): Readable {
  async function* bytes(): AsyncGenerator<Buffer> {
    for await (const c of tarChunks(entries, mtime)) yield c.data;
  }
  return Readable.from(bytes(), { objectMode: false });
}
