/**
 * save and load, end to end through the CLI, against skopeo as the
 * independent reader and writer of oci-archive and docker-archive tarballs.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { digestOf, digestStream } from '../../src/oci/digest.js';
import { OCI_CONFIG, OCI_LAYER, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { ok, run, sealimg } from '../helpers/cli.js';
import { makeImage, makeIndex, pushBytes, tarOf } from '../helpers/images.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('offline: save and load');
test.after.each(cleanupTmp);

const ONE = 'example.com/cluster/one:v1';
const TWO = 'example.com/cluster/two:v1';

/** A store with two images that share a layer; returns their manifest digests. */
async function twoImages(root: string): Promise<{ one: string; two: string; blobs: number }> {
  const store = await OciLayoutStore.open(root, { create: true });
  const shared = randomBytes(200_000);
  const one = await makeImage(store, { layers: [shared, randomBytes(3000)], tag: ONE });
  const two = await makeImage(store, { layers: [shared, randomBytes(4000)], tag: TWO });
  await store.close();
  const distinct = new Set([one, two].flatMap((i) => [i.manifest, i.config, ...i.layers].map((d) => d.digest)));
  return { one: one.manifest.digest, two: two.manifest.digest, blobs: distinct.size };
}

/** The file entries of a tar, by name, with how often each appears. */
async function tarNames(file: string): Promise<string[]> {
  const out = await ok('tar', ['tf', file]);
  return out.split('\n').filter((n) => n !== '' && !n.endsWith('/'));
}

async function tagsOf(root: string): Promise<Record<string, string>> {
  const store = await OciLayoutStore.open(root);
  return Object.fromEntries((await store.list()).map((t) => [t.ref, t.descriptor.digest]));
}

