/**
 * `sealimg registry sync`: a distribution directory (as a cluster image
 * carries) into a registry and a registry into a directory, skipping what the
 * target has, filtered by patterns, going on past a broken image.
 */
import { rm } from 'node:fs/promises';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copy } from '../../src/content/copy.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { DistributionStorage } from '../../src/content/distribution/storage.js';
import { DistributionStore } from '../../src/content/distribution/store.js';
import { startRegistry, type RunningServer } from '../../registry/server.js';
import { globMatcher } from '../../registry/sync.js';
import { ok, sealimg } from '../helpers/cli.js';
import { startRegistry as startDistribution, type TestRegistry as RunningRegistry } from '../helpers/registry.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg registry sync');
const running: Array<RunningServer | RunningRegistry> = [];
test.after.each(async () => {
  for (const s of running.splice(0)) await ('close' in s ? s.close() : s.stop());
  await cleanupTmp();
});

async function filledDirectory() {
  const src = await OciLayoutStore.open(await tmpDir(), { create: true });
  const a1 = await makeImage(src, { layers: ['a1'], tag: 'a1' });
  const a2 = await makeImage(src, { layers: ['a2'], tag: 'a2' });
  const b = await makeImage(src, { layers: ['b', 'b2'], tag: 'b' });
  const { index } = await makeIndex(src, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'multi');
  const root = await tmpDir();
  const dist = await DistributionStore.open(root, { create: true });
  await copy(src, 'a1', dist, 'team/a:v1');
  await copy(src, 'a2', dist, 'team/a:v2');
  await copy(src, 'b', dist, 'team/b:v1');
  await copy(src, 'multi', dist, 'other/c:v1');
  return { root, a1: a1.manifest.digest, a2: a2.manifest.digest, b, index: index.digest };
}

const inspect = async (ref: string) => (await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', ref])).length > 0;

test('patterns: * within a component, ** across, REPO:TAG with a colon', () => {
  const m = globMatcher(['team/*', 'other/**:v1']);
  assert.ok(m('team/a', 'x'));
  assert.not.ok(m('team/a/b', 'x'));
  assert.ok(m('other/c/d', 'v1'));
  assert.not.ok(m('other/c', 'v2'));
});

test('a directory into a registry, filtered; a second run copies nothing', async () => {
  const f = await filledDirectory();
  const reg = await startRegistry({ addr: '127.0.0.1:0', root: await tmpDir() });
  running.push(reg);
  const first = await sealimg(await tmpDir(), ['registry', 'sync', '--plain-http', '--exclude', 'other/**', `distribution:${f.root}`, reg.host]);
  assert.is(first.code, 0, first.stderr + first.stdout);
  assert.match(first.stdout, /3 copied, 0 already there, 0 failed/);
  assert.ok(await inspect(`docker://${reg.host}/team/a:v2`));
  assert.is((await fetch(`${reg.url}/v2/other/c/tags/list`)).status, 404, 'excluded repository not copied');
  const again = await sealimg(await tmpDir(), ['registry', 'sync', '--plain-http', `distribution:${f.root}`, reg.host]);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /1 copied, 3 already there, 0 failed/);
  const tags = (await (await fetch(`${reg.url}/v2/team/a/tags/list`)).json()) as { tags: string[] };
  assert.equal(tags.tags, ['v1', 'v2']);
});

test('a broken image is reported at the end with exit 1; the others still reach docker-registry', async () => {
  const f = await filledDirectory();
  const storage = await DistributionStorage.open(f.root);
  await rm(storage.layout.blobData(f.b.layers[1]!.digest));
  const target = await startDistribution();
  running.push(target);
  const r = await sealimg(await tmpDir(), ['registry', 'sync', '--plain-http', '--retry-times', '0', `distribution:${f.root}`, target.host]);
  assert.is(r.code, 1);
  assert.match(r.stdout, /3 copied, 0 already there, 1 failed/);
  assert.match(r.stdout, /failed: team\/b:v1: .*sha256:/);
  const out = await tmpDir();
  await ok('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${target.host}/other/c:v1`, `oci:${out}:c`]);
  assert.ok(await inspect(`docker://${target.host}/team/a:v1`));
});

test('a registry into a directory that docker-registry then serves', async () => {
  const f = await filledDirectory();
  const source = await startDistribution({ root: f.root });
  running.push(source);
  const dir = await tmpDir();
  const r = await sealimg(await tmpDir(), ['registry', 'sync', '--plain-http', '--include', 'team/a:v1', source.host, `distribution:${dir}`]);
  assert.is(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /1 copied/);
  const dist = await DistributionStore.open(dir);
  assert.is((await dist.resolve('team/a:v1')).digest, f.a1);
  assert.equal((await dist.list()).map((t) => t.ref), ['team/a:v1']);
});

test.run();
