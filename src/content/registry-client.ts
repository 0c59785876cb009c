/**
 * The HTTP side of talking to one registry host (over http.ts): TLS settings
 * (system CAs, --ca-file, --tls-verify=false, --plain-http), authorization
 * (src/auth), retries with backoff, and redirects for blob downloads. Callers
 * speak the distribution API through `request`; errors leave here as
 * SealimgError naming the host.
 */
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import { findCredentials } from '../auth/authfile.js';
import type { Credentials } from '../auth/credentials.js';
import { AuthSession } from '../auth/session.js';
import { SealimgError, errnoCode, isSealimgError } from '../errors.js';
import { Transport, type Response } from './http.js';
import { DEFAULT_RETRY, backoff, isRetryableError, isRetryableStatus, parseRetryAfter, sleep, type RetryPolicy } from './retry.js';

/** Transport settings from the command line (OpenContext.registry). */
export interface RegistryOptions {
  /** Talk http:// instead of https:// (--plain-http). */
  plainHttp?: boolean;
  /** Check the server certificate (default true; --tls-verify=false turns it off). */
  tlsVerify?: boolean;
  /** Extra CA certificates, PEM (--ca-file). */
  caFile?: string;
  /** --authfile */
  authFile?: string;
  /** Attempts after the first for a failed request (--retry-times, default 5). */
  retryTimes?: number;
  /** Bytes per PATCH for chunked uploads (--chunk-size). */
  chunkSize?: number;
  /** Environment for credential lookup; process.env when absent. */
  env?: NodeJS.ProcessEnv;
  /** Credentials to use instead of the saved ones (login checks these before saving them). */
  credentials?: Credentials;
  /** Where chunked uploads save their progress so a killed push resumes (in the local store). */
  stateDir?: string;
  /** Tuning for tests: backoff steps in ms. */
  retryBaseMs?: number;
}

export type Body = Buffer | string | (() => Readable);

export interface RegistryRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** A path on the registry (`/v2/...`) or an absolute URL it handed us (upload locations). */
  url: string | URL;
  headers?: Record<string, string>;
  /** Buffers and factories can be sent again; a Readable cannot, so a request with one is tried once. */
  body?: Body | Readable;
  /** Token scopes the request needs (`repository:NAME:pull,push`). */
  scopes: string[];
  signal?: AbortSignal;
  /** Follow redirects (blob downloads are often redirected to storage). */
  follow?: boolean;
  /** Do not retry on 5xx/network errors (the caller recovers itself, e.g. an upload chunk). */
  noRetry?: boolean;
  /** A large blob download (Transport's bulk path). */
  bulk?: boolean;
}

export type { Response };

const MAX_REDIRECTS = 5;
const MAX_AUTH_ROUNDS = 2;

export class RegistryClient {
  readonly base: URL;
  readonly session: AuthSession;
  readonly retry: RetryPolicy;

  private constructor(
    readonly host: string,
    readonly opts: RegistryOptions,
    private readonly transport: Transport,
  ) {
    // docker.io is a name; its API lives at registry-1.docker.io.
    this.base = new URL(`${opts.plainHttp ? 'http' : 'https'}://${host === 'docker.io' ? 'registry-1.docker.io' : host}`);
    this.retry = { ...DEFAULT_RETRY, times: opts.retryTimes ?? DEFAULT_RETRY.times, baseMs: opts.retryBaseMs ?? DEFAULT_RETRY.baseMs };
    const env = opts.env ?? process.env;
    const creds = opts.credentials;
    this.session = new AuthSession(
      host,
      () => (creds ? Promise.resolve(creds) : findCredentials(host, { authFile: opts.authFile, env })),
      (req) => this.tokenRequest(req),
    );
  }

  static async open(host: string, opts: RegistryOptions = {}): Promise<RegistryClient> {
    let ca: string | undefined;
    if (opts.caFile) {
      try {
        ca = await readFile(opts.caFile, 'utf8');
      } catch (e) {
        throw new SealimgError('USAGE', `--ca-file ${opts.caFile}: ${(e as Error).message}`);
      }
    }
    // Node replaces the system CAs when `ca` is set; keep them, as skopeo does with --cert-dir.
    const transport = new Transport({ rejectUnauthorized: opts.tlsVerify !== false, ...(ca ? { ca: [...rootCertificates, ca] } : {}) }, opts.env ?? process.env);
    return new RegistryClient(host, opts, transport);
  }

  async close(): Promise<void> {
    this.transport.close();
  }

  url(pathOrUrl: string | URL): URL {
    return new URL(pathOrUrl, this.base);
  }

