/**
 * `sealimg build` end to end, checked by independent tools: umoci unpacks what
 * was built (files, contents, modes, whiteouts applied), skopeo reads its
 * labels and config, `tar` lists the layer entries. Also determinism, and
 * that every failure leaves the store exactly as it was.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmod, cp, link, lstat, mkdir, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ok, run, sealimg } from '../helpers/cli.js';
import { startRegistry } from '../helpers/registry.js';
import { makeIndex } from '../helpers/images.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));
const Build = suite('build');

/** Writes a context from an object literal: `path: content` or `path: [content, mode]` or `path: {link}`. */
async function context(files: Record<string, string | [string, number] | { link: string }>): Promise<string> {
  const dir = await tmpDir('sealimg-ctx-');
  for (const [path, v] of Object.entries(files)) {
    const host = join(dir, path);
    await mkdir(join(host, '..'), { recursive: true });
    if (typeof v === 'object' && !Array.isArray(v)) await symlink(v.link, host);
    else {
      await writeFile(host, Array.isArray(v) ? v[0] : v);
      await chmod(host, Array.isArray(v) ? v[1] : 0o644);
    }
  }
  return dir;
}

/** Every path under `dir` as `type mode path [sha256|target]`, sorted: what a user compares by eye. */
async function tree(dir: string, skip: (rel: string) => boolean = () => false): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    for (const n of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      if (skip(r)) continue;
      const st = await lstat(join(dir, r));
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      if (st.isDirectory()) {
        out.push(`d ${mode} ${r}`);
        await visit(r);
      } else if (st.isSymbolicLink()) out.push(`l ${r} -> ${await readlink(join(dir, r))}`);
      else out.push(`f ${mode} ${r} ${createHash('sha256').update(await readFile(join(dir, r))).digest('hex').slice(0, 16)}`);
    }
  };
  await visit('');
  return out;
}

/** What a failed command must not change: every blob and the index. */
async function storeState(root: string): Promise<string> {
  const blobs = await readdir(join(root, 'blobs', 'sha256')).catch(() => [] as string[]);
  const index = await readFile(join(root, 'index.json'), 'utf8').catch(() => '');
  return `${blobs.sort().join('\n')}\n${index}`;
}

async function unpack(root: string, ref: string): Promise<string> {
  const out = join(await tmpDir('sealimg-unpack-'), 'bundle');
  await ok('umoci', ['unpack', '--rootless', '--image', `${root}:${ref}`, out]);
  return join(out, 'rootfs');
}

async function buildOk(root: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await sealimg(root, ['build', ...args], { env });
  assert.is(r.code, 0, `build failed:\n${r.stderr}`);
  return r.stdout.trim();
}

async function manifestOf(root: string, ref: string): Promise<{ layers: Array<{ digest: string }>; annotations?: Record<string, string> }> {
  return JSON.parse(await ok('skopeo', ['inspect', '--raw', `oci:${root}:${ref}`]));
}

Build.after.each(cleanupTmp);

Build('app-hello example: umoci unpack gives exactly the context files and modes; skopeo reads labels and config', async () => {
  const root = await tmpDir();
  const ctx = join(await tmpDir(), 'app-hello');
  await cp(join(EXAMPLES, 'app-hello'), ctx, { recursive: true });
  await writeFile(join(ctx, 'manifests', 'old.yaml.bak'), 'ignored by .sealignore');
  const digest = await buildOk(root, ['-t', 'example.com/app-hello:v1', '--build-arg', 'VERSION=v2', '--label', 'team=infra', '--save-images=false', ctx]);
  assert.match(digest, /^sha256:[a-f0-9]{64}$/);
  const want = (await tree(ctx, (r) => ['Sealfile', '.sealignore'].includes(r) || r.endsWith('.bak')))
    // COPY --chmod=755 scripts: the directory and its files
    .map((l) => (l.startsWith('f ') && l.includes(' scripts/')) || l === 'd 0755 scripts' ? l.replace(/^([fd]) \d{4}/, '$1 0755') : l);
  assert.equal(await tree(await unpack(root, 'example.com/app-hello:v1')), want);

  const info = JSON.parse(await ok('skopeo', ['inspect', `oci:${root}:example.com/app-hello:v1`]));
  assert.is(info.Digest, digest);
  assert.equal(info.Labels, { 'sealos.io.type': 'application', 'sealos.io.version': 'v1beta1', 'org.opencontainers.image.version': 'v2', team: 'infra' });
  assert.equal(info.Env, ['NAMESPACE=hello']);
  const config = JSON.parse(await ok('skopeo', ['inspect', '--config', `oci:${root}:example.com/app-hello:v1`]));
  assert.equal(config.config.Cmd, ['bash scripts/install.sh']);
  assert.is(config.created, '1970-01-01T00:00:00Z');
  assert.equal(config.history.map((h: { created_by: string; empty_layer?: boolean }) => [h.created_by.split(' ')[0], h.empty_layer ?? false]), [
    ['ARG', true], ['LABEL', true], ['ENV', true], ['COPY', false], ['COPY', false], ['COPY', false], ['COPY', false], ['CMD', true],
  ]);
  assert.is(config.rootfs.diff_ids.length, 4);
  // The container images it needs: the shim list, the manifests' pod specs, the chart's values (no helm here).
  const images = JSON.parse((await manifestOf(root, 'example.com/app-hello:v1')).annotations!['sealer.image.container.images']!);
  assert.equal(images, [{ image: 'docker.io/library/nginx:1.25' }, { image: 'docker.io/library/busybox:1.36' }, { image: 'docker.io/library/redis:7.2' }]);
});

