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
import { DistributionStore } from '../../src/content/distribution/store.js';
import { startRegistry as startDistribution, type TestRegistry as RunningRegistry } from '../helpers/registry.js';
import { ok, sealimg } from '../helpers/cli.js';
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

  server = await startDistribution({ root: root });
  const info = JSON.parse(await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${server.host}/example.com/app:v1`]));
  assert.equal(info.layers.map((l: { digest: string }) => l.digest), one.layers.map((l) => l.digest));
  const digest = (await ok('skopeo', ['inspect', '--format', '{{.Digest}}', '--tls-verify=false', `docker://${server.host}/example.com/app:v1`])).trim();
  assert.is(digest, one.manifest.digest);

  const out = await tmpDir();
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${server.host}/library/multi:v2`, `oci:${out}:got`]);
  const copied = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
  assert.is(copied.manifests[0].digest, index.digest);
  const tags = await (await fetch(`http://${server.host}/v2/library/multi/tags/list`)).json();
  assert.equal(tags, { name: 'library/multi', tags: ['v2'] });
  const catalog = await (await fetch(`http://${server.host}/v2/_catalog`)).json();
  assert.equal(catalog, { repositories: ['example.com/app', 'library/multi'] });
});

test('sealimg reads what skopeo pushed through docker-registry', async () => {
  const srcDir = await tmpDir();
  const src = await OciLayoutStore.open(srcDir, { create: true });
  const one = await makeImage(src, { layers: ['a', 'b', 'c'], tag: 'one' });
  const root = await tmpDir();
  server = await startDistribution({ root: root });
  await ok('skopeo', ['copy', '--dest-tls-verify=false', `oci:${srcDir}:one`, `docker://${server.host}/team/tool:1.0`]);
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

test('sealimg copy into distribution:DIR:REPO:TAG, served by docker-registry', async () => {
  const srcDir = await tmpDir();
  const src = await OciLayoutStore.open(srcDir, { create: true });
  const one = await makeImage(src, { tag: 'one' });
  const root = await tmpDir();
  const r = await sealimg(await tmpDir(), ['copy', '-q', `oci:${srcDir}:one`, `distribution:${root}:cluster/images/app:v1`]);
  assert.is(r.code, 0, r.stderr);
  server = await startDistribution({ root: root });
  const digest = (await ok('skopeo', ['inspect', '--format', '{{.Digest}}', '--tls-verify=false', `docker://${server.host}/cluster/images/app:v1`])).trim();
  assert.is(digest, one.manifest.digest);
  const out = await tmpDir();
  const back = await sealimg(await tmpDir(), ['copy', '-q', `distribution:${root}:cluster/images/app:v1`, `oci:${out}:x`]);
  assert.is(back.code, 0, back.stderr);
  assert.is(back.stdout.trim(), one.manifest.digest);
});

test.run();
