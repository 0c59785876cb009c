/**
 * Load on a registry: N concurrent clients for D seconds, each pushing a blob
 * (POST + PATCH + PUT), pulling it back and checking its digest, plus a
 * manifest GET per round. Prints rounds, errors and digest failures.
 * Usage: node dist/bench/registry-load.js URL CLIENTS SECONDS
 */
import { createHash, randomBytes } from 'node:crypto';
import { Pool } from 'undici';

const [url, clientsArg, secondsArg] = process.argv.slice(2);
if (!url) throw new Error('usage: registry-load.js URL CLIENTS SECONDS');
const clients = Number(clientsArg ?? 64);
const deadline = Date.now() + Number(secondsArg ?? 60) * 1000;
const pool = new Pool(url, { connections: clients });
let rounds = 0;
let errors = 0;
let badDigests = 0;
const firstErrors: string[] = [];

async function call(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) {
  const res = await pool.request({ method: method as 'GET', path, body, headers: body ? { 'content-length': String(body.length), ...headers } : headers });
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
}

async function client(i: number): Promise<void> {
  const repo = `load/client${i % 8}`;
  while (Date.now() < deadline) {
    try {
      const blob = randomBytes(64 * 1024 + Math.floor(Math.random() * 192 * 1024));
      const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
      const post = await call('POST', `/v2/${repo}/blobs/uploads/`);
      if (post.status !== 202) throw new Error(`POST ${post.status}`);
      const loc = new URL(String(post.headers.location), url);
      const patch = await call('PATCH', `${loc.pathname}${loc.search}`, blob, { 'content-type': 'application/octet-stream' });
      if (patch.status !== 202) throw new Error(`PATCH ${patch.status}`);
      // Upload locations may be absolute and carry their own query (the CNCF registry's _state).
      const at = new URL(String(patch.headers.location), url);
      at.searchParams.set('digest', digest);
      const put = await call('PUT', `${at.pathname}${at.search}`);
      if (put.status !== 201) throw new Error(`PUT ${put.status} ${put.body}`);
      const get = await call('GET', `/v2/${repo}/blobs/${digest}`);
      if (get.status !== 200) throw new Error(`GET ${get.status}`);
      if (`sha256:${createHash('sha256').update(get.body).digest('hex')}` !== digest) badDigests++;
      const m = await call('GET', '/v2/bench/app/manifests/v1', undefined, { accept: 'application/vnd.oci.image.manifest.v1+json' });
      if (m.status !== 200) throw new Error(`manifest GET ${m.status}`);
      rounds++;
    } catch (e) {
      errors++;
      if (firstErrors.length < 5) firstErrors.push(String(e));
    }
  }
}

await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
await pool.close();
process.stdout.write(`${JSON.stringify({ clients, rounds, errors, badDigests, firstErrors })}\n`);