Build('rootfs-mini example: RUN output lands in the image; sealos labels kept as given', async () => {
  const root = await tmpDir();
  await buildOk(root, ['-t', 'example.com/rootfs-mini:v1', join(EXAMPLES, 'rootfs-mini')]);
  const fs = await unpack(root, 'example.com/rootfs-mini:v1');
  assert.is(await readFile(join(fs, 'statics', 'kube-version'), 'utf8'), 'v1.28.0\n');
  assert.is((await lstat(join(fs, 'etc', 'registry.yml.tmpl'))).mode & 0o777, 0o600);
  assert.is((await lstat(join(fs, 'bin', 'kubeadm'))).mode & 0o777, 0o755);
  const info = JSON.parse(await ok('skopeo', ['inspect', `oci:${root}:example.com/rootfs-mini:v1`]));
  assert.equal(info.Labels, { 'sealos.io.type': 'rootfs', 'sealos.io.version': 'v1beta1', version: 'v1.28.0', init: 'init.sh', clean: 'clean.sh' });
});

Build('one context gives one digest (two stores, two runs); changing one file changes only its layer', async () => {
  const files = { Sealfile: 'FROM scratch\nCOPY a /a/\nCOPY b /b/\nRUN cat a/x b/y > both\n', 'a/x': 'x1', 'b/y': 'y1' };
  const ctx = await context(files);
  const [r1, r2] = [await tmpDir(), await tmpDir()];
  const d1 = await buildOk(r1, ['-t', 'example.com/det:1', ctx]);
  const d2 = await buildOk(r2, ['-t', 'example.com/det:1', ctx]);
  const d3 = await buildOk(r1, ['-t', 'example.com/det:2', ctx]);
  assert.is(d1, d2);
  assert.is(d1, d3);
  const epoch = await buildOk(r2, ['-t', 'example.com/det:epoch', ctx], { SOURCE_DATE_EPOCH: '1700000000' });
  assert.is.not(epoch, d1);

  const nocache = await buildOk(r1, ['-t', 'example.com/det:nc', '--no-cache', ctx]);
  assert.is(nocache, d1);

  await writeFile(join(ctx, 'b', 'y'), 'y2');
  const rebuild = await sealimg(r1, ['build', '-t', 'example.com/det:3', ctx]);
  assert.is(rebuild.code, 0, rebuild.stderr);
  // The build cache: the unchanged COPY is reused, the changed one is built again.
  assert.equal(rebuild.stderr.split('\n').filter((l) => l.startsWith('--> layer')).map((l) => l.endsWith(', cached)')), [true, false, false]);
  const before = (await manifestOf(r1, 'example.com/det:1')).layers.map((l) => l.digest);
  const after = (await manifestOf(r1, 'example.com/det:3')).layers.map((l) => l.digest);
  assert.is(after[0], before[0], 'the layer of a/ is unchanged');
  assert.is.not(after[1], before[1], 'the layer of b/ changed');
  assert.is.not(after[2], before[2], 'the RUN that read b/y changed');
});