/** Everything under a directory, recursively, with sizes: to show nothing changed. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.name === '.leases') continue; // a live process's marker, gone when it exits
      if (e.isDirectory()) await walk(p, `${rel}${e.name}/`);
      else out.push(`${rel}${e.name} ${(await stat(p)).size}`);
    }
  };
  await walk(dir, '');
  return out;
}

test('a tar of two images sharing layers holds each blob once, and skopeo reads either image from it both ways', async () => {
  const dir = await tmpDir();
  const { one, two, blobs } = await twoImages(join(dir, 'store'));
  const tar = join(dir, 'set.tar');
  const r = await sealimg(join(dir, 'store'), ['save', '-q', '-o', tar, ONE, TWO]);
  assert.is(r.code, 0, r.stderr);
  const names = await tarNames(tar);
  assert.is(new Set(names).size, names.length, `no entry twice: ${names.join(' ')}`);
  assert.is(names.filter((n) => n.startsWith('blobs/sha256/')).length, blobs);
  assert.ok(names.includes('index.json') && names.includes('manifest.json') && names.includes('oci-layout'));
  for (const [ref, digest] of [[ONE, one], [TWO, two]] as const) {
    const raw = JSON.parse(await ok('skopeo', ['inspect', `oci-archive:${tar}:${ref}`])) as { Digest: string };
    assert.is(raw.Digest, digest, 'skopeo sees the same manifest through oci-archive:');
    const out = join(dir, `out-${digest.slice(7, 15)}`);
    await ok('skopeo', ['copy', '-q', `docker-archive:${tar}:${ref}`, `oci:${out}:x`]);
    const layers = JSON.parse(await ok('skopeo', ['inspect', '--raw', `oci:${out}:x`])) as { layers: unknown[] };
    assert.is(layers.layers.length, 2, 'skopeo reads the image through docker-archive:');
  }
});

test('load into an empty store gives both images with the same digests: from a file, gzipped, and from stdin', async () => {
  const dir = await tmpDir();
  const { one, two } = await twoImages(join(dir, 'store'));
  const tar = join(dir, 'set.tar');
  const tgz = join(dir, 'set.tar.gz');
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '-o', tar, ONE, TWO])).code, 0);
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '--compress', '-o', tgz, ONE, TWO])).code, 0);
  assert.equal([...(await readFile(tgz)).subarray(0, 2)], [0x1f, 0x8b], '--compress gzips the tar');
  const want = { [ONE]: one, [TWO]: two };
  const fromFile = await sealimg(join(dir, 'a'), ['load', '-q', '-i', tar]);
  assert.is(fromFile.code, 0, fromFile.stderr);
  assert.match(fromFile.stdout, `Loaded image: ${ONE}`);
  assert.equal(await tagsOf(join(dir, 'a')), want);
  const gz = await sealimg(join(dir, 'b'), ['load', '-q', '-i', tgz]);
  assert.is(gz.code, 0, gz.stderr);
  assert.equal(await tagsOf(join(dir, 'b')), want);
  const piped = await sealimg(join(dir, 'c'), ['load', '-q'], { input: await readFile(tar) });
  assert.is(piped.code, 0, piped.stderr);
  assert.equal(await tagsOf(join(dir, 'c')), want);
  // What was loaded is whole: skopeo copies it out of the store.
  await ok('skopeo', ['copy', '-q', `oci:${join(dir, 'c')}:${TWO}`, `oci:${join(dir, 'check')}:x`]);
  // A blob no image uses is not kept, even by a one-pass load that had to take it in.
  const orphan = Buffer.from('nobody uses this');
  const withOrphan = Buffer.concat([tarOf({ [`blobs/sha256/${digestOf(orphan).slice(7)}`]: orphan }).subarray(0, 1024), await readFile(tar)]);
  assert.is((await sealimg(join(dir, 'd'), ['load', '-q'], { input: withOrphan })).code, 0);
  assert.equal((await readdir(join(dir, 'd', 'blobs', 'sha256'))).sort(), (await readdir(join(dir, 'a', 'blobs', 'sha256'))).sort());
});

test('save -o - writes the tar to stdout; --format picks one kind of metadata', async () => {
  const dir = await tmpDir();
  await twoImages(join(dir, 'store'));
  const r = await run('sh', ['-c', `node "$0" --root "$1" save -q -o - "$2" > "$3"`, (await import('../helpers/cli.js')).SEALIMG, join(dir, 'store'), ONE, join(dir, 'out.tar')]);
  assert.is(r.code, 0, r.stderr);
  assert.ok((await tarNames(join(dir, 'out.tar'))).includes('index.json'));
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '--format', 'oci-archive', '-o', join(dir, 'o.tar'), ONE])).code, 0);
  assert.not.ok((await tarNames(join(dir, 'o.tar'))).includes('manifest.json'));
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '--format', 'docker-archive', '-o', join(dir, 'd.tar'), ONE])).code, 0);
  const docker = await tarNames(join(dir, 'd.tar'));
  assert.ok(docker.includes('manifest.json') && !docker.includes('index.json'));
  await ok('skopeo', ['inspect', `docker-archive:${join(dir, 'd.tar')}:${ONE}`]);
  // A docker-archive loads back under its name, with a manifest sealimg makes the same way every time.
  const a = await sealimg(join(dir, 'x'), ['load', '-q', '-i', join(dir, 'd.tar')]);
  const b = await sealimg(join(dir, 'y'), ['load', '-q'], { input: await readFile(join(dir, 'd.tar')) });
  assert.is(a.code, 0, a.stderr);
  assert.is(b.code, 0, b.stderr);
  assert.equal(await tagsOf(join(dir, 'x')), await tagsOf(join(dir, 'y')));
  assert.ok((await tagsOf(join(dir, 'x')))[ONE]);
});

test('a multi-arch image keeps its index in the OCI part; docker manifest.json gets the --platform image', async () => {
  const dir = await tmpDir();
  const store = await OciLayoutStore.open(join(dir, 'store'), { create: true });
  const { index } = await makeIndex(store, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], 'example.com/multi:v1');
  await store.close();
  const tar = join(dir, 'm.tar');
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '--platform', 'linux/arm64', '-o', tar, 'example.com/multi:v1'])).code, 0);
  assert.is(digestOf(await ok('skopeo', ['inspect', '--raw', `oci-archive:${tar}:example.com/multi:v1`])), index.digest);
  const docker = JSON.parse(await ok('skopeo', ['inspect', `docker-archive:${tar}:example.com/multi:v1`])) as { Architecture: string };
  assert.is(docker.Architecture, 'arm64');
  assert.is((await sealimg(join(dir, 'back'), ['load', '-q', '-i', tar])).code, 0);
  assert.equal(await tagsOf(join(dir, 'back')), { 'example.com/multi:v1': index.digest });
});

test('skopeo-made oci-archive and docker-archive tarballs load, gzipped or not', async () => {
  const dir = await tmpDir();
  const { one } = await twoImages(join(dir, 'store'));
  const oci = join(dir, 'sk-oci.tar');
  const docker = join(dir, 'sk-docker.tar');
  await ok('skopeo', ['copy', '-q', `oci:${join(dir, 'store')}:${ONE}`, `oci-archive:${oci}:example.com/from/skopeo:oci`]);
  await ok('skopeo', ['copy', '-q', `oci:${join(dir, 'store')}:${ONE}`, `docker-archive:${docker}:example.com/from/skopeo:docker`]);
  const a = await sealimg(join(dir, 'a'), ['load', '-q', '-i', oci]);
  assert.is(a.code, 0, a.stderr);
  assert.equal(await tagsOf(join(dir, 'a')), { 'example.com/from/skopeo:oci': one }, 'an OCI archive keeps the manifest digest');
  const b = await sealimg(join(dir, 'b'), ['load', '-q', '-i', docker]);
  assert.is(b.code, 0, b.stderr);
  const dockerDigest = (await tagsOf(join(dir, 'b')))['example.com/from/skopeo:docker'];
  assert.ok(dockerDigest, b.stdout);
  await writeFile(join(dir, 'sk-docker.tar.gz'), gzipSync(await readFile(docker)));
  const c = await sealimg(join(dir, 'c'), ['load', '-q', '-i', join(dir, 'sk-docker.tar.gz')]);
  assert.is(c.code, 0, c.stderr);
  assert.equal(await tagsOf(join(dir, 'c')), { 'example.com/from/skopeo:docker': dockerDigest }, 'the same docker-archive gives the same digest either way');
  // The loaded image is one skopeo can read back out of the store.
  await ok('skopeo', ['copy', '-q', `oci:${join(dir, 'b')}:example.com/from/skopeo:docker`, `oci:${join(dir, 'check')}:x`]);
  // And sealimg reads both kinds as a source too.
  assert.is((await sealimg(join(dir, 'd'), ['pull', '-q', `docker-archive:${docker}:example.com/from/skopeo:docker`])).code, 0);
});

test('a docker save tarball of the classic layout (<id>/layer.tar, <config>.json) loads the same from a file and a stream', async () => {
  const dir = await tmpDir();
  const layerA = tarOf({ 'etc/a': randomBytes(3000) });
  const layerB = tarOf({ 'etc/b': randomBytes(5000) });
  const diffIds = [digestOf(layerA), digestOf(layerB)];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }));
  const configName = `${digestOf(config).slice(7)}.json`;
  const ids = ['1'.repeat(64), '2'.repeat(64)];
  const tar = tarOf({
    [`${ids[0]}/VERSION`]: '1.0',
    [`${ids[0]}/json`]: '{}',
    [`${ids[0]}/layer.tar`]: layerA,
    [`${ids[1]}/VERSION`]: '1.0',
    [`${ids[1]}/json`]: '{}',
    [`${ids[1]}/layer.tar`]: layerB,
    [configName]: config,
    'manifest.json': JSON.stringify([{ Config: configName, RepoTags: ['old/app:1.0'], Layers: ids.map((id) => `${id}/layer.tar`) }]),
    repositories: JSON.stringify({ 'old/app': { '1.0': ids[1] } }),
  });
  await writeFile(join(dir, 'docker.tar'), tar);
  const a = await sealimg(join(dir, 'a'), ['load', '-q', '-i', join(dir, 'docker.tar')]);
  assert.is(a.code, 0, a.stderr);
  const b = await sealimg(join(dir, 'b'), ['load', '-q'], { input: gzipSync(tar) });
  assert.is(b.code, 0, b.stderr);
  const tags = await tagsOf(join(dir, 'a'));
  assert.equal(Object.keys(tags), ['docker.io/old/app:1.0']);
  assert.equal(await tagsOf(join(dir, 'b')), tags);
  const manifest = JSON.parse(await ok('skopeo', ['inspect', '--raw', `oci:${join(dir, 'a')}:docker.io/old/app:1.0`])) as { layers: Array<{ digest: string }> };
  assert.equal(manifest.layers.map((l) => l.digest), diffIds, 'uncompressed layers keep their diff IDs as digests');
  assert.equal(await readdir(join(dir, 'b', '.ingest')).catch(() => []), [], 'no spool file is left');
});

/** A store with one image in it, to show that a failed load leaves it exactly as it was. */
async function bystander(root: string): Promise<void> {
  const store = await OciLayoutStore.open(root, { create: true });
  await makeImage(store, { tag: 'example.com/already/here:v1' });
  await store.close();
}

