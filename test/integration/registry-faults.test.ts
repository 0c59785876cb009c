/**
 * sealimg against a real registry behind a proxy that misbehaves: a blob whose
 * bytes do not match its digest, 503/429 answers, connections dropped before,
 * during and after requests. Push and pull must complete and verify every
 * digest, or fail saying which digest was wrong, storing nothing.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { RemoteStore } from '../../src/content/remote.js';
import { fetchAll } from '../../src/content/store.js';
import { isSealimgError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { makeImage, type TestImage } from '../helpers/images.js';
import { sealimg } from '../helpers/cli.js';
import { seeded, startProxy, type Fault, type TestProxy } from '../helpers/proxy.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry faults: corrupt blobs, 5xx/429, dropped connections');
let reg: TestRegistry;
const proxies: TestProxy[] = [];
const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };

test.before(async () => {
  reg = await startRegistry();
});
test.after.each(async () => {
  for (const p of proxies.splice(0)) await p.stop();
});
test.after(async () => {
  await reg?.stop();
  await cleanupTmp();
});

async function pushDirect(repo: string, layers: Array<string | Buffer>): Promise<TestImage> {
  const store = await RemoteStore.open(`${reg.host}/${repo}`, { plainHttp: true, env }, 'push');
  try {
    return await makeImage(store, { layers, tag: 'v1' });
  } finally {
    await store.close();
  }
}

test('a registry serving a blob that does not match its digest: DIGEST_MISMATCH, nothing stored', async () => {
  const img = await pushDirect('corrupt/app', [randomBytes(40_000)]);
  const layer = img.layers[0]!;
  const proxy = await startProxy(reg.port, (req) => (req.method === 'GET' && req.url?.includes(`/blobs/${layer.digest}`) ? { kind: 'flip' } : undefined));
  proxies.push(proxy);
  const root = await tmpDir();
  const r = await sealimg(root, ['pull', '--plain-http', `${proxy.host}/corrupt/app:v1`], { env });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /^Error: .*\[DIGEST_MISMATCH\]$/m, 'one clear line, not a crash');
  assert.not.match(r.stderr, /node:events|Unhandled/);
  assert.match(r.stderr, layer.digest);
  assert.is(proxy.stats.faults.flip, 1, 'the registry was asked once: a wrong digest is not retried');
  const local = await OciLayoutStore.open(root, { create: true });
  assert.is(await local.exists(layer), false);
  assert.equal(await local.list(), []);
  const ingest = await readdir(join(root, '.ingest')).catch(() => []);
  assert.equal(ingest, [], `no partial file left behind; sealimg said:\n${r.stderr}`);
});

test('push and pull complete through random 503/429s and dropped connections; every digest checks', async () => {
  const random = seeded(20261125);
  let faults = 0;
  let streak = 0;
  let cuts = 0;
  const firsts = new Set<string>();
  const decide = (req: import('node:http').IncomingMessage): Fault | undefined => {
    const url = req.url ?? '';
    const len = Number(req.headers['content-length'] ?? 0);
    const isBlobGet = req.method === 'GET' && url.includes('/blobs/sha256:');
    // Each kind of fault happens at least once, at a known place; more come at random, bounded.
    const once = (key: string, f: Fault) => (firsts.has(key) ? undefined : (firsts.add(key), f));
    let f: Fault | undefined =
      (req.method === 'PATCH' && len > 100_000 ? once('cut-patch', { kind: 'cut-request', after: Math.floor(len / 2) }) : undefined) ??
      (isBlobGet && url.includes(big) ? once('cut-get', { kind: 'cut-response', after: 300_000 }) : undefined) ??
      (isBlobGet && url.includes(huge) ? once('cut-get-bulk', { kind: 'cut-response', after: 2_000_000 }) : undefined) ??
      (req.method === 'HEAD' ? once('503', { kind: 'status', status: 503 }) : undefined) ??
      (req.method === 'POST' ? once('429', { kind: 'status', status: 429, retryAfter: '0' }) : undefined) ??
      (req.method === 'PUT' ? once('drop', { kind: 'drop' }) : undefined);
    if (!f && faults < 14 && streak < 2 && random() < 0.3) {
      const r = random();
      if (len > 0 && cuts < 2 && r < 0.25) {
        cuts++;
        f = { kind: 'cut-request', after: Math.floor(len / 3) };
      } else if (isBlobGet && r < 0.5) f = { kind: 'cut-response', after: 100_000 };
      else if (r < 0.7) f = { kind: 'status', status: 503 };
      else if (r < 0.85) f = { kind: 'status', status: 429, retryAfter: '0' };
      else f = { kind: 'drop' };
    }
    if (f) {
      faults++;
      streak++;
    } else streak = 0;
    return f;
  };
  const bigLayer = randomBytes(1_500_000);
  const big = digestOf(await gz(bigLayer));
  // Large enough for the bulk download path (bulk-get.ts), which must resume just as well.
  const hugeLayer = randomBytes(5_000_000);
  const huge = digestOf(await gz(hugeLayer, 1));
  const proxy = await startProxy(reg.port, (req) => decide(req));
  proxies.push(proxy);

  const root = await tmpDir();
  const local = await OciLayoutStore.open(root, { create: true });
  const img = await makeImage(local, { layers: [bigLayer, hugeLayer, randomBytes(100_000), 'small'], tag: `${proxy.host}/faulty/app:v1` });
  assert.ok(img.layers.some((l) => l.digest === big) && img.layers.some((l) => l.digest === huge));
  const pushed = await sealimg(root, ['push', '--plain-http', '--chunk-size', '256KiB', `${proxy.host}/faulty/app:v1`], { env });
  assert.is(pushed.code, 0, `${pushed.stderr}\n${proxy.stats.log.join('\n')}`);

  // The registry itself (not through the proxy) holds exactly the image.
  const direct = await RemoteStore.open(`${reg.host}/faulty/app`, { plainHttp: true, env }, 'pull');
  try {
    assert.is((await direct.resolve('v1')).digest, img.manifest.digest);
    for (const l of img.layers) assert.is(digestOf(await fetchAll(direct, l)), l.digest);
  } finally {
    await direct.close();
  }

  const root2 = await tmpDir();
  const pulled = await sealimg(root2, ['pull', '--plain-http', `${proxy.host}/faulty/app:v1`], { env });
  assert.is(pulled.code, 0, `${pulled.stderr}\n${proxy.stats.log.join('\n')}`);
  assert.match(pulled.stdout, img.manifest.digest);
  const back = await OciLayoutStore.open(root2);
  for (const l of img.layers) assert.ok(await back.exists(l), `pulled ${l.digest}`);

  if (process.env.SEALIMG_TEST_DEBUG) console.log(proxy.stats.log.join('\n'));
  for (const kind of ['status', 'drop', 'cut-request', 'cut-response']) assert.ok((proxy.stats.faults[kind] ?? 0) > 0, `the proxy injected ${kind}`);
  assert.ok(proxy.stats.log.some((l) => l.includes(`${big} range=bytes=`)), 'a broken download resumed with Range');
  assert.ok(proxy.stats.log.some((l) => l.includes(`${huge} range=bytes=`)), 'a broken bulk download resumed with Range');
});

test('blob downloads redirected to another server (as to cloud storage) arrive from there, large and small', async () => {
  // 5 MB takes the bulk download path (bulk-get.ts), 100 kB node:http's.
  const img = await pushDirect('redirected/app', [randomBytes(5_000_000), randomBytes(100_000)]);
  const storage = await startProxy(reg.port, (req) => {
    if (!req.url?.includes('X-Signature=')) return { kind: 'status', status: 403 };
    return req.headers.authorization ? { kind: 'status', status: 400 } : undefined;
  });
  proxies.push(storage);
  const front = await startProxy(reg.port, (req) =>
    req.method === 'GET' && req.url?.includes('/blobs/sha256:') ? { kind: 'redirect', location: `http://${storage.host}${req.url}?X-Signature=abc` } : undefined,
  );
  proxies.push(front);
  const root = await tmpDir();
  const r = await sealimg(root, ['pull', '--plain-http', `${front.host}/redirected/app:v1`], { env });
  assert.is(r.code, 0, `${r.stderr}\n${front.stats.log.join('\n')}\n${storage.stats.log.join('\n')}`);
  const back = await OciLayoutStore.open(root);
  for (const l of img.layers) assert.ok(await back.exists(l), `pulled ${l.digest}`);
  for (const l of [...img.layers, img.config]) assert.ok(storage.stats.log.some((line) => line.includes(`/blobs/${l.digest}`)), `storage served ${l.digest}`);
  assert.is(storage.stats.faults.status ?? 0, 0, 'every storage request was signed and carried no registry credentials');
});

test('429 with Retry-After is honoured; --retry-times 0 gives up at once', async () => {
  await pushDirect('slow/app', ['x']);
  let n = 0;
  const proxy = await startProxy(reg.port, () => (n++ === 0 ? { kind: 'status', status: 429, retryAfter: '1' } : undefined));
  proxies.push(proxy);
  const store = await RemoteStore.open(`${proxy.host}/slow/app`, { plainHttp: true, env }, 'pull');
  try {
    const t0 = Date.now();
    await store.resolve('v1');
    assert.ok(Date.now() - t0 >= 950, `waited ${Date.now() - t0} ms`);
  } finally {
    await store.close();
  }
  const always = await startProxy(reg.port, () => ({ kind: 'status', status: 503 }));
  proxies.push(always);
  const none = await RemoteStore.open(`${always.host}/slow/app`, { plainHttp: true, env, retryTimes: 0 }, 'pull');
  try {
    await none.resolve('v1');
    assert.unreachable('resolved through a registry that always fails');
  } catch (e) {
    assert.ok(isSealimgError(e, 'REGISTRY_ERROR'), String(e));
    assert.is(always.stats.requests, 1);
  } finally {
    await none.close();
  }
});

/** The gzip layer makeImage makes of `layerFile` as its layer number `index`. */
async function gz(layerFile: Buffer, index = 0): Promise<Buffer> {
  const { gzipSync } = await import('node:zlib');
  const { tarOf } = await import('../helpers/images.js');
  return gzipSync(tarOf({ [`file${index}`]: layerFile }));
}

test.run();