for (const [deflater, env] of [['igzip', {}], ['zlib', { SEALIMG_GZIP: 'zlib' }]] as const) {
  Build(`big layers deflated by ${deflater} (compressed data stored, many gzip members) and long names read back exactly with umoci, tar and gzip`, async () => {
    if (deflater === 'igzip') assert.ok((await run('sh', ['-c', 'command -v igzip'])).code === 0, 'igzip (Debian: isal) is installed, as .ci/run does');
    const root = await tmpDir();
    const long = `${'deep-directory-name/'.repeat(8)}${'f'.repeat(120)}.txt`;
    const ctx = await context({ Sealfile: 'FROM scratch\nCOPY data /data/\n', [`data/${long}`]: 'long name', 'data/short': 'x' });
    await writeFile(join(ctx, 'data', 'blob.tar.gz'), randomBytes(3 << 20));
    await writeFile(join(ctx, 'data', 'small.png'), randomBytes(100 << 10));
    await writeFile(join(ctx, 'data', 'text.log'), Array.from({ length: 60000 }, (_, i) => `line ${i} of a compressible log\n`).join(''));
    await symlink(`../${'t'.repeat(150)}`, join(ctx, 'data', 'longlink'));
    await link(join(ctx, 'data', 'text.log'), join(ctx, 'data', 'a-hardlink.log'));
    await buildOk(root, ['-t', 'example.com/big:1', ctx], env);
    assert.equal(await tree(await unpack(root, 'example.com/big:1')), await tree(ctx, (r) => r === 'Sealfile'));
    const m = await manifestOf(root, 'example.com/big:1');
    const blob = join(root, 'blobs', 'sha256', m.layers[0]!.digest.slice(7));
    const names = (await ok('tar', ['tzf', blob])).trim().split('\n');
    assert.ok(names.includes(`data/${long}`), 'GNU tar reads the PAX path');
    // The two names of one file: stored once, the second as a hard link to the first in sorted order.
    assert.match(await ok('tar', ['tvzf', blob]), /data\/text\.log link to data\/a-hardlink\.log/);
    // Stored, not deflated: the layer is hardly smaller than the random bytes it holds.
    const size = (await lstat(blob)).size;
    assert.ok(size > 3 << 20 && size < (3 << 20) + (400 << 10), `random bytes stored, the log deflated: ${size} bytes`);
    const diffId = JSON.parse(await ok('skopeo', ['inspect', '--config', `oci:${root}:example.com/big:1`])).rootfs.diff_ids[0];
    const gunzipped = await run('sh', ['-c', `gzip -dc < '${blob}' | sha256sum`]);
    assert.is(`sha256:${gunzipped.stdout.split(' ')[0]}`, diffId, 'gzip reads every member; the diffID is the tar inside');
    // The same context with the same deflater gives the same blob.
    const again = await tmpDir();
    await buildOk(again, ['-t', 'example.com/big:1', ctx], env);
    assert.is((await manifestOf(again, 'example.com/big:1')).layers[0]!.digest, m.layers[0]!.digest);
    if (deflater === 'igzip') {
      // igzip's deflate streams differ from zlib's: another digest shows igzip really made this layer.
      const viaZlib = await tmpDir();
      await buildOk(viaZlib, ['-t', 'example.com/big:1', ctx], { SEALIMG_GZIP: 'zlib' });
      assert.is.not((await manifestOf(viaZlib, 'example.com/big:1')).layers[0]!.digest, m.layers[0]!.digest, 'igzip, not zlib, deflated the layer');
    }
  });
}

