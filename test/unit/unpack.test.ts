/** Unpacking layers: whiteouts in order, and no entry can write outside the target. */
import { lstat, mkdir, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { unpackLayer } from '../../src/content/unpack.js';
import { OCI_LAYER } from '../../src/oci/mediatypes.js';
import { pushBytes, tarOf } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';
import { tree } from '../helpers/tree.js';

const test = suite('unpack');
test.after.each(cleanupTmp);

async function setup() {
  const store = await OciLayoutStore.open(await tmpDir(), { create: true });
  const root = join(await tmpDir(), 'rootfs');
  await mkdir(root);
  return { store, root, outside: join(root, '..') };
}

test('whiteouts and opaque directories remove what lower layers put there', async () => {
  const { store, root } = await setup();
  const lower = await pushBytes(store, OCI_LAYER, tarOf({ 'a/': { type: 'dir' }, 'a/x': 'x', 'a/y': 'y', 'b/z': 'z', 'd/old': 'o', 'bin/run': { type: 'dir', mode: 0o700 }, 'ln': { type: 'symlink', target: 'a/y' } }));
  const upper = await pushBytes(store, OCI_LAYER, tarOf({ 'a/.wh.x': '', '.wh.b': '', 'd/new': 'n', 'd/.wh..wh..opq': '', 'run.sh': { type: 'link', target: 'a/y' } }));
  await unpackLayer(store, lower, root);
  await unpackLayer(store, upper, root);
  assert.equal(await tree(root), ['a/', 'a/y', 'bin/', 'bin/run/', 'd/', 'd/new', 'ln', 'run.sh']);
  assert.is(await readFile(join(root, 'd/new'), 'utf8'), 'n', 'an opaque marker after a new file in the same layer keeps that file');
  assert.is(await readlink(join(root, 'ln')), 'a/y');
  assert.is((await lstat(join(root, 'bin/run'))).mode & 0o777, 0o700);
  assert.is((await lstat(join(root, 'run.sh'))).ino, (await lstat(join(root, 'a/y'))).ino);
});

for (const [name, files] of [
  ['a ../ path', { '../evil': 'x' }],
  ['a path through a symlink that leaves the root', { esc: { type: 'symlink', target: '..' }, 'esc/evil': 'x' }],
  ['a hard link to a file outside', { h: { type: 'link', target: '../outside-secret' } }],
] as const) {
  test(`refuses ${name}, writing nothing outside`, async () => {
    const { store, root, outside } = await setup();
    const before = await readdir(outside);
    const layer = await pushBytes(store, OCI_LAYER, tarOf(files as never));
    try {
      await unpackLayer(store, layer, root);
      assert.unreachable('accepted');
    } catch (e) {
      assert.is((e as { code: string }).code, 'ARCHIVE_INVALID', String(e));
      assert.match((e as Error).message, layer.digest);
    }
    assert.equal(await readdir(outside), before);
  });
}

test('a truncated layer is an error, not a partial success', async () => {
  const { store, root } = await setup();
  const full = tarOf({ 'big': Buffer.alloc(100_000, 1) });
  const layer = await pushBytes(store, OCI_LAYER, full.subarray(0, 20_000));
  try {
    await unpackLayer(store, layer, root);
    assert.unreachable('accepted');
  } catch (e) {
    assert.is((e as { code: string }).code, 'ARCHIVE_INVALID', String(e));
  }
});

test.run();
