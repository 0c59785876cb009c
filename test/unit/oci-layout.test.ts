import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { storeConformance } from '../conformance/store.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { OCI_LAYER } from '../../src/oci/mediatypes.js';
import { makeImage, pushBytes } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

storeConformance('OCI layout', async () => ({ store: await OciLayoutStore.open(await tmpDir(), { create: true }) }));

const test = suite('OCI layout store');
test.after.each(cleanupTmp);

test('a non-empty directory that is not a layout is refused, not taken over', async () => {
  const dir = await tmpDir();
  await writeFile(join(dir, 'notes.txt'), 'mine');
  try {
    await OciLayoutStore.open(dir, { create: true });
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code: string }).code, 'STORE_CORRUPT');
  }
});

test('gc keeps what tags reach, and spares fresh blobs while another writer is live', async () => {
  const store = await OciLayoutStore.open(await tmpDir(), { create: true });
  const kept = await makeImage(store, { tag: 'kept' });
  const orphan = await pushBytes(store, OCI_LAYER, randomBytes(100));
  // Another process's write lease, as a pull in flight holds one.
  const other = spawn('sleep', ['30']);
  await mkdir(join(store.root, '.leases'), { recursive: true });
  await writeFile(join(store.root, '.leases', `${other.pid}-test`), `${other.pid}\n`);
  const later = await pushBytes(store, OCI_LAYER, randomBytes(100));
  try {
    const spared = await store.gc();
    assert.equal(spared.removed.map((d) => d.digest), [orphan.digest], 'only the blob older than the lease goes');
  } finally {
    other.kill();
    await new Promise((r) => other.once('exit', r));
  }
  const swept = await store.gc();
  assert.equal(swept.removed.map((d) => d.digest), [later.digest], 'once the writer is gone, its orphan goes too');
  for (const d of [kept.manifest, kept.config, ...kept.layers]) assert.ok(await store.exists(d));
  await store.close();
});

test.run();
