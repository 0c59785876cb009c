/**
 * bulk-get: the blob download path, against a TCP server on 127.0.0.1 that
 * writes exactly the bytes each case needs (heads split across writes,
 * chunked bodies, bodies cut short), and against node:http for TLS.
 */
import { randomBytes, createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpsServer } from 'node:https';
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bulkGet, ChunkedDecoder } from '../../src/content/bulk-get.js';
import { isRetryableError } from '../../src/content/retry.js';
import { ok } from '../helpers/cli.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A server that answers each connection with `writes`, one socket write each, `gapMs` apart, then closes (or not). */
async function rawServer(writes: Buffer[], opts: { gapMs?: number; keepOpen?: boolean } = {}) {
  const requests: string[] = [];
  const server = net.createServer(async (sock) => {
    sock.on('error', () => undefined);
    let head = '';
    sock.on('data', (d) => (head += d.toString('latin1')));
    while (!head.includes('\r\n\r\n')) await once(sock, 'data');
    requests.push(head);
    for (const w of writes) {
      if (sock.destroyed) return;
      sock.write(w);
      if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
    }
    if (!opts.keepOpen) sock.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { url: new URL(`http://127.0.0.1:${port}/v2/a/blobs/sha256:x?y=1`), requests, close: () => server.close() };
}

async function get(url: URL, headers: Record<string, string> = {}) {
  return bulkGet({ method: 'GET', url, headers }, { rejectUnauthorized: true }, 10_000);
}

async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts);
}

const B = (s: string) => Buffer.from(s, 'latin1');

test('a Content-Length body, its head split across writes, arrives whole and the request carries our headers', async () => {
  const data = randomBytes(3 << 20);
  const s = await rawServer([B('HTTP/1.1 200 OK\r\nContent-Le'), B(`ngth: ${data.length}\r\nDocker-Content-Digest: sha256:x\r\n\r\n`), data.subarray(0, 100), data.subarray(100)], { gapMs: 5 });
  try {
    const res = await get(s.url, { authorization: 'Bearer t', range: 'bytes=0-' });
    assert.is(res.statusCode, 200);
    assert.is(res.headers['docker-content-digest'], 'sha256:x');
    assert.ok((await readAll(res.body)).equals(data));
    assert.match(s.requests[0]!, /^GET \/v2\/a\/blobs\/sha256:x\?y=1 HTTP\/1\.1\r\n/);
    assert.match(s.requests[0]!, /\r\nauthorization: Bearer t\r\n/);
    assert.match(s.requests[0]!, /\r\nrange: bytes=0-\r\n/);
    assert.match(s.requests[0]!, new RegExp(`\\r\\nhost: 127\\.0\\.0\\.1:${s.url.port}\\r\\n`));
  } finally {
    s.close();
  }
});

test('an interim 100 Continue before the response is skipped', async () => {
  const s = await rawServer([B('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')]);
  try {
    const res = await get(s.url);
    assert.is(res.statusCode, 200);
    assert.is((await readAll(res.body)).toString(), 'ok');
  } finally {
    s.close();
  }
});

test('the head and the first body bytes in one write; a body that ends with the connection', async () => {
  const s = await rawServer([B('HTTP/1.1 200 OK\r\nX: 1\r\n\r\nhello '), B('world')]);
  try {
    const res = await get(s.url);
    assert.is((await readAll(res.body)).toString(), 'hello world');
  } finally {
    s.close();
  }
});

test('a chunked body with extensions and trailers, split at every awkward place', async () => {
  const wire = B('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n');
  const writes = Array.from(wire).map((b) => Buffer.from([b])); // one byte a write
  const s = await rawServer(writes, { keepOpen: true });
  try {
    const res = await get(s.url);
    assert.is((await readAll(res.body)).toString(), 'hello 0123456789');
  } finally {
    s.close();
  }
});

test('the chunked decoder refuses a bad size line', () => {
  const d = new ChunkedDecoder();
  assert.throws(() => [...d.decode(B('zz\r\n'))], /bad chunk size/);
});

test('a body cut short fails with a code the resuming download retries on', async () => {
  const s = await rawServer([B('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n'), randomBytes(300)]);
  try {
    const res = await get(s.url);
    const err = await readAll(res.body).then(() => undefined, (e: Error) => e);
    assert.ok(err, 'the short body failed');
    assert.ok(isRetryableError(err), `retryable: ${String(err)}`);
  } finally {
    s.close();
  }
});

test('a connection closed before the head, and a garbled head, reject the request', async () => {
  const closed = await rawServer([]);
  const garbled = await rawServer([B('SMTP ready\r\n\r\n')]);
  try {
    const e1 = await get(closed.url).then(() => undefined, (e: Error) => e);
    assert.ok(e1 && isRetryableError(e1), String(e1));
    const e2 = await get(garbled.url).then(() => undefined, (e: Error) => e);
    assert.match(String(e2), /malformed HTTP response head/);
  } finally {
    closed.close();
    garbled.close();
  }
});

test('a slow reader holds the socket back (bounded memory) and still gets every byte', async () => {
  const data = randomBytes(32 << 20);
  const s = await rawServer([B(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\n\r\n`), data]);
  try {
    const res = await get(s.url);
    const hash = createHash('sha256');
    let most = 0;
    for await (const c of res.body) {
      hash.update(c);
      most = Math.max(most, res.body.readableLength);
      await new Promise((r) => setImmediate(r));
    }
    assert.is(hash.digest('hex'), createHash('sha256').update(data).digest('hex'));
    assert.ok(most <= 4 << 20, `buffered at most ${most} bytes`);
  } finally {
    s.close();
  }
});

test('an abort signal ends the download', async () => {
  const s = await rawServer([B('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n'), B('x')], { keepOpen: true });
  try {
    const ac = new AbortController();
    const res = await bulkGet({ method: 'GET', url: s.url, headers: {}, signal: ac.signal }, { rejectUnauthorized: true }, 10_000);
    setTimeout(() => ac.abort(new Error('stop')), 20);
    const err = await readAll(res.body).then(() => undefined, (e: Error) => e);
    assert.match(String(err), /stop/);
  } finally {
    s.close();
  }
});

test('over TLS, checked against the CA given, refused without it', async () => {
  const dir = await tmpDir();
  const key = join(dir, 'k.pem');
  const crt = join(dir, 'c.pem');
  await ok('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', crt, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const cert = await readFile(crt, 'utf8');
  const data = randomBytes(5 << 20);
  const server = createHttpsServer({ key: await readFile(key), cert }, (_req, res) => {
    res.setHeader('content-length', data.length);
    res.end(data);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = new URL(`https://127.0.0.1:${(server.address() as net.AddressInfo).port}/v2/x`);
  try {
    const res = await bulkGet({ method: 'GET', url, headers: {} }, { rejectUnauthorized: true, ca: [cert] }, 10_000);
    assert.ok((await readAll(res.body)).equals(data));
    const err = await bulkGet({ method: 'GET', url, headers: {} }, { rejectUnauthorized: true }, 10_000).then(() => undefined, (e: Error) => e);
    assert.ok(err, 'an unknown CA is refused');
  } finally {
    server.close();
  }
});

test.after(cleanupTmp);

test.run();
