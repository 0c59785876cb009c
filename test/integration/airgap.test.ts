/**
 * The air-gapped path: in a network namespace with only loopback up (no
 * route anywhere), a fresh store loads a saved set, and `sealimg registry
 * serve` inside the namespace serves it; skopeo reads it back. Needs root for `ip netns`; as any other user it says so
 * and checks nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { digestOf } from '../../src/oci/digest.js';
import { SEALIMG, ok, run, sealimg } from '../helpers/cli.js';
import { makeImage } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('offline: air-gapped load and serve');
const ns = `sealimg-airgap-${process.pid}-${randomBytes(3).toString('hex')}`;
const children: ChildProcess[] = [];
let made = false;

test.after(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (made) await run('ip', ['netns', 'del', ns]);
  await cleanupTmp();
});

const inNs = (cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}) => run('ip', ['netns', 'exec', ns, cmd, ...args], opts);

test('a saved set loads and is served from a registry inside a namespace with no route out', async () => {
  if (process.getuid?.() !== 0) {
    console.log('  (air-gap test needs root for ip netns; not run)');
    return;
  }
  const dir = await tmpDir();
  const store = await OciLayoutStore.open(join(dir, 'build'), { create: true });
  const shared = randomBytes(50_000);
  const one = await makeImage(store, { layers: [shared, randomBytes(1000)], tag: 'example.com/cluster/one:v1' });
  const two = await makeImage(store, { layers: [shared], tag: 'example.com/cluster/two:v1' });
  await store.close();
  const tar = join(dir, 'set.tar.gz');
  assert.is((await sealimg(join(dir, 'build'), ['save', '-q', '--compress', '-o', tar, 'example.com/cluster/one:v1', 'example.com/cluster/two:v1'])).code, 0);

  await ok('ip', ['netns', 'add', ns]);
  made = true;
  await ok('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  // The namespace really is cut off: no routes but loopback's, nothing reachable outside.
  assert.is((await ok('ip', ['netns', 'exec', ns, 'ip', '-4', 'route', 'show'])).trim(), '');
  const out = await inNs('ip', ['route', 'get', '192.0.2.1']);
  assert.is.not(out.code, 0, 'no route out of the namespace');

  const site = join(dir, 'site');
  const loaded = await inNs(process.execPath, [SEALIMG, '--root', site, 'load', '-q'], { input: await readFile(tar) });
  assert.is(loaded.code, 0, loaded.stderr);
  assert.match(loaded.stdout, 'Loaded image: example.com/cluster/two:v1');

  // Serve it: sealimg's own registry on the namespace's loopback, filled from the loaded store by sealimg.
  const reg = spawn('ip', ['netns', 'exec', ns, process.execPath, SEALIMG, '--root', join(dir, 'registry'), 'registry', 'serve', '--addr', '127.0.0.1:5000', '--log-level', 'error'], { stdio: 'ignore' });
  children.push(reg);
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    const probe = await inNs(process.execPath, ['-e', "fetch('http://127.0.0.1:5000/v2/').then(() => process.exit(0), () => process.exit(1))"]);
    up = probe.code === 0;
    if (!up) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(up, 'the registry in the namespace answers');
  for (const [name, image] of [['one', one], ['two', two]] as const) {
    const ref = `example.com/cluster/${name}:v1`;
    const copied = await inNs(process.execPath, [SEALIMG, '--root', site, 'push', '-q', '--plain-http', ref, `127.0.0.1:5000/cluster/${name}:v1`]);
    assert.is(copied.code, 0, copied.stderr);
    const raw = await inNs('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://127.0.0.1:5000/cluster/${name}:v1`]);
    assert.is(raw.code, 0, raw.stderr);
    assert.is(digestOf(raw.stdout), image.manifest.digest, `${name} is served with the digest it was built with`);
  }
});

test.run();