Build('a layer of files that are compressed already (gzip by magic, .zst by name) is a plain tar whose digest is its diffID; 5% text in it makes it gzip', async () => {
  const root = await tmpDir();
  const ctx = await context({ Sealfile: 'FROM scratch\nCOPY blobs /blobs/\n', 'blobs/README': 'a note, well under 1% of the layer\n' });
  await writeFile(join(ctx, 'blobs', 'data'), gzipSync(randomBytes(2 << 20)));
  await writeFile(join(ctx, 'blobs', 'layer.zst'), randomBytes(1 << 20));
  await buildOk(root, ['-t', 'example.com/blobs:1', ctx]);
  const [layer] = (await manifestOf(root, 'example.com/blobs:1')).layers as Array<{ digest: string; mediaType: string }>;
  assert.is(layer!.mediaType, 'application/vnd.oci.image.layer.v1.tar');
  const diffId = JSON.parse(await ok('skopeo', ['inspect', '--config', `oci:${root}:example.com/blobs:1`])).rootfs.diff_ids[0];
  assert.is(layer!.digest, diffId);
  assert.equal(await tree(await unpack(root, 'example.com/blobs:1')), await tree(ctx, (r) => r === 'Sealfile'));

  await writeFile(join(ctx, 'blobs', 'notes.txt'), 'compressible text\n'.repeat(10_000)); // 180 KB: 5% of the layer
  await buildOk(root, ['-t', 'example.com/blobs:2', ctx]);
  const [mixed] = (await manifestOf(root, 'example.com/blobs:2')).layers as Array<{ digest: string; mediaType: string }>;
  assert.is(mixed!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  assert.equal(await tree(await unpack(root, 'example.com/blobs:2')), await tree(ctx, (r) => r === 'Sealfile'));
});

Build('RUN that writes, changes and deletes files: a layer of exactly those changes, deletions as whiteouts', async () => {
  const root = await tmpDir();
  const base = await context({ Sealfile: 'FROM scratch\nCOPY . /\n', keep: 'k', change: 'c1', gone: 'g', 'dir/inner': 'i', 'dir2/stays': 's' });
  await buildOk(root, ['-t', 'example.com/base:1', '-f', join(base, 'Sealfile'), base]);
  const child = await context({ Sealfile: 'FROM example.com/base:1\nRUN echo new > new && echo c2 > change && rm gone Sealfile && rm -r dir && chmod 700 dir2\n' });
  await buildOk(root, ['-t', 'example.com/child:1', child]);
  const m = await manifestOf(root, 'example.com/child:1');
  assert.is(m.layers.length, 2);
  const listing = await ok('tar', ['tzf', join(root, 'blobs', 'sha256', m.layers[1]!.digest.slice(7))]);
  assert.equal(listing.trim().split('\n'), ['.wh.Sealfile', '.wh.dir', '.wh.gone', 'change', 'dir2/', 'new']);
  assert.equal(await tree(await unpack(root, 'example.com/child:1')), [
    `f 0644 change ${createHash('sha256').update('c2\n').digest('hex').slice(0, 16)}`,
    'd 0700 dir2',
    `f 0644 dir2/stays ${createHash('sha256').update('s').digest('hex').slice(0, 16)}`,
    `f 0644 keep ${createHash('sha256').update('k').digest('hex').slice(0, 16)}`,
    `f 0644 new ${createHash('sha256').update('new\n').digest('hex').slice(0, 16)}`,
  ]);
  const config = JSON.parse(await ok('skopeo', ['inspect', '--config', `oci:${root}:example.com/child:1`]));
  assert.is(config.rootfs.diff_ids.length, 2);
  assert.is(config.history.length, 2);

  // A RUN on top of an image with whiteouts sees its files as a container would: deleted ones are gone.
  const grandchild = await context({ Sealfile: 'FROM example.com/child:1\nRUN ls -A > listing && cat change >> listing\n' });
  await buildOk(root, ['-t', 'example.com/grandchild:1', grandchild]);
  assert.is(await readFile(join(await unpack(root, 'example.com/grandchild:1'), 'listing'), 'utf8'), 'change\ndir2\nkeep\nlisting\nnew\nc2\n');
});

Build('COPY --from another image, ADD unpacks a tar.gz, ADD of a URL is checked against --checksum', async () => {
  const root = await tmpDir();
  const other = await context({ Sealfile: 'FROM scratch\nCOPY bin /opt/bin/\n', 'bin/tool': ['#!/bin/sh\n', 0o755] });
  await buildOk(root, ['-t', 'example.com/other:1', other]);
  const body = 'kind: ConfigMap\n';
  const sum = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const server: Server = createServer((req, res) => {
    if (req.url === '/files/cm.yaml') res.end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as AddressInfo).port;
    const ctx = await context({
      Sealfile: `FROM scratch\nCOPY --from=example.com/other:1 /opt/bin/tool /bin/\nADD pkg.tar.gz /pkg/\nADD --checksum=${sum} http://127.0.0.1:${port}/files/cm.yaml /manifests/\n`,
      'src/a.txt': 'A',
      'src/sub/b.txt': ['B', 0o600],
    });
    await ok('tar', ['-czf', join(ctx, 'pkg.tar.gz'), '-C', join(ctx, 'src'), '.']);
    await buildOk(root, ['-t', 'example.com/mixed:1', ctx]);
    const fs = await unpack(root, 'example.com/mixed:1');
    assert.equal(await tree(fs), [
      'd 0755 bin',
      `f 0755 bin/tool ${createHash('sha256').update('#!/bin/sh\n').digest('hex').slice(0, 16)}`,
      'd 0755 manifests',
      `f 0600 manifests/cm.yaml ${createHash('sha256').update(body).digest('hex').slice(0, 16)}`,
      'd 0755 pkg',
      `f 0644 pkg/a.txt ${createHash('sha256').update('A').digest('hex').slice(0, 16)}`,
      'd 0755 pkg/sub',
      `f 0600 pkg/sub/b.txt ${createHash('sha256').update('B').digest('hex').slice(0, 16)}`,
    ]);

    const bad = await context({ Sealfile: `FROM scratch\nADD --checksum=sha256:${'0'.repeat(64)} http://127.0.0.1:${port}/files/cm.yaml /m/\n` });
    const before = await storeState(root);
    const r = await sealimg(root, ['build', '-t', 'example.com/bad:1', bad]);
    assert.is(r.code, 1);
    assert.match(r.stderr, /Sealfile:2:1: ADD http:\/\/127\.0\.0\.1:\d+\/files\/cm\.yaml: content hashes to sha256:/);
    assert.match(r.stderr, /\[DIGEST_MISMATCH\]/);
    assert.is(await storeState(root), before);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

Build('--compression zstd and none: layers of those media types, read back by zstd/tar, umoci and a RUN on top', async () => {
  const root = await tmpDir();
  const ctx = await context({ Sealfile: 'FROM scratch\nCOPY f /etc/f\n', f: 'zstd or not' });
  for (const [c, mediaType] of [['zstd', 'application/vnd.oci.image.layer.v1.tar+zstd'], ['none', 'application/vnd.oci.image.layer.v1.tar']] as const) {
    await buildOk(root, ['-t', `example.com/${c}:1`, '--compression', c, ctx]);
    const m = (await manifestOf(root, `example.com/${c}:1`)) as unknown as { layers: Array<{ mediaType: string; digest: string }> };
    assert.is(m.layers[0]!.mediaType, mediaType);
    const blob = join(root, 'blobs', 'sha256', m.layers[0]!.digest.slice(7));
    // umoci here reads no zstd layers; the zstd program and tar do.
    const read = c === 'zstd' ? await ok('sh', ['-c', `zstd -dc < '${blob}' | tar -xOf - etc/f`]) : await readFile(join(await unpack(root, `example.com/${c}:1`), 'etc', 'f'), 'utf8');
    assert.is(read, 'zstd or not');
  }
  const on = await context({ Sealfile: 'FROM example.com/zstd:1\nRUN cp etc/f copied\n' });
  await buildOk(root, ['-t', 'example.com/on-zstd:1', '--compression', 'none', on]);
  // The RUN saw the zstd base layer unpacked; its own layer is a plain tar.
  const layers = (await manifestOf(root, 'example.com/on-zstd:1')).layers;
  assert.is(await ok('tar', ['-xOf', join(root, 'blobs', 'sha256', layers[1]!.digest.slice(7)), 'copied']), 'zstd or not');
});

Build("a Kubefile's APP, CNI, APPCMDS and LAUNCH become sealer's labels and image extension", async () => {
  const root = await tmpDir();
  const ctx = await context({
    Kubefile: 'FROM scratch\nKUBEVERSION 1.19-1.28\nAPP dash local://dash.yaml\nCNI calico local://calico/install.sh\nAPPENV dash ns=kube-system\nLAUNCH ["calico", "dash"]\n',
    'dash.yaml': 'kind: Namespace\n',
    'calico/install.sh': ['#!/bin/sh\n', 0o755],
  });
  await buildOk(root, ['-t', 'example.com/apps:1', ctx]);
  const m = await manifestOf(root, 'example.com/apps:1');
  const ext = JSON.parse(m.annotations!['sealer.image.extension']!);
  assert.equal(ext.applications, [
    { name: 'dash', type: 'kube', launchfiles: ['dash.yaml'], version: 'v1', env: { ns: 'kube-system' } },
    { name: 'calico', type: 'shell', launchfiles: ['install.sh'], version: 'v1' },
  ]);
  assert.equal(ext.launch, { app_names: ['calico', 'dash'] });
  assert.is(ext.type, 'app-installer');
  const info = JSON.parse(await ok('skopeo', ['inspect', `oci:${root}:example.com/apps:1`]));
  assert.is(info.Labels['app.alpha.sealer.io/supported-kube-version'], '1.19-1.28');
  assert.is(info.Labels['cluster.alpha.sealer.io/kube-cni-calico'], 'true');
  const fs = await unpack(root, 'example.com/apps:1');
  assert.is(await readFile(join(fs, 'application', 'apps', 'dash', 'dash.yaml'), 'utf8'), 'kind: Namespace\n');
});

Build('merge: layers stacked and shared with the inputs, labels and env merged (later wins), CMDs concatenated, rootfs type kept', async () => {
  const root = await tmpDir();
  await buildOk(root, ['-t', 'example.com/rootfs-mini:v1', join(EXAMPLES, 'rootfs-mini')]);
  await buildOk(root, ['-t', 'example.com/app-hello:v1', '--save-images=false', join(EXAMPLES, 'app-hello')]);
  const r = await sealimg(root, ['merge', '-t', 'example.com/merged:1', 'example.com/rootfs-mini:v1', 'example.com/app-hello:v1']);
  assert.is(r.code, 0, r.stderr);
  const merged = (await manifestOf(root, 'example.com/merged:1')).layers.map((l) => l.digest);
  const inputs = [...(await manifestOf(root, 'example.com/rootfs-mini:v1')).layers, ...(await manifestOf(root, 'example.com/app-hello:v1')).layers].map((l) => l.digest);
  assert.equal(merged, inputs);
  const config = JSON.parse(await ok('skopeo', ['inspect', '--config', `oci:${root}:example.com/merged:1`]));
  assert.equal(config.config.Cmd, ['bash scripts/init.sh', 'bash scripts/install.sh']);
  assert.is(config.config.Labels['sealos.io.type'], 'rootfs');
  assert.is(config.config.Labels.version, 'v1.28.0');
  assert.ok(config.config.Env.includes('NAMESPACE=hello') && config.config.Env.includes('registryPort=5000'));
  const fs = await unpack(root, 'example.com/merged:1');
  assert.ok((await lstat(join(fs, 'bin', 'kubeadm'))).isFile());
  assert.ok((await lstat(join(fs, 'manifests', 'deployment.yaml'))).isFile());
  const before = await storeState(root);
  const bad = await sealimg(root, ['merge', '-t', 'example.com/merged:2', 'example.com/app-hello:v1', 'example.com/missing:1']);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /example\.com\/missing:1: no such image in the local store/);
  assert.is(await storeState(root), before);
});

Build('embedded images: copied into registry/ (distribution layout, host dropped), served by the CNCF registry with their source digests, big blobs as shared layers', async () => {
  const work = await tmpDir();
  const source = await startRegistry({ root: join(work, 'source-data') });
  const running = [source];
  try {
    // Container images made here with umoci and pushed with skopeo: nginx carries a 2 MiB blob.
    const layout = join(work, 'umoci-layout');
    await ok('umoci', ['init', '--layout', layout]);
    const digests: Record<string, string> = {};
    for (const [name, files] of [['nginx:1.25', { 'big.bin': 2 << 20 }], ['busybox:1.36', { 'sh.txt': 100 }], ['redis:7.2', { 'redis.conf': 200 }]] as const) {
      const dir = await tmpDir('sealimg-app-');
      for (const [f, size] of Object.entries(files)) await writeFile(join(dir, f), randomBytes(size));
      const tag = name.replace(':', '-');
      await ok('umoci', ['new', '--image', `${layout}:${tag}`]);
      await ok('umoci', ['insert', '--image', `${layout}:${tag}`, dir, '/app']);
      await ok('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${source.host}/library/${name}`]);
      digests[name] = JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', `docker://${source.host}/library/${name}`])).Digest;
    }
    // The example, with its images moved to this registry.
    const ctx = join(work, 'app-hello');
    await cp(join(EXAMPLES, 'app-hello'), ctx, { recursive: true });
    for (const f of ['images/shim/hello-images', 'manifests/deployment.yaml', 'charts/hello-cache/values.yaml']) {
      const text = await readFile(join(ctx, f), 'utf8');
      await writeFile(join(ctx, f), text.replaceAll('docker.io/library/', `${source.host}/library/`).replace('registry: docker.io', `registry: ${source.host}`));
    }
    const root = join(work, 'store');
    const d1 = await buildOk(root, ['-t', 'example.com/app-hello:v1', '--plain-http', ctx]);
    assert.is(await buildOk(join(work, 'store2'), ['-t', 'example.com/app-hello:v1', '--plain-http', ctx]), d1, 'embedding is deterministic too');
    const fs = await unpack(root, 'example.com/app-hello:v1');
    assert.equal((await readdir(join(fs, 'registry/docker/registry/v2/repositories/library'))).sort(), ['busybox', 'nginx', 'redis']);
    const served = await startRegistry({ root: join(fs, 'registry') });
    running.push(served);
    for (const [name, digest] of Object.entries(digests)) {
      const got = JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', `docker://${served.host}/library/${name}`]));
      assert.is(got.Digest, digest, `${name} is served with its source digest`);
    }
    await ok('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${served.host}/library/nginx:1.25`, `oci:${join(work, 'check')}:nginx`]);

    // The 2 MiB blob is a layer of its own, uncompressed, holding just that file...
    const m = await manifestOf(root, 'example.com/app-hello:v1');
    const own: string[] = [];
    for (const l of m.layers as Array<{ digest: string; mediaType: string }>) {
      if (l.mediaType !== 'application/vnd.oci.image.layer.v1.tar') continue;
      own.push(l.digest);
      const names = (await ok('tar', ['tf', join(root, 'blobs', 'sha256', l.digest.slice(7))])).trim().split('\n');
      assert.is(names.length, 1);
      assert.match(names[0]!, /^registry\/docker\/registry\/v2\/blobs\/sha256\/[a-f0-9]{2}\/[a-f0-9]{64}\/data$/);
    }
    assert.is(own.length, 1);
    // ...so another cluster image that embeds nginx has that same layer.
    const other = await context({ Sealfile: 'FROM scratch\nCOPY images /images/\n', 'images/shim/list': `${source.host}/library/nginx:1.25\n` });
    await buildOk(root, ['-t', 'example.com/other:1', '--plain-http', other]);
    assert.ok((await manifestOf(root, 'example.com/other:1')).layers.some((l) => l.digest === own[0]), 'the nginx blob layer is shared');
    // --registry-layers=single: sealos' one registry layer.
    await buildOk(root, ['-t', 'example.com/single:1', '--plain-http', '--registry-layers=single', other]);
    const single = (await manifestOf(root, 'example.com/single:1')).layers as Array<{ digest: string; mediaType: string }>;
    assert.is(single.length, 2);
    // Nearly all its bytes are gzip blobs already, so it is a plain tar: gzip would only wrap them.
    assert.is(single[1]!.mediaType, 'application/vnd.oci.image.layer.v1.tar');
    assert.match(await ok('tar', ['tf', join(root, 'blobs', 'sha256', single[1]!.digest.slice(7))]), /registry\/docker\/registry\/v2\/repositories\/library\/nginx\/_manifests\/tags\/1\.25\/current\/link/);

    // Two images that collide once the host is dropped, and a registry that is not there: errors, store unchanged.
    const before = await storeState(root);
    const clash = await context({ Sealfile: 'FROM scratch\n', 'images/shim/list': `${source.host}/library/nginx:1.25\nlocalhost:${source.host.split(':')[1]}/library/nginx:1.25\n` });
    const r1 = await sealimg(root, ['build', '-t', 'example.com/clash:1', '--plain-http', clash]);
    assert.is(r1.code, 1);
    assert.match(r1.stderr, new RegExp(`${source.host.replace('.', '\\.')}/library/nginx and localhost:\\d+/library/nginx would both be library/nginx`));
    const down = await context({ Sealfile: 'FROM scratch\n', 'images/shim/list': '127.0.0.1:9/library/gone:1\n' });
    const r2 = await sealimg(root, ['build', '-t', 'example.com/down:1', '--plain-http', '--retry-times', '0', down]);
    assert.is(r2.code, 1);
    assert.match(r2.stderr, /embedding 127\.0\.0\.1:9\/library\/gone:1: /);
    assert.is(await storeState(root), before);
  } finally {
    for (const r of running) await r.stop();
  }
});

Build('embedding a multi-arch image: --platform keeps its manifest, --all-platforms and a digest-pinned reference keep the index', async () => {
  const work = await tmpDir();
  const source = await startRegistry({ root: join(work, 'source-data') });
  const running = [source];
  try {
    const layout = await OciLayoutStore.open(join(work, 'layout'), { create: true });
    const amd64 = { os: 'linux', architecture: 'amd64' };
    const arm64 = { os: 'linux', architecture: 'arm64' };
    const { index, images } = await makeIndex(layout, [amd64, arm64], 'multi');
    await ok('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci:${join(work, 'layout')}:multi`, `docker://${source.host}/library/multi:1`]);
    const root = join(work, 'store');
    const served = async (ref: string, args: string[], list: string): Promise<string> => {
      const ctx = await context({ Sealfile: 'FROM scratch\n', 'images/shim/list': `${list}\n` });
      await buildOk(root, ['-t', ref, '--plain-http', ...args, ctx]);
      const r = await startRegistry({ root: join(await unpack(root, ref), 'registry') });
      running.push(r);
      return r.host;
    };
    const one = await served('example.com/one:1', ['--platform', 'linux/arm64'], `${source.host}/library/multi:1`);
    assert.is(JSON.parse(await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${one}/library/multi:1`])).config.digest, images[1]!.config.digest);
    const all = await served('example.com/all:1', ['--all-platforms'], `${source.host}/library/multi:1`);
    assert.is(JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', `docker://${all}/library/multi:1`])).Digest, index.digest);
    const pinned = await served('example.com/pinned:1', [], `${source.host}/library/multi@${index.digest}`);
    const got = JSON.parse(await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${pinned}/library/multi@${index.digest}`]));
    assert.is(got.manifests.length, 2);
  } finally {
    for (const r of running) await r.stop();
  }
});

Build('charts: with a helm on the PATH, the images helm template renders (here a stand-in helm that records its call)', async () => {
  const bin = await tmpDir();
  const calls = join(bin, 'calls');
  await writeFile(join(bin, 'helm'), `#!/bin/sh\necho "$@" >> '${calls}'\nprintf 'kind: Deployment\\nspec:\\n  template:\\n    spec:\\n      containers:\\n        - image: example.com/rendered:1\\n'\n`);
  await chmod(join(bin, 'helm'), 0o755);
  const root = await tmpDir();
  const ctx = join(await tmpDir(), 'app-hello');
  await cp(join(EXAMPLES, 'app-hello'), ctx, { recursive: true });
  const r = await sealimg(root, ['build', '-t', 'example.com/helm:1', '--save-images=false', ctx], { env: { PATH: `${bin}:${process.env.PATH}` } });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /charts\/hello-cache: images from helm template/);
  assert.is((await readFile(calls, 'utf8')).trim(), `template hello-cache ${join(ctx, 'charts', 'hello-cache')} -f ${join(ctx, 'charts', 'hello-cache.values.yaml')}`);
  const images = JSON.parse((await manifestOf(root, 'example.com/helm:1')).annotations!['sealer.image.container.images']!);
  assert.ok(images.some((i: { image: string }) => i.image === 'example.com/rendered:1'));
  assert.not.ok(images.some((i: { image: string }) => i.image.includes('redis')), 'values are not read when helm renders');
});

Build('images/skopeo/tar.txt: local docker-archive and oci-archive tarballs are embedded under the names given', async () => {
  const work = await tmpDir();
  const src = join(work, 'src');
  const app = await context({ Sealfile: 'FROM scratch\nCOPY . /app/\n', 'app.txt': 'from an archive' });
  const digest = await buildOk(src, ['-t', 'example.com/app:1', app]);
  const ctx = await context({ Sealfile: 'FROM scratch\nLABEL sealos.io.type=application\n', 'images/skopeo/tar.txt': '# offline images\noci-archive:app-oci.tar@library/app:oci\ndocker-archive:app-docker.tar@library/app:docker\n' });
  await ok('skopeo', ['copy', '-q', `oci:${src}:example.com/app:1`, `oci-archive:${join(ctx, 'images/skopeo/app-oci.tar')}`]);
  await ok('skopeo', ['copy', '-q', `oci:${src}:example.com/app:1`, `docker-archive:${join(ctx, 'images/skopeo/app-docker.tar')}:example.com/app:1`]);
  const root = join(work, 'store');
  await buildOk(root, ['-t', 'example.com/offline:1', ctx]);
  const served = await startRegistry({ root: join(await unpack(root, 'example.com/offline:1'), 'registry') });
  try {
    const oci = JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', `docker://${served.host}/library/app:oci`]));
    assert.is(oci.Digest, digest);
    const docker = JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', `docker://${served.host}/library/app:docker`]));
    assert.is(docker.Layers.length, 1);
  } finally {
    await served.stop();
  }
});

Build('bad input: a clear error with file:line, exit 1, and the store exactly as it was', async () => {
  const root = await tmpDir();
  await buildOk(root, ['-t', 'example.com/keep:1', await context({ Sealfile: 'FROM scratch\nCOPY f /f\n', f: 'x' })]);
  const outside = await tmpDir();
  await writeFile(join(outside, 'secret'), 'do not copy');
  const cases: Array<[string, Record<string, string | [string, number] | { link: string }>, RegExp]> = [
    ['unknown instruction', { Sealfile: 'FROM scratch\n\n  BOGUS x\n' }, /Sealfile:3:3: unknown instruction "BOGUS" \[SEALFILE_SYNTAX\]/],
    ['bad flag', { Sealfile: 'FROM scratch\nCOPY --nope=1 f /\n', f: 'x' }, /Sealfile:2:6: COPY does not take --nope \[SEALFILE_SYNTAX\]/],
    ['unterminated quote', { Sealfile: 'FROM scratch\nLABEL a="b\n' }, /Sealfile:2:1: unterminated double quote .*\[SEALFILE_SYNTAX\]/],
    ['missing source', { Sealfile: 'FROM scratch\nCOPY a.txt b.txt /x/\n', 'a.txt': 'a' }, /Sealfile:2:1: b\.txt: no such file or directory in the build context \[BUILD_FAILED\]/],
    ['ignored source', { Sealfile: 'FROM scratch\nCOPY secret.key /\n', 'secret.key': 'k', '.sealignore': '*.key\n' }, /secret\.key: no such file .*\.sealignore excludes it/],
    ['path escape', { Sealfile: 'FROM scratch\nCOPY ../x /\n' }, /Sealfile:2:1: \.\.\/x is outside the build context/],
    ['symlink escape', { Sealfile: 'FROM scratch\nCOPY link /\n', link: { link: join(outside, 'secret') } }, /Sealfile:2:1: link is outside the build context \(the symlink link points to /],
    ['symlink escape in a directory', { Sealfile: 'FROM scratch\nCOPY d /d/\n', 'd/ok': 'x', 'd/up': { link: '../../etc/passwd' } }, /d\/up is outside the build context/],
    ['failing RUN', { Sealfile: 'FROM scratch\nCOPY f /f\nRUN echo about to fail && echo to-stderr >&2 && exit 3\n', f: 'x' }, /Sealfile:3:1: RUN \/bin\/sh -c .* exited 3; its output:\nabout to fail\nto-stderr/],
    ['unknown base image', { Sealfile: 'FROM example.com/nope:1\n' }, /Sealfile:1:1: example\.com\/nope:1: no such image in the local store/],
    ['unreachable URL', { Sealfile: 'FROM scratch\nADD http://127.0.0.1:9/x.yaml /\n' }, /Sealfile:2:1: ADD http:\/\/127\.0\.0\.1:9\/x\.yaml: .*\[NETWORK\]/],
  ];
  for (const [name, files, want] of cases) {
    const before = await storeState(root);
    const r = await sealimg(root, ['build', '-t', 'example.com/bad:1', await context(files)]);
    assert.is(r.code, 1, `${name}: exit code\n${r.stderr}`);
    assert.match(r.stderr, want, `${name}: ${r.stderr}`);
    assert.is(await storeState(root), before, `${name}: the store changed`);
  }
  const images = await run(process.execPath, [join(fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))), '--root', root, 'images']);
  assert.not.match(images.stdout, /bad/);
});

Build('a step that fails while an earlier layer is still being compressed: its error is shown, the store is as before, nothing is left in .ingest', async () => {
  const root = await tmpDir();
  await buildOk(root, ['-t', 'example.com/keep:1', await context({ Sealfile: 'FROM scratch\nCOPY f /f\n', f: 'x' })]);
  // 48 MB of base64 text: compressible, so it takes a compressor a good part of a second.
  const ctx = await context({ Sealfile: 'FROM scratch\nCOPY big.txt /big.txt\nCOPY missing.txt /x\n' });
  await writeFile(join(ctx, 'big.txt'), randomBytes(36 << 20).toString('base64'));
  const before = await storeState(root);
  const r = await sealimg(root, ['build', '-t', 'example.com/bad:1', ctx]);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /Sealfile:3:1: missing\.txt: no such file or directory in the build context \[BUILD_FAILED\]/);
  assert.is(await storeState(root), before);
  assert.equal(await readdir(join(root, '.ingest')).catch(() => []), []);
});

Build.run();
