/**
 * When to try a registry request again and how long to wait first. Retries are
 * on by default (skopeo's are off, skopeo#1223): 5xx, 408, 429 and dropped
 * connections are usually gone a moment later. Backoff is exponential with
 * jitter, so many clients that failed together do not come back together; a
 * server's Retry-After wins, within a cap, so a 429 is honoured but cannot park us forever.
 */
import { errnoCode } from '../errors.js';

export interface RetryPolicy {
  /** Attempts after the first (0 turns retries off). */
  times: number;
  /** First backoff step in ms; doubles per attempt. */
  baseMs: number;
  /** Longest single wait in ms, Retry-After included. */
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { times: 5, baseMs: 250, maxMs: 60_000 };

/** Statuses that say "not now" rather than "no". */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** Socket-level failures worth another try: the server or a proxy dropped us. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);

export function isRetryableError(e: unknown): boolean {
  for (let c: unknown = e; c !== undefined && c !== null; c = (c as { cause?: unknown }).cause) {
    const code = errnoCode(c);
    if (code !== undefined && RETRYABLE_CODES.has(code)) return true;
  }
  return false;
}

/** Retry-After is seconds or an HTTP date (RFC 9110 10.2.3). */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** The wait before attempt `attempt` (1-based). */
export function backoff(policy: RetryPolicy, attempt: number, retryAfterMs?: number, random = Math.random): number {
  if (retryAfterMs !== undefined) return Math.min(policy.maxMs, retryAfterMs);
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener('abort', abort);
      resolve();
    };
    const t = setTimeout(done, ms);
    const abort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', abort, { once: true });
  });
}
