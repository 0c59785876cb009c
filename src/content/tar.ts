/**
 * The tar format, as much as image archives need: writing ustar headers (with
 * a pax header first when a name or size does not fit), reading ustar, pax
 * and GNU long-name headers, and the safety rules every archive entry must
 * pass before sealimg trusts its name (POSIX.1-2001 pax, ustar in it).
 */
import { posix } from 'node:path';
import { SealimgError } from '../errors.js';

export const BLOCK = 512;
/** The two zero blocks that end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
/** The largest size the 11 octal digits of a ustar header hold (8 GiB - 1). */
const MAX_OCTAL_SIZE = 0o77777777777;

/** 'link' entries are never followed or extracted; they are listed so a reader can skip them. */
export type EntryType = 'file' | 'directory' | 'link';

/** Zero bytes that pad `size` bytes of data to a whole block. */
export function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rest);
}

function octal(h: Buffer, value: number, offset: number, length: number): void {
  h.write(`${value.toString(8).padStart(length - 1, '0')}\0`, offset, length, 'ascii');
}

/** One pax record, "<len> key=value\n", where len counts its own digits. */
function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const n = Buffer.byteLength(body);
  let digits = String(n).length;
  while (String(n + digits).length !== digits) digits++;
  return Buffer.from(`${n + digits}${body}`);
}

/** Splits a long name into ustar's prefix (155) and name (100), when it can be. */
function splitUstar(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (name.length <= 100) return { prefix: Buffer.alloc(0), name };
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== 0x2f) continue;
    if (i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
  }
  return undefined;
}

function ustar(name: Buffer, prefix: Buffer, flag: string, mode: number, size: number, mtime: number, linkname: Buffer): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0);
  octal(h, mode & 0o7777, 100, 8);
  octal(h, 0, 108, 8); // uid
  octal(h, 0, 116, 8); // gid
  octal(h, size, 124, 12);
  octal(h, mtime, 136, 12);
  h.fill(0x20, 148, 156);
  h.write(flag, 156, 1, 'ascii');
  linkname.copy(h, 157);
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  prefix.copy(h, 345);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return h;
}

/** What one tar header says: every writer in sealimg (layers, archives, uploads) encodes through tarHeader. */
export interface HeaderFields {
  /** The entry's name; a directory's ends with `/`. */
  name: string;
  /** ustar typeflag: '0' file, '1' hard link, '2' symlink, '5' directory. */
  flag: '0' | '1' | '2' | '5';
  /** Permission bits (07777). */
  mode: number;
  size?: number;
  /** Seconds since the epoch (default 0: the same entries give the same bytes). */
  mtime?: number;
  linkname?: string;
}

/**
 * The header block(s) of one entry: POSIX ustar, uid/gid 0 and no user or
 * group names, with a pax header first for a path, link target or size that
 * ustar cannot hold. The pax header's own name is fixed, so the bytes depend
 * on nothing but the fields.
 */
export function tarHeader(f: HeaderFields): Buffer {
  const path = Buffer.from(f.name);
  const link = Buffer.from(f.linkname ?? '');
  const size = f.size ?? 0;
  const mtime = f.mtime ?? 0;
  const records: Buffer[] = [];
  let split = splitUstar(path);
  if (!split) {
    records.push(paxRecord('path', f.name));
    split = { prefix: Buffer.alloc(0), name: path.subarray(0, 100) };
  }
  let linkField = link;
  if (link.length > 100) {
    records.push(paxRecord('linkpath', f.linkname!));
    linkField = link.subarray(0, 100);
  }
  if (size > MAX_OCTAL_SIZE) records.push(paxRecord('size', String(size)));
  const main = ustar(split.name, split.prefix, f.flag, f.mode, size > MAX_OCTAL_SIZE ? 0 : size, mtime, linkField);
  if (records.length === 0) return main;
  const body = Buffer.concat(records);
  return Buffer.concat([ustar(Buffer.from('PaxHeader'), Buffer.alloc(0), 'x', 0o644, body.length, mtime, Buffer.alloc(0)), body, padding(body.length), main]);
}

/** The header of a file or directory in an image archive (0644 / 0755, mtime 0). */
export function entryHeader(name: string, size: number, type: EntryType = 'file'): Buffer {
  if (type === 'link') throw new SealimgError('UNSUPPORTED', 'sealimg does not write links into archives');
  return type === 'directory' ? tarHeader({ name: name.endsWith('/') ? name : `${name}/`, flag: '5', mode: 0o755 }) : tarHeader({ name, flag: '0', mode: 0o644, size });
}

/** A raw header block, decoded. */
export interface RawHeader {
  name: string;
  size: number;
  /** The typeflag character ('0', '5', 'x', ...). */
  flag: string;
  linkname: string;
}

function cstring(b: Buffer, start: number, length: number): string {
  const slice = b.subarray(start, start + length);
  const nul = slice.indexOf(0);
  return (nul < 0 ? slice : slice.subarray(0, nul)).toString('utf8');
}

function parseNumber(b: Buffer, start: number, length: number, where: string): number {
  const field = b.subarray(start, start + length);
  if (field[0]! & 0x80) {
    // GNU base-256: big-endian after the marker bit.
    let v = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) v = v * 256 + field[i]!;
    if (!Number.isSafeInteger(v)) throw invalid(where, 'a size too large to handle');
    return v;
  }
  const text = field.toString('ascii').replace(/[\0 ]+$/, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(where, `a header field that is not octal ("${text}")`);
  return Number.parseInt(text, 8);
}

