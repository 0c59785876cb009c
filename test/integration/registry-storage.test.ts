/**
 * The distribution directory is shared with the real CNCF registry: what
 * sealimg stores there, docker-registry serves to skopeo, and what skopeo
 * pushed through docker-registry, sealimg reads back digest for digest.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copy } from '../../src/content/copy.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { fetchAll } from '../../src/content/store.js';
import { DistributionStore } from '../../registry/storage/store.js';
import { startDistribution, type RunningRegistry } from '../helpers/distribution-server.js';
import { ok } from '../helpers/cli.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry storage shared with docker-registry');
let server: RunningRegistry | undefined;

test.after.each(async () => {
  await server?.stop();
  server = undefined;
  await cleanupTmp();
});

test('docker-registry serves what sealimg stored in the directory', async () => {
  const src = await OciLayoutStore.open(await tmpDir(), { create: true });
  const one = await makeImage(src, { layers: ['hello', 'world'], tag: 'one' });
  const { index } = await makeIndex(src, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  const root = await tmpDir();
  const dist = await DistributionStore.open(root, { create: true });
  await copy(src, 'one', dist.repository('example.com/app'), 'v1');
  await copy(src, 'multi', dist, 'library/multi:v2');

  server = await startDistribution(root, await tmpDir());
  const info = JSON.parse(await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${server.addr}/example.com/app:v1`]));
  assert.equal(info.layers.map((l: { digest: string }) => l.digest), one.layers.map((l) => l.digest));
  const digest = (await ok('skopeo', ['inspect', '--format', '{{.Digest}}', '--tls-verify=false', `docker://${server.addr}/example.com/app:v1`])).trim();
  assert.is(digest, one.manifest.digest);

  const out = await tmpDir();
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${server.addr}/library/multi:v2`, `oci:${out}:got`]);
  const copied = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
  assert.is(copied.manifests[0].digest, index.digest);
  const tags = await (await fetch(`http://${server.addr}/v2/library/multi/tags/list`)).json();
  assert.equal(tags, { name: 'library/multi', tags: ['v2'] });
  const catalog = await (await fetch(`http://${server.addr}/v2/_catalog`)).json();
  assert.equal(catalog, { repositories: ['example.com/app', 'library/multi'] });
});

test('sealimg reads what skopeo pushed through docker-registry', async () => {
  const srcDir = await tmpDir();
  const src = await OciLayoutStore.open(srcDir, { create: true });
  const one = await makeImage(src, { layers: ['a', 'b', 'c'], tag: 'one' });
  const root = await tmpDir();
  server = await startDistribution(root, await tmpDir());
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${srcDir}:one`, `docker://${server.addr}/team/tool:1.0`]);
  await server.stop();
  server = undefined;

  const dist = await DistributionStore.open(root);
  assert.is((await dist.resolve('team/tool:1.0')).digest, one.manifest.digest);
  assert.equal((await dist.list()).map((t) => t.ref), ['team/tool:1.0']);
  const back = await OciLayoutStore.open(await tmpDir(), { create: true });
  await copy(dist.repository('team/tool'), '1.0', back, 'back');
  for (const l of one.layers) assert.is((await fetchAll(back, l)).length, l.size);
  assert.is((await back.resolve('back')).digest, one.manifest.digest);
});

test.run();
