/**
 * One HTTP request to a registry, over node:http and node:https. The registry
 * client (registry-client.ts) adds auth, retries and redirects on top.
 *
 * Why not undici: a pull is CPU-bound here, and measured on a 612 MB blob from
 * docker-registry on loopback, node:http's native parser receives it in 0.28 s
 * where undici's request() took 0.37 s; undici also costs ~50 ms of module
 * loading on every command that talks to a registry.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { bulkGet, type TlsSettings } from './bulk-get.js';

/** A response body: the message's bytes, and `dump()` to discard them. */
export type ResponseBody = Readable & {
  /** Reads and drops what is left (a small error body), so the connection can be reused. */
  dump(): Promise<void>;
};

export interface Response {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: ResponseBody;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body?: Buffer | string | Readable;
  signal?: AbortSignal;
  /** A GET for a large blob: read on a connection of its own (bulk-get.ts says why). */
  bulk?: boolean;
}

/** Keep-alive agents for one registry host's settings; redirects may cross to the other scheme. */
export class Transport {
  private readonly plain = new http.Agent({ keepAlive: true, maxSockets: 32 });
  private readonly secure: https.Agent;

  constructor(private readonly tls: TlsSettings) {
    this.secure = new https.Agent({ keepAlive: true, maxSockets: 32, ...tls });
  }

  /** Resolves with the response once its headers arrive; the caller owns the body. */
  send(req: HttpRequest): Promise<Response> {
    if (req.bulk && req.method === 'GET') return bulkGet(req, this.tls, IDLE_TIMEOUT_MS);
    return new Promise((resolve, reject) => {
      const secure = req.url.protocol === 'https:';
      const out = (secure ? https : http).request(req.url, {
        method: req.method,
        headers: req.headers,
        agent: secure ? this.secure : this.plain,
      });
      let answered = false;
      // The caller's signal ends the exchange, body included, until the socket is done with it.
      const signal = req.signal;
      const abort = () => out.destroy(signal!.reason as Error);
      signal?.addEventListener('abort', abort, { once: true });
      // A server that stops sending or reading fails the request instead of hanging it: the socket's
      // own inactivity timer (reads and writes both count), taken off again when the exchange ends,
      // since a kept-alive socket goes on to other requests.
      const stalled = () => out.destroy(Object.assign(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' }));
      out.once('socket', (socket) => {
        socket.setTimeout(IDLE_TIMEOUT_MS);
        socket.on('timeout', stalled);
        out.once('close', () => {
          socket.setTimeout(0);
          socket.off('timeout', stalled);
        });
      });
      out.once('close', () => signal?.removeEventListener('abort', abort));
      if (signal?.aborted) abort();
      out.on('error', (e) => {
        if (!answered) reject(e);
      });
      out.on('response', (msg) => {
        answered = true;
        // A body that breaks before its reader attaches must not crash the process; the reader
        // still sees the error.
        msg.on('error', () => undefined);
        resolve(responseOf(msg));
      });
      const body = req.body;
      if (body instanceof Readable) {
        body.on('error', (e) => out.destroy(e));
        // A server may answer before reading the body (401, 404): stop feeding it then.
        out.on('close', () => body.destroy());
        body.pipe(out);
      } else {
        out.end(body);
      }
    });
  }

  close(): void {
    this.plain.destroy();
    this.secure.destroy();
  }
}

/** Time without a byte either way before a request fails as timed out (undici's default, 300 s). */
const IDLE_TIMEOUT_MS = 300_000;

/** Bytes `dump()` reads before it closes the connection instead. */
const DUMP_LIMIT = 256 << 10;

function responseOf(msg: IncomingMessage): Response {
  const body: ResponseBody = Object.assign(msg, { dump: () => dump(msg) });
  return { statusCode: msg.statusCode ?? 0, headers: msg.headers, body };
}

function dump(msg: IncomingMessage): Promise<void> {
  // Even a complete body (a HEAD's) must be read to its end: only then does the socket go back to the pool.
  if (msg.readableEnded || msg.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let n = 0;
    msg.on('data', (c: Buffer) => {
      n += c.length;
      if (n > DUMP_LIMIT) msg.destroy();
    });
    msg.once('end', () => resolve());
    msg.once('close', () => resolve());
    msg.resume();
  });
}
