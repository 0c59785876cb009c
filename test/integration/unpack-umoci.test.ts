/**
 * An image whose upper layer deletes files (umoci writes the whiteouts) unpacks
 * to the same tree with sealimg as with umoci itself.
 */
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { unpackImage } from '../../src/content/unpack.js';
import { ok } from '../helpers/cli.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';
import { tree } from '../helpers/tree.js';

const test = suite('unpack against umoci');
test.after.each(cleanupTmp);

test('deletions and replaced directories come out as umoci sees them', async () => {
  const dir = await tmpDir();
  const layout = join(dir, 'layout');
  const bundle = join(dir, 'bundle');
  await ok('umoci', ['init', '--layout', layout]);
  await ok('umoci', ['new', '--image', `${layout}:t`]);
  await ok('umoci', ['unpack', '--rootless', '--image', `${layout}:t`, bundle]);
  const rootfs = join(bundle, 'rootfs');
  await mkdir(join(rootfs, 'etc/conf.d'), { recursive: true });
  await mkdir(join(rootfs, 'scripts'), { recursive: true });
  await writeFile(join(rootfs, 'etc/conf.d/a'), 'a');
  await writeFile(join(rootfs, 'etc/conf.d/b'), 'b');
  await writeFile(join(rootfs, 'scripts/init.sh'), '#!/bin/sh\n');
  await ok('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  await rm(join(rootfs, 'etc/conf.d/a'));
  await rm(join(rootfs, 'scripts'), { recursive: true });
  await writeFile(join(rootfs, 'etc/conf.d/c'), 'c');
  await ok('umoci', ['repack', '--image', `${layout}:t`, bundle]);

  const theirs = join(dir, 'theirs');
  await ok('umoci', ['unpack', '--rootless', '--image', `${layout}:t`, theirs]);
  const store = await OciLayoutStore.open(layout);
  const ours = join(dir, 'ours');
  const config = await unpackImage(store, await store.resolve('t'), ours);
  assert.is(config.os, 'linux');
  assert.equal(await tree(ours), await tree(join(theirs, 'rootfs')));
  assert.equal(await tree(ours), ['etc/', 'etc/conf.d/', 'etc/conf.d/b', 'etc/conf.d/c']);
  assert.is(await readFile(join(ours, 'etc/conf.d/c'), 'utf8'), 'c');
});

test.run();
