/**
 * Authorization for one registry host: anonymous, Basic, or Bearer tokens
 * (distribution's token auth spec: realm/service/scope from the challenge,
 * a GET to the realm with Basic credentials, or an OAuth2 refresh-token POST
 * for identity tokens). Tokens are cached per scope set and fetched again when
 * the registry answers 401 to one. Once the host's scheme is known, requests
 * carry credentials up front instead of paying a 401 round trip each.
 */
import { SealimgError } from '../errors.js';
import { parseChallenges } from './challenge.js';
import type { Credentials } from './credentials.js';

/** A minimal HTTP call for the token realm; the transport supplies it, so TLS settings are shared. */
export type TokenHttp = (req: { method: 'GET' | 'POST'; url: URL; headers: Record<string, string>; body?: string }) => Promise<{ status: number; body: string }>;

type Scheme = { kind: 'basic' } | { kind: 'bearer'; realm: string; service?: string };

interface Token {
  value: string;
  expiresAt: number;
}

/** Tokens live at least this long when the server does not say (token spec: 60 s). */
const DEFAULT_TOKEN_SECONDS = 60;
/** Refresh a little early so a token does not expire in flight. */
const EARLY_MS = 10_000;

export class AuthSession {
  private scheme?: Scheme;
  private readonly tokens = new Map<string, Promise<Token>>();
  private creds?: Promise<Credentials | undefined>;

  constructor(
    readonly host: string,
    private readonly credentials: () => Promise<Credentials | undefined>,
    private readonly http: TokenHttp,
  ) {}

  private getCreds(): Promise<Credentials | undefined> {
    this.creds ??= this.credentials();
    return this.creds;
  }

  /** The Authorization header for a request needing `scopes`, when the scheme is known. */
  async header(scopes: string[], signal?: AbortSignal): Promise<string | undefined> {
    const scheme = this.scheme;
    if (!scheme) return undefined;
    if (scheme.kind === 'basic') {
      const c = await this.getCreds();
      return c?.password !== undefined ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
    }
    const key = scopeKey(scopes);
    let pending = this.tokens.get(key);
    if (pending) {
      const t = await pending.catch(() => undefined);
      if (t && t.expiresAt > Date.now()) return `Bearer ${t.value}`;
      if (this.tokens.get(key) === pending) this.tokens.delete(key);
    }
    pending = this.fetchToken(scheme, scopes, signal);
    this.tokens.set(key, pending);
    pending.catch(() => this.tokens.get(key) === pending && this.tokens.delete(key));
    return `Bearer ${(await pending).value}`;
  }

  /**
   * Learns from a 401: records the scheme and drops the token that was refused.
   * Returns the scopes to ask for (the request's plus what the challenge names).
   * Throws AUTH_FAILED when retrying cannot help (no credentials for Basic).
   */
  async onUnauthorized(wwwAuthenticate: string | undefined, scopes: string[], sent: string | undefined): Promise<string[]> {
    const challenges = parseChallenges(wwwAuthenticate ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer && bearer.params.realm) {
      this.scheme = { kind: 'bearer', realm: bearer.params.realm, service: bearer.params.service };
      const wanted = [...scopes, ...(bearer.params.scope ? bearer.params.scope.split(' ') : [])];
      const merged = [...new Set(wanted)];
      // A token that was sent and refused is stale or too narrow: never offer it again.
      for (const key of [scopeKey(scopes), scopeKey(merged)]) this.tokens.delete(key);
      return merged;
    }
    if (basic || challenges.length === 0) {
      this.scheme = { kind: 'basic' };
      const c = await this.getCreds();
      if (c?.password === undefined) {
        throw new SealimgError('AUTH_FAILED', `${this.host} requires a login`, { hint: `run 'sealimg login ${this.host}'` });
      }
      if (sent?.startsWith('Basic ')) throw this.rejected(c);
      return scopes;
    }
    throw new SealimgError('AUTH_FAILED', `${this.host} asks for "${challenges[0]!.scheme}" authentication, which sealimg does not speak`);
  }

  /** The error for credentials the registry refused. */
  rejected(c?: Credentials): SealimgError {
    return new SealimgError('AUTH_FAILED', `${this.host} rejected the credentials${c?.username ? ` for user "${c.username}"` : ''}`, {
      hint: `check the user name and password, then run 'sealimg login ${this.host}' again`,
    });
  }

  private async fetchToken(scheme: Extract<Scheme, { kind: 'bearer' }>, scopes: string[], signal?: AbortSignal): Promise<Token> {
    signal?.throwIfAborted();
    const c = await this.getCreds();
    let url: URL;
    try {
      url = new URL(scheme.realm);
    } catch {
      throw new SealimgError('AUTH_FAILED', `${this.host} named a token realm that is not a URL: "${scheme.realm}"`);
    }
    let res: { status: number; body: string };
    if (c?.identityToken !== undefined) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: c.identityToken, client_id: 'sealimg' });
      if (scheme.service) form.set('service', scheme.service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await this.http({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() });
    } else {
      if (scheme.service) url.searchParams.set('service', scheme.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (c?.password !== undefined) headers.authorization = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
      res = await this.http({ method: 'GET', url, headers });
    }
    if (res.status === 401 || res.status === 403) throw c ? this.rejected(c) : new SealimgError('AUTH_FAILED', `${url.host} refused an anonymous token for ${this.host}`, { hint: `run 'sealimg login ${this.host}'` });
    if (res.status !== 200) throw new SealimgError('AUTH_FAILED', `token server ${url.host} answered ${res.status} for ${this.host}`);
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      doc = JSON.parse(res.body) as typeof doc;
    } catch {
      throw new SealimgError('AUTH_FAILED', `token server ${url.host} did not answer JSON`);
    }
    const value = typeof doc.token === 'string' && doc.token !== '' ? doc.token : doc.access_token;
    if (typeof value !== 'string' || value === '') throw new SealimgError('AUTH_FAILED', `token server ${url.host} answered without a token`);
    const seconds = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    const issued = typeof doc.issued_at === 'string' && !Number.isNaN(Date.parse(doc.issued_at)) ? Math.min(Date.parse(doc.issued_at), Date.now()) : Date.now();
    return { value, expiresAt: issued + seconds * 1000 - Math.min(EARLY_MS, (seconds * 1000) / 2) };
  }
}

function scopeKey(scopes: string[]): string {
  return [...new Set(scopes)].sort().join(' ');
}
