/**
 * The local store against independent OCI tools: umoci builds an image that
 * sealimg pulls, lists, inspects, tags and removes; skopeo and umoci read the
 * store directly. Bad input leaves the store exactly as it was.
 */
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ok, sealimg } from '../helpers/cli.js';
import { snapshot } from '../helpers/snapshot.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('local store with skopeo and umoci');
test.after.each(cleanupTmp);

/** An image made by umoci in its own layout, with one file. */
async function umociImage(text: string): Promise<{ layout: string; digest: string }> {
  const dir = await tmpDir();
  const layout = join(dir, 'layout');
  const rootfs = join(dir, 'rootfs');
  await ok('mkdir', ['-p', join(rootfs, 'etc')]);
  await writeFile(join(rootfs, 'etc', 'hello'), text);
  await ok('umoci', ['init', '--layout', layout]);
  await ok('umoci', ['new', '--image', `${layout}:v1`]);
  await ok('umoci', ['insert', '--image', `${layout}:v1`, join(rootfs, 'etc'), '/etc']);
  await ok('umoci', ['config', '--image', `${layout}:v1`, '--config.label', 'sealos.io.type=rootfs']);
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  return { layout, digest: index.manifests[0].digest };
}

test('pull a umoci image, list, inspect, tag; skopeo and umoci read the store; rmi removes its blobs', async () => {
  const root = await tmpDir();
  const img = await umociImage('hello from umoci\n');
  const pulled = await sealimg(root, ['pull', '-q', `oci:${img.layout}:v1`]);
  assert.is(pulled.code, 0, pulled.stderr);
  assert.match(pulled.stdout, img.digest);

  const list = JSON.parse((await sealimg(root, ['images', '--format', 'json'])).stdout);
  assert.equal(list.map((i: { name: string; digest: string }) => [i.name, i.digest]), [['docker.io/library/v1:latest', img.digest]]);
  const table = (await sealimg(root, ['images'])).stdout;
  assert.match(table, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE/);
  assert.match(table, new RegExp(`docker.io/library/v1\\s+latest\\s+${img.digest.slice(7, 19)}`));

  const inspected = JSON.parse((await sealimg(root, ['inspect', 'v1'])).stdout);
  assert.is(inspected.digest, img.digest);
  assert.is(inspected.config.config.Labels['sealos.io.type'], 'rootfs');
  assert.is(inspected.manifest.layers.length, 1);

  assert.is((await sealimg(root, ['tag', 'v1', 'example.com/cluster/hello:1.0'])).code, 0);
  const sk = JSON.parse(await ok('skopeo', ['inspect', `oci:${root}:example.com/cluster/hello:1.0`]));
  assert.is(sk.Digest, img.digest);
  assert.is(sk.Labels['sealos.io.type'], 'rootfs');
  const unpacked = join(await tmpDir(), 'bundle');
  await ok('umoci', ['unpack', '--rootless', '--image', `${root}:example.com/cluster/hello:1.0`, unpacked]);
  assert.is(await readFile(join(unpacked, 'rootfs', 'etc', 'hello'), 'utf8'), 'hello from umoci\n');

  const byId = await sealimg(root, ['inspect', img.digest.slice(7, 19)]);
  assert.is(JSON.parse(byId.stdout).digest, img.digest);

  const rmi = await sealimg(root, ['rmi', 'v1', 'example.com/cluster/hello:1.0']);
  assert.is(rmi.code, 0, rmi.stderr);
  assert.match(rmi.stdout, `Deleted: ${img.digest}`);
  assert.equal(await readdir(join(root, 'blobs', 'sha256')), []);
  assert.equal(JSON.parse((await sealimg(root, ['images', '--format', 'json'])).stdout), []);
});

test('rmi keeps blobs another image still uses', async () => {
  const root = await tmpDir();
  const img = await umociImage('shared\n');
  await sealimg(root, ['pull', '-q', `oci:${img.layout}:v1`]);
  await sealimg(root, ['tag', 'v1', 'other:1']);
  await sealimg(root, ['rmi', 'v1']);
  const sk = JSON.parse(await ok('skopeo', ['inspect', `oci:${root}:docker.io/library/other:1`]));
  assert.is(sk.Digest, img.digest);
  const byId = await sealimg(root, ['rmi', img.digest.slice(7, 19)]);
  assert.is(byId.code, 0, byId.stderr);
  assert.equal(await readdir(join(root, 'blobs', 'sha256')), []);
});

test('skopeo writes into the store and sealimg lists it; push and copy to layouts keep digests', async () => {
  const root = await tmpDir();
  const img = await umociImage('via skopeo\n');
  await ok('skopeo', ['copy', '-q', `oci:${img.layout}:v1`, `oci:${root}:quay.io/team/app:2`]);
  const list = JSON.parse((await sealimg(root, ['images', '--format', 'json'])).stdout);
  assert.equal(list.map((i: { name: string }) => i.name), ['quay.io/team/app:2']);
  const out = join(await tmpDir(), 'out');
  const pushed = await sealimg(root, ['push', '-q', 'quay.io/team/app:2', `oci:${out}:pushed`]);
  assert.is(pushed.code, 0, pushed.stderr);
  assert.is(JSON.parse(await ok('skopeo', ['inspect', `oci:${out}:pushed`])).Digest, list[0].digest);
  const out2 = join(await tmpDir(), 'out2');
  const copied = await sealimg(root, ['copy', '-q', `oci:${out}:pushed`, `oci:${out2}:again`]);
  assert.is(copied.code, 0, copied.stderr);
  assert.is(JSON.parse(await ok('skopeo', ['inspect', `oci:${out2}:again`])).Digest, list[0].digest);
});

