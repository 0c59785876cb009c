/**
 * Mounting without a runtime: trees merge in image order with hard links,
 * templates render next to themselves, Config patches apply with sealos'
 * strategies, and nothing written into a merged tree reaches the image cache.
 */
import { lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { applyConfig, linkTree, mergeEnv, mountAll, renderTemplates } from '../../src/runner/mount.js';
import { resolveImages, type RunImage } from '../../src/runner/images.js';
import { ClusterDir } from '../../src/runner/cluster-dir.js';
import { openLocalStore } from '../../src/content/local.js';
import { sealimg } from '../helpers/cli.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('mount');
test.after.each(cleanupTmp);

async function files(dir: string, entries: Record<string, string>): Promise<string> {
  for (const [rel, text] of Object.entries(entries)) {
    await mkdir(join(dir, rel, '..'), { recursive: true });
    await writeFile(join(dir, rel), text, { mode: rel.endsWith('.sh.tmpl') ? 0o755 : 0o644 });
  }
  return dir;
}

test('later images win; the merged tree links to the cache and writes never reach it', async () => {
  const a = await files(await tmpDir(), { 'etc/a.conf': 'a1', 'etc/shared.conf': 'from a', 'scripts/init.sh.tmpl': 'echo {{ .registryDomain }}' });
  const b = await files(await tmpDir(), { 'etc/shared.conf': 'from b', 'bin/tool': 'x' });
  const merged = join(await tmpDir(), 'rootfs');
  await linkTree(a, merged);
  await linkTree(b, merged);
  assert.is(await readFile(join(merged, 'etc/shared.conf'), 'utf8'), 'from b');
  assert.is((await lstat(join(merged, 'etc/a.conf'))).ino, (await lstat(join(a, 'etc/a.conf'))).ino, 'a hard link, not a copy');
  const rendered = await renderTemplates(merged, { registryDomain: 'sealos.hub' });
  assert.equal(rendered, ['scripts/init.sh']);
  assert.is(await readFile(join(merged, 'scripts/init.sh'), 'utf8'), 'echo sealos.hub');
  assert.is((await lstat(join(merged, 'scripts/init.sh'))).mode & 0o777, 0o755, 'a rendered script stays executable');
  await applyConfig(merged, { name: 'c', path: 'etc/shared.conf', strategy: 'override', data: 'patched' });
  assert.is(await readFile(join(b, 'etc/shared.conf'), 'utf8'), 'from b', 'the cached image is untouched');
});

test('a later image may turn a file into a directory, a directory into a file, and a file into a symlink', async () => {
  const a = await files(await tmpDir(), { 'opt/x': 'file in a', 'opt/y/inner': 'dir in a', 'opt/z': 'file in a', 'keep/k': 'k' });
  const b = await files(await tmpDir(), { 'opt/x/inside': 'dir in b', 'opt/y': 'file in b' });
  await symlink('../keep/k', join(b, 'opt/z'));
  const merged = join(await tmpDir(), 'rootfs');
  await linkTree(a, merged);
  await linkTree(b, merged);
  assert.is(await readFile(join(merged, 'opt/x/inside'), 'utf8'), 'dir in b');
  assert.is(await readFile(join(merged, 'opt/y'), 'utf8'), 'file in b');
  assert.is(await readlink(join(merged, 'opt/z')), '../keep/k');
  assert.is(await readFile(join(merged, 'keep/k'), 'utf8'), 'k');
  assert.is(await readFile(join(a, 'opt/z'), 'utf8'), 'file in a', 'the cached image is untouched');
});

test('Config strategies: merge (YAML), override, append, insert; paths cannot leave the tree', async () => {
  const t = await files(await tmpDir(), { 'charts/values.yaml': 'a: 1\nnested:\n  keep: true\n  change: old\n', 'etc/list': 'two\n' });
  await applyConfig(t, { name: 'v', path: 'charts/values.yaml', strategy: 'merge', data: 'nested:\n  change: new\nb: 2\n' });
  assert.is(await readFile(join(t, 'charts/values.yaml'), 'utf8'), 'a: 1\nnested:\n  keep: true\n  change: new\nb: 2\n');
  await applyConfig(t, { name: 'l', path: 'etc/list', strategy: 'append', data: 'three\n' });
  await applyConfig(t, { name: 'l', path: '/etc/list', strategy: 'insert', data: 'one\n' });
  assert.is(await readFile(join(t, 'etc/list'), 'utf8'), 'one\ntwo\nthree\n');
  await applyConfig(t, { name: 'n', path: 'etc/new.yaml', strategy: 'merge', data: 'x: 1\n' });
  assert.is(await readFile(join(t, 'etc/new.yaml'), 'utf8'), 'x: 1\n');
  try {
    await applyConfig(t, { name: 'bad', path: '../outside', strategy: 'override', data: 'x' });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'Config bad: path "../outside" leaves the image');
  }
});

