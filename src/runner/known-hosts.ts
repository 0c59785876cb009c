/**
 * known_hosts: the OpenSSH file format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"),
 * so `~/.sealimg/known_hosts` can be read and edited with ssh-keygen -R/-F.
 * Reads plain and hashed (`|1|salt|hmac`) host fields, comma lists, `*`/`?`
 * wildcards, `!` negation and `[host]:port`; honours `@revoked`, skips
 * `@cert-authority` (sealimg does not do host certificates). Writes plain lines.
 */
import { createHash, createHmac } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errnoCode } from '../errors.js';

export type HostKeyStatus = 'match' | 'unknown' | 'changed' | 'revoked';

export interface HostKeyCheck {
  status: HostKeyStatus;
  /** Fingerprints of the keys on file for this host (for the "changed" message). */
  known: string[];
}

/** The key type inside an SSH public key blob (its first string, e.g. "ssh-ed25519"). */
export function hostKeyType(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  return n > 0 && 4 + n <= blob.length ? blob.subarray(4, 4 + n).toString('latin1') : 'unknown';
}

/** OpenSSH's fingerprint form: "SHA256:" + unpadded base64 of the blob's sha256. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The name a host has in known_hosts: "host" on port 22, "[host]:port" otherwise. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split('|'); // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2], 'base64');
  return createHmac('sha1', salt).update(name).digest('base64') === parts[3];
}

/** Whether a host field (comma list of patterns) applies to `name`. A matching negation wins. */
function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|')) return hashedMatches(field, name);
  let hit = false;
  for (const raw of field.split(',')) {
    const negated = raw.startsWith('!');
    const pat = negated ? raw.slice(1) : raw;
    if (globToRegExp(pat).test(name)) {
      if (negated) return false;
      hit = true;
    }
  }
  return hit;
}

/** Checks `blob` (the key a server showed) for host:port against known_hosts text. */
export function checkHostKey(text: string, host: string, port: number, blob: Buffer): HostKeyCheck {
  const name = knownHostName(host, port);
  const keyB64 = blob.toString('base64');
  const known: string[] = [];
  let matched = false;
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker = '';
    if (fields[0].startsWith('@')) marker = fields.shift()!;
    if (fields.length < 3 || !hostFieldMatches(fields[0], name)) continue;
    const sameKey = fields[2] === keyB64;
    if (marker === '@revoked') {
      if (sameKey) return { status: 'revoked', known };
      continue;
    }
    if (marker !== '') continue;
    if (sameKey) matched = true;
    else known.push(`${fields[1]} ${fingerprint(Buffer.from(fields[2], 'base64'))}`);
  }
  if (matched) return { status: 'match', known };
  // Any other key on file for this name means the host is not the one we met before.
  return { status: known.length > 0 ? 'changed' : 'unknown', known };
}

/** Reads a known_hosts file; a missing file is an empty one. */
export async function readKnownHosts(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return '';
    throw e;
  }
}

/**
 * Appends one line for host:port. One O_APPEND write of a short line is
 * atomic, so two sealimg processes trusting two hosts at once lose nothing.
 */
export async function appendKnownHost(path: string, host: string, port: number, blob: Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const fh = await open(path, 'a', 0o600);
  try {
    await fh.write(`${knownHostName(host, port)} ${hostKeyType(blob)} ${blob.toString('base64')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
