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
import type { Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import tls from 'node:tls';
import { bulkGet, type TlsSettings } from './bulk-get.js';
import { proxyAuthorization, proxyFor } from './proxy-env.js';

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

/**
 * Keep-alive agents for one registry host's settings; redirects may cross to
 * the other scheme. Requests go through the proxy the environment names
 * (proxy-env.ts): http ones in absolute form, https ones through a CONNECT
 * tunnel, so the proxy never sees inside TLS.
 */
export class Transport {
  private readonly plain = new http.Agent({ keepAlive: true, maxSockets: 32 });
  private readonly secure: https.Agent;
  /** Agents through proxies, by proxy URL. */
  private readonly viaProxy = new Map<string, http.Agent | https.Agent>();

  constructor(
    private readonly tls: TlsSettings,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.secure = new https.Agent({ keepAlive: true, maxSockets: 32, ...tls });
  }

  /** Resolves with the response once its headers arrive; the caller owns the body. */
  send(req: HttpRequest): Promise<Response> {
    let proxy: URL | undefined;
    try {
      proxy = proxyFor(req.url, this.env);
    } catch (e) {
      return Promise.reject(e);
    }
    // The bulk path dials the registry itself; through a proxy the usual path does the work.
    if (req.bulk && req.method === 'GET' && !proxy) return bulkGet(req, this.tls, IDLE_TIMEOUT_MS);
    return new Promise((resolve, reject) => {
      const secure = req.url.protocol === 'https:';
      const out = proxy && !secure
        ? http.request({
            host: proxy.hostname,
            port: proxy.port || 80,
            path: req.url.href,
            method: req.method,
            headers: { ...req.headers, host: req.url.host, ...proxyHeader(proxy) },
            agent: this.proxied(proxy, false),
          })
        : (secure ? https : http).request(req.url, {
            method: req.method,
            headers: req.headers,
            agent: proxy ? this.proxied(proxy, true) : secure ? this.secure : this.plain,
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
    for (const a of this.viaProxy.values()) a.destroy();
  }

  private proxied(proxy: URL, secure: boolean): http.Agent | https.Agent {
    const key = `${secure ? 'tunnel' : 'forward'} ${proxy.href}`;
    let agent = this.viaProxy.get(key);
    if (!agent) {
      agent = secure ? new TunnelAgent(proxy, { keepAlive: true, maxSockets: 32, ...this.tls }) : new http.Agent({ keepAlive: true, maxSockets: 32 });
      this.viaProxy.set(key, agent);
    }
    return agent;
  }
}

function proxyHeader(proxy: URL): Record<string, string> {
  const auth = proxyAuthorization(proxy);
  return auth ? { 'proxy-authorization': auth } : {};
}

/** An https agent whose connections are TLS inside a CONNECT tunnel through `proxy`. */
class TunnelAgent extends https.Agent {
  constructor(
    private readonly proxy: URL,
    opts: https.AgentOptions,
  ) {
    super(opts);
  }

  // Node's agents take a callback here for connections made asynchronously (the tunnel first).
  override createConnection(options: https.RequestOptions, done?: (err: Error | null, stream: Duplex) => void): undefined {
    const host = options.host ?? 'localhost';
    const port = Number(options.port ?? 443);
    tunnel(this.proxy, host, port).then(
      (socket) => done?.(null, tls.connect({ ...(options as tls.ConnectionOptions), socket })),
      (e: Error) => done?.(e, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

/** A TCP connection to host:port through an HTTP proxy's CONNECT (RFC 9110 9.3.6). */
function tunnel(proxy: URL, host: string, port: number): Promise<Socket> {
  const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.hostname, port: proxy.port || 80, method: 'CONNECT', path: target, headers: { host: target, ...proxyHeader(proxy) }, agent: false });
    req.once('connect', (res, socket) => {
      if (res.statusCode === 200) return resolve(socket);
      socket.destroy();
      const why = res.statusCode === 407 ? 'wants credentials (put them in the proxy URL: http://user:pass@host:port)' : `answered HTTP ${res.statusCode}`;
      reject(Object.assign(new Error(`proxy ${proxy.host} refused a tunnel to ${target}: it ${why}`), { code: 'EPROXY' }));
    });
    req.once('error', (e) => reject(Object.assign(e, { message: `proxy ${proxy.host}: ${e.message}` })));
    req.end();
  });
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