  /**
   * Sends a request: authorizes it, answers 401 challenges, retries what is
   * worth retrying, follows redirects when asked. Returns any other response
   * as is; the caller owns its body (and must consume or dump it).
   */
  async request(req: RegistryRequest): Promise<Response> {
    let url = this.url(req.url);
    let scopes = req.scopes;
    const replayable = req.body === undefined || typeof req.body === 'string' || Buffer.isBuffer(req.body) || typeof req.body === 'function';
    const canRetry = replayable && !req.noRetry;
    let attempt = 0;
    let authRounds = 0;
    let redirects = 0;
    for (;;) {
      req.signal?.throwIfAborted();
      const headers: Record<string, string> = { 'user-agent': 'sealimg', ...req.headers };
      const sameOrigin = url.origin === this.base.origin;
      const auth = sameOrigin ? await this.session.header(scopes, req.signal) : undefined;
      if (auth) headers.authorization = auth;
      let res: Response;
      try {
        res = await this.transport.send({ method: req.method, url, headers, body: typeof req.body === 'function' ? req.body() : req.body, signal: req.signal, bulk: req.bulk });
      } catch (e) {
        if (req.signal?.aborted) throw req.signal.reason;
        if (isSealimgError(e)) throw e;
        if (canRetry && isRetryableError(e) && attempt < this.retry.times) {
          await sleep(backoff(this.retry, ++attempt), req.signal);
          continue;
        }
        throw networkError(this.host, req.method, url, e);
      }
      const status = res.statusCode;
      if (status === 401 && sameOrigin && authRounds < MAX_AUTH_ROUNDS && replayable) {
        await res.body.dump();
        authRounds++;
        scopes = await this.session.onUnauthorized(header(res, 'www-authenticate'), scopes, auth);
        continue;
      }
      if (req.follow && [301, 302, 303, 307, 308].includes(status) && header(res, 'location') && redirects < MAX_REDIRECTS) {
        await res.body.dump();
        redirects++;
        url = new URL(header(res, 'location')!, url);
        continue;
      }
      if (canRetry && isRetryableStatus(status) && attempt < this.retry.times) {
        const wait = backoff(this.retry, ++attempt, parseRetryAfter(header(res, 'retry-after')));
        await res.body.dump();
        await sleep(wait, req.signal);
        continue;
      }
      return res;
    }
  }

  /**
   * Checks that the registry answers the API and accepts our credentials
   * (GET /v2/, distribution-spec "end-1"); `login` calls it before saving anything.
   */
  async ping(signal?: AbortSignal): Promise<void> {
    const res = await this.request({ method: 'GET', url: '/v2/', scopes: [], signal });
    await res.body.dump();
    if (res.statusCode === 200) return;
    if (res.statusCode === 401) throw this.session.rejected(await this.opts.credentials);
    if (res.statusCode === 404) throw new SealimgError('REGISTRY_ERROR', `${this.host} does not serve the registry API at ${this.base.origin}/v2/`);
    throw new SealimgError('REGISTRY_ERROR', `${this.host}: GET /v2/ answered HTTP ${res.statusCode}`);
  }

  /** The token realm's HTTP, through the same TLS settings. */
  private async tokenRequest(req: { method: 'GET' | 'POST'; url: URL; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
    for (let attempt = 0; ; ) {
      try {
        const res = await this.transport.send({ method: req.method, url: req.url, headers: { 'user-agent': 'sealimg', ...req.headers }, body: req.body });
        const body = await readText(res, 1 << 20);
        if (isRetryableStatus(res.statusCode) && attempt < this.retry.times) {
          await sleep(backoff(this.retry, ++attempt, parseRetryAfter(header(res, 'retry-after'))));
          continue;
        }
        return { status: res.statusCode, body };
      } catch (e) {
        if (isRetryableError(e) && attempt < this.retry.times) {
          await sleep(backoff(this.retry, ++attempt));
          continue;
        }
        throw networkError(req.url.host, req.method, req.url, e);
      }
    }
  }
}

export function header(res: Response, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a small response body, refusing more than `max` bytes. */
export async function readText(res: Response, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > max) {
      res.body.destroy();
      throw new SealimgError('REGISTRY_ERROR', `response larger than ${max} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_SSL_WRONG_VERSION_NUMBER', 'EPROTO',
]);

export function networkError(host: string, method: string, url: URL, e: unknown): SealimgError {
  let code: string | undefined;
  for (let c: unknown = e; c && !code; c = (c as { cause?: unknown }).cause) code = errnoCode(c);
  const msg = e instanceof Error ? e.message : String(e);
  let hint = `check that ${host} is up and reachable; sealimg retried failed requests before giving up (--retry-times)`;
  if (code && TLS_CODES.has(code)) {
    hint = code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO'
      ? `${host} may speak plain http: use --plain-http`
      : `trust the registry's CA with --ca-file FILE, or skip the check with --tls-verify=false`;
  }
  return new SealimgError('NETWORK', `${method} ${url.origin}${url.pathname}: ${msg}${code && !msg.includes(code) ? ` (${code})` : ''}`, { hint, cause: e });
}