async function refused(dir: string, tarBytes: Buffer, expect: RegExp): Promise<void> {
  const root = join(dir, 'target');
  await bystander(root);
  const index = await readFile(join(root, 'index.json'));
  const before = await snapshot(root);
  const around = await snapshot(dir);
  const file = join(dir, 'bad.tar');
  await writeFile(file, tarBytes);
  for (const [how, args, input] of [
    ['file', ['load', '-q', '-i', file], undefined],
    ['stdin, gzipped', ['load', '-q'], gzipSync(tarBytes)],
  ] as const) {
    const r = await sealimg(root, [...args], { input });
    assert.is(r.code, 1, `${how}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, expect, `${how}: ${r.stderr}`);
    assert.ok((await readFile(join(root, 'index.json'))).equals(index), `${how}: index.json unchanged`);
    assert.equal(await snapshot(root), before, `${how}: no blob left behind`);
    assert.equal((await snapshot(dir)).filter((p) => !p.startsWith('bad.tar')), around.filter((p) => !p.startsWith('bad.tar')), `${how}: nothing written outside`);
  }
}

test('a tar with one flipped byte in a blob is refused and the store is unchanged', async () => {
  const dir = await tmpDir();
  await twoImages(join(dir, 'store'));
  const tar = join(dir, 'set.tar');
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '-o', tar, ONE, TWO])).code, 0);
  const bytes = await readFile(tar);
  // Flip a byte inside the largest blob (the shared layer), found by its content.
  const store = await OciLayoutStore.open(join(dir, 'store'));
  const blobs = await readdir(join(dir, 'store', 'blobs', 'sha256'));
  const sizes = await Promise.all(blobs.map(async (b) => ({ b, size: (await stat(join(dir, 'store', 'blobs', 'sha256', b))).size })));
  const largest = sizes.sort((x, y) => y.size - x.size)[0]!.b;
  const content = await readFile(store.blobPath(`sha256:${largest}`));
  const at = bytes.indexOf(content.subarray(0, 64));
  assert.ok(at > 0);
  bytes[at + 1000] ^= 0x01;
  await refused(await tmpDir(), bytes, /DIGEST_MISMATCH|hashes to/);
});

test('a tar with ../ entries, an absolute path or a link out of it is refused, naming the entry', async () => {
  const index = JSON.stringify({ schemaVersion: 2, manifests: [] });
  await refused(await tmpDir(), tarOf({ '../evil': 'x', 'index.json': index }), /entry "\.\.\/evil" has a "\.\." component/);
  const r1 = tarOf({ 'blobs/../../evil': 'x', 'index.json': index });
  await refused(await tmpDir(), r1, /entry "blobs\/\.\.\/\.\.\/evil" has a "\.\." component/);
  await refused(await tmpDir(), tarOf({ '/etc/evil': 'x', 'index.json': index }), /entry "\/etc\/evil" has an absolute path/);
  await refused(await tmpDir(), withLink(tarOf({ link: '', 'index.json': index }), '../../outside'), /entry "link" is a link that leaves the archive/);
});

test('a truncated tar is refused, from a file and from a stream', async () => {
  const dir = await tmpDir();
  await twoImages(join(dir, 'store'));
  const tar = join(dir, 'set.tar');
  assert.is((await sealimg(join(dir, 'store'), ['save', '-q', '-o', tar, ONE, TWO])).code, 0);
  const bytes = await readFile(tar);
  await refused(await tmpDir(), bytes.subarray(0, Math.floor(bytes.length / 2)), /truncated/);
});

test('an interrupted load (SIGINT mid-stream) adds nothing to the store', async () => {
  const dir = await tmpDir();
  const src = join(dir, 'store');
  const store = await OciLayoutStore.open(src, { create: true });
  await makeImage(store, { layers: [randomBytes(3_000_000), randomBytes(3_000_000)], tag: ONE });
  await store.close();
  const tar = await readFile(await (async () => {
    const f = join(dir, 'one.tar');
    assert.is((await sealimg(src, ['save', '-q', '-o', f, ONE])).code, 0);
    return f;
  })());
  const root = join(dir, 'target');
  await bystander(root);
  const before = await snapshot(root);
  const index = await readFile(join(root, 'index.json'));
  const { SEALIMG } = await import('../helpers/cli.js');
  const child = spawn(process.execPath, [SEALIMG, '--root', root, 'load', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  // Most of the first layer, then nothing more: the load is inside a blob when it is stopped.
  child.stdin.write(tar.subarray(0, 4_500_000));
  await new Promise((r) => setTimeout(r, 700));
  child.kill('SIGINT');
  const code = await exited;
  assert.is.not(code, 0, 'an interrupted load fails');
  assert.match(stderr, /interrupted|ABORTED/, `exit ${code}: ${stderr}`);
  assert.ok((await readFile(join(root, 'index.json'))).equals(index));
  assert.equal(await snapshot(root), before, 'no blob of the interrupted load is left');
});

/** Turns the first entry of a tar into a symbolic link to `target`. */
function withLink(tar: Buffer, target: string): Buffer {
  const h = tar.subarray(0, 512);
  h.write('2', 156);
  h.write(target, 157, 100);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return tar;
}

/**
 * Memory stays flat: a big random layer saves and loads (file, gzip and
 * stdin) with a peak RSS far below its size. SEALIMG_TEST_BIG_MB sets the size.
 */
test('save and load of a large image keep memory flat', async () => {
  const mb = Number(process.env.SEALIMG_TEST_BIG_MB ?? 200);
  const dir = await tmpDir();
  const root = join(dir, 'store');
  const store = await OciLayoutStore.open(root, { create: true });
  // A layer of random bytes, written and hashed in chunks: the test itself must not hold it either.
  const layerFile = join(dir, 'layer.tar');
  const size = mb * 1024 * 1024;
  await pipeline(
    (async function* () {
      const header = tarOf({ big: '' }).subarray(0, 512);
      header.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
      header.fill(0x20, 148, 156);
      let sum = 0;
      for (const b of header) sum += b;
      header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
      yield header;
      for (let left = size; left > 0; left -= 1 << 20) yield randomBytes(Math.min(left, 1 << 20));
      yield Buffer.alloc(1024);
    })(),
    createWriteStream(layerFile),
  );
  const layer = { mediaType: OCI_LAYER, ...(await digestStream(createReadStream(layerFile))) };
  await store.push(layer, createReadStream(layerFile));
  const config = await pushBytes(store, OCI_CONFIG, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] } })));
  const manifest = await pushBytes(store, OCI_MANIFEST, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] })));
  await store.tag(manifest, 'example.com/big/image:v1');
  await store.close();

  const probe = join(dir, 'rss.mjs');
  await writeFile(probe, "process.on('exit', () => process.stderr.write(`maxrss=${process.resourceUsage().maxRSS}\\n`));\n");
  const { SEALIMG } = await import('../helpers/cli.js');
  const measured = async (args: string[], input?: string): Promise<number> => {
    const cmd = `node --max-old-space-size=100 --import "$0" "$1" ${args.map((a) => `'${a}'`).join(' ')}${input ? ` < '${input}'` : ''}`;
    const r = await run('sh', ['-c', cmd, probe, SEALIMG], { timeoutMs: 300_000 });
    assert.is(r.code, 0, r.stderr);
    const kb = Number(/maxrss=(\d+)/.exec(r.stderr)?.[1]);
    return kb / 1024;
  };
  const tar = join(dir, 'big.tar');
  const limit = 150;
  const saved = await measured(['--root', root, 'save', '-q', '-o', tar, 'example.com/big/image:v1']);
  assert.ok(saved < limit, `save peaked at ${saved.toFixed(0)} MB for a ${mb} MB image`);
  const loaded = await measured(['--root', join(dir, 'a'), 'load', '-q', '-i', tar]);
  assert.ok(loaded < limit, `load from a file peaked at ${loaded.toFixed(0)} MB`);
  const streamed = await measured(['--root', join(dir, 'b'), 'load', '-q'], tar);
  assert.ok(streamed < limit, `load from stdin peaked at ${streamed.toFixed(0)} MB`);
  assert.equal(await tagsOf(join(dir, 'b')), { 'example.com/big/image:v1': manifest.digest });
  await mkdir(join(dir, 'done'));
});

test.run();
