/**
 * HTTP Basic auth against an htpasswd file of bcrypt hashes (what
 * `htpasswd -B` writes and the CNCF registry accepts; other hash kinds are
 * refused when the file is read, not silently never matched).
 *
 * bcrypt is slow on purpose, so a verified Authorization header is remembered
 * (by its SHA-256, for a few minutes): a client pulling a hundred blobs pays
 * for one check, not a hundred.
 */
import bcrypt from 'bcryptjs';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SealimgError } from '../src/errors.js';
import type { Authenticator } from './handler.js';

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
const REMEMBER_MS = 5 * 60_000;
const REMEMBER_MAX = 1000;

/** Parses htpasswd text into user -> bcrypt hash; `file` names it in errors. */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const colon = l.indexOf(':');
    const user = l.slice(0, colon);
    const hash = l.slice(colon + 1);
    if (colon <= 0 || !BCRYPT.test(hash)) {
      throw new SealimgError('USAGE', `${file}:${i + 1}: not a "user:bcrypt-hash" line`, {
        hint: "only bcrypt hashes are supported; make the file with 'htpasswd -B -c FILE USER'",
      });
    }
    users.set(user, hash);
  });
  return users;
}

export class HtpasswdAuth implements Authenticator {
  private readonly remembered = new Map<string, { user: string; until: number }>();

  constructor(private readonly users: Map<string, string>, private readonly realm = 'sealimg') {}

  challenge(): string {
    return `Basic realm="${this.realm}"`;
  }

  static async load(file: string, realm?: string): Promise<HtpasswdAuth> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new SealimgError('USAGE', `cannot read htpasswd file ${file}: ${(e as Error).message}`);
    }
    return new HtpasswdAuth(parseHtpasswd(text, file), realm);
  }

  async authenticate(authorization: string | undefined): Promise<string | undefined> {
    if (!authorization || !/^basic /i.test(authorization)) return undefined;
    const key = createHash('sha256').update(authorization).digest('hex');
    const hit = this.remembered.get(key);
    if (hit && hit.until > Date.now()) return hit.user;
    const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const hash = this.users.get(user);
    // An unknown user costs a bcrypt round too, so timing does not tell which users exist.
    const ok = await bcrypt.compare(password, hash ?? DUMMY_HASH);
    if (!ok || hash === undefined) return undefined;
    if (this.remembered.size >= REMEMBER_MAX) this.remembered.clear();
    this.remembered.set(key, { user, until: Date.now() + REMEMBER_MS });
    return user;
  }
}

/** A real bcrypt hash (cost 10) of a password nobody sends, compared against for unknown users. */
const DUMMY_HASH = '$2y$10$qpyUqexQSH4MNoQ4L1k6k.EkQWMH/PXRtWtliPsT8fNhKjI.ewaTK';
