/**
 * Copying between two repositories of one registry mounts blobs instead of
 * sending them (cross-repository mount, distribution-spec "Mounting a blob").
 */
import { randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RemoteStore } from '../../src/content/remote.js';
import { digestOf } from '../../src/oci/digest.js';
import { fetchAll } from '../../src/content/store.js';
import { makeImage } from '../helpers/images.js';
import { sealimg } from '../helpers/cli.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry: cross-repository mount');
let reg: TestRegistry;
let proxy: TestProxy;
const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };

test.before(async () => {
  reg = await startRegistry();
  proxy = await startProxy(reg.port, () => undefined);
});
test.after(async () => {
  await proxy?.stop();
  await reg?.stop();
  await cleanupTmp();
});

test('copy between repositories of one registry sends no blob bytes', async () => {
  const src = await RemoteStore.open(`${reg.host}/team/source`, { plainHttp: true, env }, 'push');
  const img = await makeImage(src, { layers: [randomBytes(300_000), randomBytes(1000)], tag: 'v1' });
  await src.close();
  const r = await sealimg(await tmpDir(), ['copy', '--plain-http', `${proxy.host}/team/source:v1`, `${proxy.host}/other/dest:v2`], { env });
  assert.is(r.code, 0, r.stderr);
  assert.is(proxy.stats.blobBytesUp, 0, proxy.stats.log.join('\n'));
  assert.is(proxy.stats.log.filter((l) => l.startsWith('POST /v2/other/dest/blobs/uploads/')).length, 3, 'two layers and the config were mounted');
  const dst = await RemoteStore.open(`${reg.host}/other/dest`, { plainHttp: true, env }, 'pull');
  try {
    assert.is((await dst.resolve('v2')).digest, img.manifest.digest);
    for (const l of img.layers) assert.is(digestOf(await fetchAll(dst, l)), l.digest);
  } finally {
    await dst.close();
  }
});

test('chunked push honours the registry\'s OCI-Chunk-Min-Length over a smaller --chunk-size', async () => {
  const min = 400_000;
  const strict = await startProxy(reg.port, () => undefined, (req, headers) => {
    if (req.method === 'POST') headers['oci-chunk-min-length'] = String(min);
  });
  try {
    const root = await tmpDir();
    const { OciLayoutStore } = await import('../../src/content/oci-layout.js');
    const local = await OciLayoutStore.open(root, { create: true });
    const big = randomBytes(1_000_000);
    const img = await makeImage(local, { layers: [big], tag: `${strict.host}/chunky/app:v1` });
    const r = await sealimg(root, ['push', '--plain-http', '--chunk-size', '64KiB', `${strict.host}/chunky/app:v1`], { env });
    assert.is(r.code, 0, r.stderr);
    const layer = img.layers[0]!;
    const patches = strict.stats.log.filter((l) => l.startsWith('PATCH /v2/chunky/app/blobs/uploads/')).length;
    // 1 MB in chunks of at least 400 kB: two PATCHes, the rest with the closing PUT (not 15 chunks of 64 KiB).
    assert.is(patches, Math.ceil(layer.size / min) - 1, strict.stats.log.join('\n'));
  } finally {
    await strict.stop();
  }
});

test.run();