test('an image is unpacked once for every cluster, also by two clusters at once, and its tree goes with `rmi`', async () => {
  const root = await tmpDir();
  const home = await tmpDir();
  const context = await files(await tmpDir(), { 'Sealfile': 'FROM scratch\nLABEL sealos.io.type=rootfs sealos.io.version=v1beta1\nCOPY data data\n', 'data/bin/tool': 'tool' });
  assert.is((await sealimg(root, ['build', '-q', '-t', 'example.com/shared:v1', context])).code, 0);
  const store = await openLocalStore(root);
  const images = await resolveImages(store, ['example.com/shared:v1'], { root });
  const digest = images[0]!.descriptor.digest;
  // Two clusters mounting the same new image at once: both unpack, one tree wins, no temp dir stays.
  const [one, two] = [new ClusterDir(home, 'one'), new ClusterDir(home, 'two')];
  const [m1, m2] = await Promise.all([mountAll(store, one, images, {}, []), mountAll(store, two, images, {}, [])]);
  assert.is(two.mount(digest), one.mount(digest), 'one cache for both clusters');
  const cached = join(one.mount(digest), 'data/bin/tool');
  const ino = (await lstat(cached)).ino;
  assert.is((await lstat(join(m1.rootfs, 'data/bin/tool'))).ino, ino);
  assert.is((await lstat(join(m2.rootfs, 'data/bin/tool'))).ino, ino);
  assert.equal((await readdir(one.mounts)).filter((n) => n.includes('.tmp-')), [], 'no temp dir left');
  // A third cluster later uses the tree as it is: with the image's layer gone from the store, an unpack would fail.
  const manifest = JSON.parse(await readFile(join(root, 'blobs/sha256', digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string }> };
  await rm(join(root, 'blobs/sha256', manifest.layers[0]!.digest.slice(7)));
  const three = new ClusterDir(home, 'three');
  const m3 = await mountAll(store, three, images, {}, []);
  assert.is((await lstat(join(m3.rootfs, 'data/bin/tool'))).ino, ino, 'the third cluster links the same unpacked file: not unpacked again');
  // rmi removes the image, and with it the unpacked tree; a run of another image would prune it as well.
  const rmi = await sealimg(root, ['rmi', 'example.com/shared:v1'], { env: { ...process.env, SEALIMG_HOME: home } });
  assert.is(rmi.code, 0, rmi.stderr);
  assert.is(await lstat(cached).then(() => 'kept', () => 'gone'), 'gone');
  assert.is(await lstat(`${one.mount(digest)}.json`).then(() => 'kept', () => 'gone'), 'gone');
});

test('ENV merges in image order, then the Clusterfile, then -e', () => {
  const image = (env: string[]) => ({ config: { config: { Env: env } } }) as unknown as RunImage;
  const vars = mergeEnv([image(['a=1', 'b=1']), image(['b=2', 'url=http://x?y=z'])], ['c=3'], ['a=9']);
  assert.equal(vars, { a: '9', b: '2', url: 'http://x?y=z', c: '3' });
});

test.run();