function invalid(where: string, what: string): SealimgError {
  return new SealimgError('ARCHIVE_INVALID', `${where}: ${what}`, { hint: 'the file is not a tar archive sealimg can read, or it is damaged' });
}

/** True for an all-zero block (the end of an archive). */
export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Decodes one header block, checking its checksum; `where` names the archive and offset for errors. */
export function decodeHeader(b: Buffer, where: string): RawHeader {
  const stored = parseNumber(b, 148, 8, where);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  if (stored !== unsigned && stored !== signed) throw invalid(where, 'a header with a bad checksum (not a tar archive, or damaged)');
  let name = cstring(b, 0, 100);
  // Only POSIX ustar ("ustar\0") has a name prefix; old GNU headers ("ustar  ") keep times there.
  if (b.toString('ascii', 257, 263) === 'ustar\0') {
    const prefix = cstring(b, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  return { name, size: parseNumber(b, 124, 12, where), flag: String.fromCharCode(b[156]!) === '\0' ? '0' : String.fromCharCode(b[156]!), linkname: cstring(b, 157, 100) };
}

/** Reads the records of a pax extended header. */
export function parsePax(data: Buffer, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const len = Number.parseInt(data.toString('ascii', pos, space), 10);
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length) throw invalid(where, 'a malformed pax header');
    const record = data.toString('utf8', space + 1, pos + len - 1);
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
  return out;
}

/** What a header means once pax and GNU long names are applied. */
export interface Entry {
  /** Normalized path inside the archive: no leading "./", no trailing "/". */
  name: string;
  size: number;
  type: EntryType;
}

/**
 * Accumulates pax and GNU long-name headers and applies them to the entry
 * they precede; refuses every entry sealimg must not trust (links, devices,
 * absolute paths, `..`), naming it.
 */
export class HeaderState {
  private pending: Record<string, string> = {};

  constructor(private readonly archive: string) {}

  /** True for headers whose data describes the next entry; their data must be passed to `meta`. */
  static isMeta(flag: string): boolean {
    return flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K';
  }

  meta(h: RawHeader, data: Buffer, offset: number): void {
    const where = `${this.archive} at byte ${offset}`;
    if (h.flag === 'x') Object.assign(this.pending, parsePax(data, where));
    else if (h.flag === 'L') this.pending.path = cstring(data, 0, data.length);
    else if (h.flag === 'K') this.pending.linkpath = cstring(data, 0, data.length);
    // 'g' (global pax) carries nothing sealimg uses.
  }

  /** Turns a non-meta header into an entry, or throws ARCHIVE_INVALID naming it. */
  entry(h: RawHeader): Entry {
    const extra = this.pending;
    this.pending = {};
    const raw = extra.path ?? h.name;
    let size = h.size;
    if (extra.size !== undefined) {
      size = Number(extra.size);
      if (!Number.isSafeInteger(size) || size < 0) throw this.refuse(raw, `has a bad pax size "${extra.size}"`);
    }
    const kind: Record<string, EntryType | string> = {
      '0': 'file', '7': 'file', '5': 'directory', '1': 'link', '2': 'link',
      '3': 'a character device', '4': 'a block device', '6': 'a FIFO',
    };
    const type = kind[h.flag];
    if (type === 'link') {
      // skopeo and docker save add links for old readers (<id>/layer.tar -> ../<hex>.tar). sealimg never
      // follows one, but one that points out of the archive is a crafted archive and refused.
      const name = safeName(raw, this.archive);
      const target = extra.linkpath ?? h.linkname;
      const resolved = h.flag === '2' ? posix.join(posix.dirname(name), target) : posix.normalize(target);
      if (target === '' || target.startsWith('/') || resolved === '..' || resolved.startsWith('../')) {
        throw this.refuse(raw, `is a link that leaves the archive (-> ${target})`);
      }
      return { name, size: 0, type: 'link' };
    }
    if (type !== 'file' && type !== 'directory') {
      throw this.refuse(raw, `is ${type ?? `an entry of unsupported type "${h.flag}"`}${h.linkname ? ` (-> ${h.linkname})` : ''}; image archives hold only files and directories`);
    }
    return { name: safeName(raw, this.archive), size, type };
  }

  private refuse(name: string, why: string): SealimgError {
    return new SealimgError('ARCHIVE_INVALID', `${this.archive}: entry "${name}" ${why}`, { hint: 'the archive is not an image archive, or it was crafted; nothing was loaded' });
  }
}

/** Checks an entry name and normalizes it; absolute paths and `..` never reach a caller. */
export function safeName(raw: string, archive: string): string {
  const refuse = (why: string) =>
    new SealimgError('ARCHIVE_INVALID', `${archive}: entry "${raw}" ${why}`, { hint: 'the archive is not an image archive, or it was crafted; nothing was loaded' });
  if (raw === '') throw refuse('has an empty name');
  if (raw.includes('\0')) throw refuse('has a NUL in its name');
  if (raw.startsWith('/') || /^[A-Za-z]:[\\/]/.test(raw)) throw refuse('has an absolute path');
  if (raw.split(/[\\/]/).includes('..')) throw refuse('has a ".." component that would leave the archive');
  const name = posix.normalize(raw).replace(/\/+$/, '');
  return name === '.' ? '' : name;
}
