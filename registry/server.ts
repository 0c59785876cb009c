/**
 * Runs the registry: a node:http (or https) server over a distribution storage
 * directory, with the options `sealimg registry serve` takes. The CLI and the
 * tests start it the same way.
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { SealimgError } from '../src/errors.js';
import { HtpasswdAuth } from './auth.js';
import { TokenAuth } from './token.js';
import { createRegistryHandler, type RequestLog } from './handler.js';
import { DistributionStorage } from '../src/content/distribution/storage.js';
import { PullThrough, parseProxySpec } from './proxy.js';
import type { RegistryOptions } from '../src/content/registry-client.js';

export interface ServeOptions {
  /** HOST:PORT, [IPV6]:PORT or :PORT (every interface); port 0 picks a free one. */
  addr: string;
  /** Storage root, in the CNCF distribution layout; created if missing. */
  root: string;
  readOnly?: boolean;
  /** An htpasswd file of bcrypt hashes: Basic auth on every request. */
  htpasswd?: string;
  /** Bearer tokens from a token service, verified with its public key. */
  token?: { realm: string; service: string; issuer: string; keyFile: string };
  tlsCert?: string;
  tlsKey?: string;
  log?: (entry: RequestLog) => void;
  /** Pull-through upstreams, `URL` or `HOST=URL` (see proxy.ts). */
  proxy?: string[];
  /** Re-check mirrored tags upstream after this long. */
  proxyTagTtlMs?: number;
  /** Upstream transport and credentials. */
  upstream?: RegistryOptions;
  /** Warnings (a stale tag served while the upstream is down). */
  warn?: (message: string) => void;
}

export interface RunningServer {
  /** The URL clients use, with the port actually bound: http://127.0.0.1:5000 */
  url: string;
  /** host:port as a reference's registry part. */
  host: string;
  close(): Promise<void>;
}

export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new SealimgError('USAGE', `--addr "${addr}" must be HOST:PORT, [IPV6]:PORT or :PORT`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export async function startRegistry(opts: ServeOptions): Promise<RunningServer> {
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) {
    throw new SealimgError('USAGE', '--tls-cert and --tls-key go together');
  }
  const { host, port } = parseAddr(opts.addr);
  const storage = await DistributionStorage.open(opts.root, { create: !opts.readOnly });
  if (opts.htpasswd && opts.token) throw new SealimgError('USAGE', '--htpasswd and --token-* are two kinds of auth; pick one');
  const auth = opts.htpasswd ? await HtpasswdAuth.load(opts.htpasswd) : opts.token ? await TokenAuth.load(opts.token) : undefined;
  const proxy = opts.proxy?.length
    ? new PullThrough(storage, opts.proxy.map(parseProxySpec), { tagTtlMs: opts.proxyTagTtlMs, registry: opts.upstream, warn: opts.warn })
    : undefined;
  const handler = createRegistryHandler(storage, { readOnly: opts.readOnly, auth, log: opts.log, proxy });
  let server: Server;
  const tls = opts.tlsCert !== undefined;
  if (tls) {
    const read = (f: string, what: string) =>
      readFile(f).catch((e: Error) => Promise.reject(new SealimgError('USAGE', `cannot read ${what} ${f}: ${e.message}`)));
    server = createHttpsServer({ cert: await read(opts.tlsCert!, '--tls-cert'), key: await read(opts.tlsKey!, '--tls-key') }, handler);
  } else {
    server = createHttpServer(handler);
  }
  // Large layers over slow links take long: no whole-request deadline, but idle sockets still close.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new SealimgError('USAGE', `cannot listen on ${opts.addr}: ${e.code ?? e.message}`, { hint: 'pick another --addr' })),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  const hostPort = `${shown === '0.0.0.0' || shown === '[::]' ? '127.0.0.1' : shown}:${bound.port}`;
  return {
    url: `${tls ? 'https' : 'http'}://${hostPort}`,
    host: hostPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          void (proxy?.close() ?? Promise.resolve()).then(() => resolve());
        });
        server.closeAllConnections();
      }),
  };
}
