/**
 * The transfer issue's acceptance at its own size: an image of about 500 MB
 * that sealimg built, pushed to the CNCF registry and pulled back, each killed
 * with SIGKILL half-way and run again. The proxy between counts the blob
 * bytes: a finished chunk is never sent twice, and the pull resumes with Range
 * from what it had saved. (registry-resume.test.ts covers the same with small
 * chunks and blobs.)
 */
import { randomFillSync } from 'node:crypto';
import { open, readdir, stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { fetchAll } from '../../src/content/store.js';
import type { Descriptor, ImageManifest } from '../../src/oci/types.js';
import { sealimg, sealimgToKill } from '../helpers/cli.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry: a ~500 MB push and pull, each killed half-way, resume');
let reg: TestRegistry;
let proxy: TestProxy | undefined;
const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
const SIZE = 500 << 20;
const CHUNK = 16 << 20; // the default --chunk-size
let root: string;

test.before(async () => {
  reg = await startRegistry();
  // The image: one incompressible 500 MB file, built by sealimg without compression so its one big layer is that size.
  const ctx = await tmpDir();
  await mkdir(join(ctx, 'data'));
  const fh = await open(join(ctx, 'data', 'big.bin'), 'w');
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let at = 0; at < SIZE; at += buf.length) await fh.write(randomFillSync(buf));
  await fh.close();
  await writeFile(join(ctx, 'Sealfile'), 'FROM scratch\nCOPY data /data\n');
  root = await tmpDir();
  const b = await sealimg(root, ['build', '-q', '--compression', 'none', '-t', 'big:v1', ctx]);
  assert.is(b.code, 0, b.stderr);
});
test.after(async () => {
  await proxy?.stop();
  await reg?.stop();
  await cleanupTmp();
});

/** The built image: its manifest digest, the bytes of all its blobs, and its big layer. */
async function image(storeRoot: string): Promise<{ digest: string; blobBytes: number; big: Descriptor }> {
  const store = await OciLayoutStore.open(storeRoot);
  const desc = await store.resolve('docker.io/library/big:v1');
  const m = JSON.parse((await fetchAll(store, desc)).toString('utf8')) as ImageManifest;
  const big = m.layers.reduce((a, l) => (l.size > a.size ? l : a));
  return { digest: desc.digest, blobBytes: m.layers.reduce((n, l) => n + l.size, 0) + m.config.size, big };
}

test('SIGKILL half-way through the push, then the same push: completes, every blob byte reaches the registry once', async () => {
  const img = await image(root);
  assert.ok(img.big.size > SIZE, `the big layer holds the file (${img.big.size} bytes)`);
  const half = Math.floor(img.big.size / CHUNK / 2);
  let patches = 0;
  let hold = true;
  let held!: () => void;
  const stalled = new Promise<void>((r) => (held = r));
  proxy = await startProxy(reg.port, (req) => {
    if (req.method !== 'PATCH') return undefined;
    if (++patches === half + 1 && hold) {
      held();
      return { kind: 'hold' };
    }
    return undefined;
  });
  const ref = `${proxy.host}/large/app:v1`;
  const t = await sealimg(root, ['tag', 'big:v1', ref]);
  assert.is(t.code, 0, t.stderr);
  const child = sealimgToKill(root, ['push', '--quiet', '--plain-http', '--concurrency', '1', ref], env);
  await Promise.race([stalled, child.exited]);
  await child.kill();
  assert.is(patches, half + 1, `the push was stalled at chunk ${half + 1}`);
  assert.equal((await readdir(join(root, '.uploads'))).length, 1, 'the upload in progress was saved in the store');
  const firstRun = proxy.stats.blobBytesUp;
  assert.ok(firstRun >= half * CHUNK, `${half} chunks went through before the kill (${firstRun} bytes)`);

  hold = false;
  const r = await sealimg(root, ['push', '--quiet', '--plain-http', ref], { env });
  assert.is(r.code, 0, `${r.stderr}\n${proxy.stats.log.slice(-20).join('\n')}`);
  assert.match(r.stdout, img.digest);
  assert.is(proxy.stats.blobBytesUp, img.blobBytes, `every blob byte reached the registry once (${proxy.stats.blobBytesUp} sent, ${img.blobBytes} in the image)`);
  assert.equal(await readdir(join(root, '.uploads')), [], 'the saved state is gone once the blob is in');
  await proxy.stop();
  proxy = undefined;
});

test('SIGKILL half-way through the pull, then the same pull: resumes with Range, verifies, fetches only the rest', async () => {
  const img = await image(root);
  const after = Math.floor(img.big.size / 2);
  let stall = true;
  let stalled!: () => void;
  const stalledNow = new Promise<void>((r) => (stalled = r));
  proxy = await startProxy(reg.port, (req) => {
    if (stall && req.method === 'GET' && req.url?.includes(`/blobs/${img.big.digest}`)) {
      stalled();
      return { kind: 'stall-response', after };
    }
    return undefined;
  });
  const dest = await tmpDir();
  const ref = `${proxy.host}/large/app:v1`;
  const child = sealimgToKill(dest, ['pull', '--quiet', '--plain-http', ref], env);
  await Promise.race([stalledNow, child.exited]);
  // Wait (bounded) until what came is on disk and stays so, then kill.
  const partial = join(dest, '.ingest', `sha256-${img.big.digest.slice(7)}.partial`);
  let size = 0;
  for (let i = 0, same = 0; i < 600 && same < 3; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await stat(partial).then((s) => s.size, () => 0);
    same = now > 0 && now === size ? same + 1 : 0;
    size = now;
  }
  await child.kill();
  size = await stat(partial).then((s) => s.size, () => 0);
  assert.ok(size > after / 2 && size <= after, `about half the blob was saved (${size} of ${img.big.size} bytes)`);

  stall = false;
  const before = proxy.stats.blobBytesDown;
  const r = await sealimg(dest, ['pull', '--quiet', '--plain-http', ref], { env });
  assert.is(r.code, 0, `${r.stderr}\n${proxy.stats.log.join('\n')}`);
  assert.match(r.stdout, img.digest);
  assert.ok(proxy.stats.log.some((l) => l.includes(`/blobs/${img.big.digest} range=bytes=${size}-`)), proxy.stats.log.join('\n'));
  const second = proxy.stats.blobBytesDown - before;
  assert.ok(second <= img.blobBytes - size, `the second run fetched ${second} blob bytes; the image has ${img.blobBytes}, ${size} of them saved`);
  const pulled = await OciLayoutStore.open(dest);
  assert.ok(await pulled.exists(img.big), 'the big layer is in the store');
  assert.equal(await readdir(join(dest, '.ingest')), [], 'nothing left in .ingest');
});

test.run();