test('a corrupt index.json is reported and left as it was', async () => {
  const root = await tmpDir();
  const img = await umociImage('x\n');
  await sealimg(root, ['pull', '-q', `oci:${img.layout}:v1`]);
  await writeFile(join(root, 'index.json'), '{"schemaVersion": 2, "manifests": [');
  const before = await snapshot(root);
  for (const args of [['images'], ['tag', 'v1', 'b'], ['pull', '-q', `oci:${img.layout}:v1`], ['rmi', 'v1']]) {
    const r = await sealimg(root, args);
    assert.is(r.code, 1, args.join(' '));
    assert.match(r.stderr, /^Error: .*index\.json: not valid JSON.*\[STORE_CORRUPT\]\nHint: /);
    assert.not.match(r.stderr, /\n\s+at /, 'no stack trace without --debug');
  }
  assert.equal(await snapshot(root), before);
  const debug = await sealimg(root, ['--debug', 'images']);
  assert.match(debug.stderr, /\n\s+at /, '--debug shows the stack');
});

test('a blob whose bytes do not match its digest is refused and nothing is stored', async () => {
  const root = await tmpDir();
  const good = await umociImage('good\n');
  await sealimg(root, ['pull', '-q', `oci:${good.layout}:v1`]);
  const before = await snapshot(root);
  const bad = await umociImage('this layer will be damaged\n');
  const manifest = JSON.parse(await readFile(join(bad.layout, 'blobs', 'sha256', bad.digest.slice(7)), 'utf8'));
  const layer = join(bad.layout, 'blobs', 'sha256', manifest.layers[0].digest.slice(7));
  const bytes = await readFile(layer);
  bytes[bytes.length >> 1] ^= 0xff;
  await writeFile(layer, bytes);
  const r = await sealimg(root, ['pull', '-q', `oci:${bad.layout}:v1`]);
  assert.is(r.code, 1);
  assert.match(r.stderr, /source failed to fetch sha256:[0-9a-f]{64}: .*content hashes to sha256:.*\[DIGEST_MISMATCH\]/);
  assert.equal(await snapshot(root), before);
});

test('references that break the grammar are refused with the reason', async () => {
  const root = await tmpDir();
  const img = await umociImage('x\n');
  await sealimg(root, ['pull', '-q', `oci:${img.layout}:v1`]);
  const before = await snapshot(root);
  for (const bad of ['upper/Case', 'a//b', 'x:tag:more', 'repo@sha256:123']) {
    const r = await sealimg(root, ['tag', 'v1', 'fine:1', bad]);
    assert.is(r.code, 1, bad);
    assert.match(r.stderr, /invalid reference .*\[INVALID_REFERENCE\]/);
  }
  assert.equal(await snapshot(root), before, 'no tag was added, not even the valid one before the bad one');
});

test('two sealimg processes tagging at once lose no tag', async () => {
  const root = await tmpDir();
  const img = await umociImage('x\n');
  await sealimg(root, ['pull', '-q', `oci:${img.layout}:v1`]);
  const names = (p: string) => Array.from({ length: 15 }, (_, i) => `example.com/${p}:${i}`);
  const [a, b] = await Promise.all([sealimg(root, ['tag', 'v1', ...names('a')]), sealimg(root, ['tag', 'v1', ...names('b')])]);
  assert.is(a.code, 0, a.stderr);
  assert.is(b.code, 0, b.stderr);
  const list = JSON.parse((await sealimg(root, ['images', '--format', 'json'])).stdout).map((i: { name: string }) => i.name);
  assert.is(list.length, 31);
  for (const n of [...names('a'), ...names('b')]) assert.ok(list.includes(n), n);
});

test('usage errors exit 2; help lists every command', async () => {
  const root = await tmpDir();
  const r = await sealimg(root, ['tag', 'only-one']);
  assert.is(r.code, 2);
  assert.match(r.stderr, '[USAGE]');
  const help = await sealimg(root, ['--help']);
  for (const c of ['build', 'images', 'inspect', 'tag', 'rmi', 'prune', 'pull', 'push', 'copy', 'login', 'save', 'load', 'registry', 'run', 'reset', 'version']) {
    assert.match(help.stdout, new RegExp(`^  ${c} `, 'm'));
  }
  const cmdHelp = await sealimg(root, ['pull', '--help']);
  assert.is(cmdHelp.code, 0);
  assert.match(cmdHelp.stdout, 'Usage: sealimg pull');
  const unknown = await sealimg(root, ['images', '--bogus']);
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, "--bogus");
});

test.run();
