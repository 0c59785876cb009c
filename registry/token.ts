/**
 * Bearer token auth, as the CNCF registry's `auth.token`: clients get a JWT
 * from a token service (the realm) and the registry only verifies it, with
 * the service's public key, issuer, audience (service), time window and the
 * `access` claim against what the request needs. A 401 carries the challenge
 * (realm, service, scope) clients use to ask for the right token.
 * Docker token spec: https://github.com/distribution/distribution/blob/v2.8.3/docs/spec/auth/jwt.md
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SealimgError } from '../src/errors.js';
import type { Access, Authenticator } from './handler.js';

export interface TokenAuthOptions {
  realm: string;
  service: string;
  issuer: string;
  /** PEM public key or certificate of the token service. */
  key: KeyObject;
  /** Allowed clock difference (default 60 s). */
  leewaySec?: number;
}

interface Claims {
  iss?: unknown;
  sub?: unknown;
  aud?: unknown;
  exp?: unknown;
  nbf?: unknown;
  access?: unknown;
}

const ALGS: Record<string, { hash: string | null; dsa?: 'ieee-p1363' }> = {
  RS256: { hash: 'sha256' },
  RS384: { hash: 'sha384' },
  RS512: { hash: 'sha512' },
  ES256: { hash: 'sha256', dsa: 'ieee-p1363' },
  ES384: { hash: 'sha384', dsa: 'ieee-p1363' },
  ES512: { hash: 'sha512', dsa: 'ieee-p1363' },
  EdDSA: { hash: null },
};

function b64json(part: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null ? v : undefined;
  } catch {
    return undefined;
  }
}

export class TokenAuth implements Authenticator {
  constructor(private readonly opts: TokenAuthOptions) {}

  static async load(opts: Omit<TokenAuthOptions, 'key'> & { keyFile: string }): Promise<TokenAuth> {
    let key: KeyObject;
    try {
      key = createPublicKey(await readFile(opts.keyFile));
    } catch (e) {
      throw new SealimgError('USAGE', `--token-key ${opts.keyFile}: not a readable PEM public key or certificate (${(e as Error).message})`);
    }
    return new TokenAuth({ ...opts, key });
  }

  challenge(access: Access[]): string {
    const scope = access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`).join(' ');
    return `Bearer realm="${this.opts.realm}",service="${this.opts.service}"${scope ? `,scope="${scope}"` : ''}`;
  }

  /** The token's subject when it is valid and grants `access`; undefined otherwise. */
  async authenticate(authorization: string | undefined, access: Access[]): Promise<string | undefined> {
    if (!authorization || !/^bearer /i.test(authorization)) return undefined;
    const claims = this.verify(authorization.slice(7).trim());
    if (!claims) return undefined;
    const granted = Array.isArray(claims.access) ? (claims.access as Array<Record<string, unknown>>) : [];
    for (const need of access) {
      const entry = granted.find((g) => g && g.type === need.type && g.name === need.name);
      const actions = Array.isArray(entry?.actions) ? (entry!.actions as unknown[]) : [];
      if (!need.actions.every((a) => actions.includes(a) || actions.includes('*'))) return undefined;
    }
    return typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : 'token';
  }

  private verify(token: string): Claims | undefined {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    const header = b64json(parts[0]!);
    const claims = b64json(parts[1]!) as Claims | undefined;
    const alg = ALGS[String(header?.alg)];
    if (!header || !claims || !alg) return undefined;
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    const sig = Buffer.from(parts[2]!, 'base64url');
    let ok = false;
    try {
      ok = verify(alg.hash, signed, alg.dsa ? { key: this.opts.key, dsaEncoding: alg.dsa } : this.opts.key, sig);
    } catch {
      return undefined;
    }
    if (!ok) return undefined;
    const now = Date.now() / 1000;
    const leeway = this.opts.leewaySec ?? 60;
    if (claims.iss !== this.opts.issuer) return undefined;
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(this.opts.service)) return undefined;
    if (typeof claims.exp !== 'number' || claims.exp + leeway < now) return undefined;
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf - leeway > now)) return undefined;
    return claims;
  }
}
