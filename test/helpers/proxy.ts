/**
 * A small HTTP proxy that sits between sealimg and a real registry and
 * misbehaves on purpose: answers 503/429, drops connections before or in the
 * middle of a request or response, or flips a byte of a response body. What it
 * does to each request is decided by the test; it counts what it did.
 */
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Fault =
  | { kind: 'status'; status: number; retryAfter?: string }
  /** Close the connection without forwarding anything. */
  | { kind: 'drop' }
  /** Forward `after` bytes of the request body, then drop both connections. */
  | { kind: 'cut-request'; after: number }
  /** Forward the response, dropping the connection after `after` body bytes. */
  | { kind: 'cut-response'; after: number }
  /** Forward the response with one body byte changed. */
  | { kind: 'flip' }
  /** Forward nothing and answer nothing: a stalled connection. */
  | { kind: 'hold' }
  /** Answer 307 to `location`, as registries do to send blob downloads to their storage. */
  | { kind: 'redirect'; location: string }
  /** Forward the response's first `after` body bytes, then nothing more: a download that stalls. */
  | { kind: 'stall-response'; after: number };

export type Decide = (req: IncomingMessage, index: number) => Fault | undefined;

export interface TestProxy {
  host: string;
  port: number;
  /** Requests seen, faults injected by kind, request body bytes forwarded upstream. */
  stats: { requests: number; faults: Record<string, number>; bytesUp: number; blobBytesUp: number; blobBytesDown: number; log: string[] };
  stop(): Promise<void>;
}

/** Changes a response's headers on the way back (e.g. to add OCI-Chunk-Min-Length). */
export type Rewrite = (req: IncomingMessage, headers: Record<string, string | string[] | undefined>) => void;

export async function startProxy(targetPort: number, decide: Decide, rewrite?: Rewrite): Promise<TestProxy> {
  const stats = { requests: 0, faults: {} as Record<string, number>, bytesUp: 0, blobBytesUp: 0, blobBytesDown: 0, log: [] as string[] };
  const sockets = new Set<Socket>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const index = stats.requests++;
    const fault = decide(req, index);
    if (fault) stats.faults[fault.kind] = (stats.faults[fault.kind] ?? 0) + 1;
    stats.log.push(`${req.method} ${req.url?.split('?')[0]}${req.headers.range ? ` range=${req.headers.range}` : ''}${fault ? ` <- ${fault.kind}` : ''}`);
    if (fault?.kind === 'hold') {
      req.pause();
      return;
    }
    if (fault?.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'redirect') {
      req.resume();
      req.on('end', () => {
        res.writeHead(307, { location: fault.location, 'content-length': '0' });
        res.end();
      });
      return;
    }
    if (fault?.kind === 'status') {
      req.resume();
      req.on('end', () => {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
        res.writeHead(fault.status, headers);
        res.end('{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}');
      });
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (ures) => {
      const headers = { ...ures.headers };
      rewrite?.(req, headers);
      res.writeHead(ures.statusCode ?? 502, headers);
      let seen = 0;
      let flipped = false;
      const isBlobGet = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
      ures.on('data', (chunk: Buffer) => {
        if (fault?.kind === 'stall-response' && seen + chunk.length > fault.after) {
          const part = chunk.subarray(0, Math.max(0, fault.after - seen));
          if (isBlobGet) stats.blobBytesDown += part.length;
          seen = fault.after;
          res.write(part);
          ures.pause();
          return;
        }
        if (isBlobGet) stats.blobBytesDown += chunk.length;
        if (fault?.kind === 'cut-response' && seen + chunk.length > fault.after) {
          res.write(chunk.subarray(0, Math.max(0, fault.after - seen)));
          ures.destroy();
          res.socket?.destroy();
          return;
        }
        if (fault?.kind === 'flip' && !flipped && chunk.length > 0) {
          chunk = Buffer.from(chunk);
          chunk[0] ^= 0xff;
          flipped = true;
        }
        seen += chunk.length;
        res.write(chunk);
      });
      ures.on('end', () => res.end());
      ures.on('error', () => res.socket?.destroy());
    });
    up.on('error', () => res.socket?.destroy());
    let sent = 0;
    const isUpload = (req.url ?? '').includes('/blobs/uploads/');
    req.on('data', (chunk: Buffer) => {
      if (isUpload) stats.blobBytesUp += fault?.kind === 'cut-request' ? Math.max(0, Math.min(chunk.length, fault.after - sent)) : chunk.length;
      if (fault?.kind === 'cut-request' && sent + chunk.length > fault.after) {
        up.write(chunk.subarray(0, Math.max(0, fault.after - sent)));
        stats.bytesUp += Math.max(0, fault.after - sent);
        sent = fault.after;
        // Let the partial body reach the registry, then break both sides.
        setTimeout(() => {
          up.destroy();
          req.socket.destroy();
        }, 20);
        req.pause();
        return;
      }
      sent += chunk.length;
      stats.bytesUp += chunk.length;
      up.write(chunk);
    });
    req.on('end', () => up.end());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`,
    port,
    stats,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A small deterministic PRNG (mulberry32), so a failing fault run can be replayed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
