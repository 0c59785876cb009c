/**
 * A push killed half-way (SIGKILL) resumes on the next run from the upload
 * location and offset it saved in the store: the registry receives every
 * byte of every blob once. The kill lands while a chunk is stalled on the way
 * (a proxy holds it), since distribution drops an upload whose chunk arrived
 * in part.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { RemoteStore } from '../../src/content/remote.js';
import { fetchAll } from '../../src/content/store.js';
import { digestOf } from '../../src/oci/digest.js';
import { makeImage } from '../helpers/images.js';
import { sealimg, sealimgToKill } from '../helpers/cli.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry: a killed push resumes');
let reg: TestRegistry;
let proxy: TestProxy | undefined;
const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
const CHUNK = 128 * 1024;

test.before(async () => {
  reg = await startRegistry();
});
test.after(async () => {
  await proxy?.stop();
  await reg?.stop();
  await cleanupTmp();
});

test('SIGKILL during a chunked push, then the same push: completes, no byte sent twice', async () => {
  let patches = 0;
  let hold = true;
  let held: (() => void) | undefined;
  const stalled = new Promise<void>((r) => (held = r));
  proxy = await startProxy(reg.port, (req) => {
    if (req.method !== 'PATCH') return undefined;
    if (++patches === 5 && hold) {
      held!();
      return { kind: 'hold' };
    }
    return undefined;
  });
  const root = await tmpDir();
  const local = await OciLayoutStore.open(root, { create: true });
  const ref = `${proxy.host}/resume/app:v1`;
  const img = await makeImage(local, { layers: [randomBytes(1_200_000), 'small'], tag: ref });
  const blobBytes = img.layers.reduce((n, l) => n + l.size, 0) + img.config.size;

  const child = sealimgToKill(root, ['push', '--quiet', '--plain-http', '--concurrency', '1', '--chunk-size', `${CHUNK / 1024}KiB`, ref], env, 60_000);
  await Promise.race([stalled, child.exited]);
  await child.kill();
  assert.is(patches, 5, 'the push was stalled at its fifth chunk');
  assert.equal((await readdir(join(root, '.uploads'))).length, 1, 'the upload in progress was saved in the store');
  const firstRun = proxy.stats.blobBytesUp;
  assert.ok(firstRun >= 4 * CHUNK, `4 chunks went through before the kill (${firstRun} bytes)`);

  hold = false;
  const r = await sealimg(root, ['push', '--quiet', '--plain-http', '--chunk-size', `${CHUNK / 1024}KiB`, ref], { env });
  assert.is(r.code, 0, `${r.stderr}\n${proxy.stats.log.join('\n')}`);
  assert.match(r.stdout, img.manifest.digest);
  assert.is(proxy.stats.blobBytesUp, blobBytes, `every blob byte reached the registry once (${proxy.stats.blobBytesUp} sent, ${blobBytes} in the image)`);
  assert.equal(await readdir(join(root, '.uploads')), [], 'the saved state is gone once the blob is in');

  const direct = await RemoteStore.open(`${reg.host}/resume/app`, { plainHttp: true, env }, 'pull');
  try {
    assert.is((await direct.resolve('v1')).digest, img.manifest.digest);
    for (const l of img.layers) assert.is(digestOf(await fetchAll(direct, l)), l.digest);
  } finally {
    await direct.close();
  }
});

test('SIGKILL during a pull, then the same pull: the blob resumes with Range from what was saved', async () => {
  // The image goes straight to the registry; the pull goes through a proxy that stalls the big download
  // part-way. The blob is large enough to take the bulk download path (bulk-get.ts).
  const direct = await RemoteStore.open(`${reg.host}/resume/pull`, { plainHttp: true, env }, 'push');
  const img = await makeImage(direct, { layers: [randomBytes(5_000_000), 'tiny'], tag: 'v1' });
  await direct.close();
  const big = img.layers.find((l) => l.size > 1_000_000)!;
  let stall = true;
  let stalled!: () => void;
  const stalledNow = new Promise<void>((r) => (stalled = r));
  const p = await startProxy(reg.port, (req) => {
    if (stall && req.method === 'GET' && req.url?.includes(`/blobs/${big.digest}`)) {
      stalled();
      return { kind: 'stall-response', after: 900_000 };
    }
    return undefined;
  });
  try {
    const root = await tmpDir();
    const ref = `${p.host}/resume/pull:v1`;
    const child = sealimgToKill(root, ['pull', '--quiet', '--plain-http', ref], env, 60_000);
    await Promise.race([stalledNow, child.exited]);
    // Wait (bounded) until the bytes that came are on disk, then kill.
    const partial = join(root, '.ingest', `sha256-${big.digest.slice(7)}.partial`);
    const { stat } = await import('node:fs/promises');
    let size = 0;
    for (let i = 0; i < 100; i++) {
      const now = await stat(partial).then((s) => s.size, () => 0);
      if (now > 0 && now === size) break;
      size = now;
      await new Promise((r) => setTimeout(r, 50));
    }
    await child.kill();
    size = await stat(partial).then((s) => s.size, () => 0);
    assert.ok(size > 0 && size <= 900_000, `a partial download was left (${size} bytes)`);

    stall = false;
    const before = p.stats.blobBytesDown;
    const r = await sealimg(root, ['pull', '--quiet', '--plain-http', ref], { env });
    assert.is(r.code, 0, `${r.stderr}\n${p.stats.log.join('\n')}`);
    assert.match(r.stdout, img.manifest.digest);
    assert.ok(p.stats.log.some((l) => l.includes(`/blobs/${big.digest} range=bytes=${size}-`)), p.stats.log.join('\n'));
    const second = p.stats.blobBytesDown - before;
    const others = img.layers.filter((l) => l !== big).reduce((n, l) => n + l.size, 0) + img.config.size;
    assert.ok(second <= big.size - size + others, `the second run fetched ${second} blob bytes; the rest of the big blob is ${big.size - size}`);
    const local = await OciLayoutStore.open(root);
    for (const l of img.layers) assert.is(digestOf(await fetchAll(local, l)), l.digest);
    assert.equal(await readdir(join(root, '.ingest')), [], 'nothing left in .ingest');
  } finally {
    await p.stop();
  }
});

test.run();
