/**
 * `sealimg run` end to end on three test hosts (network namespaces with sshd,
 * test/helpers/hosts.ts): the example cluster image is built by sealimg,
 * carries the Debian docker-registry binary as its embedded registry server,
 * and its hooks record themselves. Nothing here is a fake: the hooks are the
 * image's own scripts, run over SSH by sealimg on the hosts.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { SEALIMG, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, type TestHosts } from '../helpers/hosts.js';
import { makeImage } from '../helpers/images.js';
import { clusterTinyContext, EXAMPLES } from '../helpers/cluster-tiny.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('sealimg run on test hosts');
const ctx = {} as { hosts: TestHosts; root: string; home: string; before: Map<number, Map<string, string>> };

/** Every file in a host's overlay upper dir with a content hash: what the host changed. */
async function upper(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      const rel = relative(dir, p);
      if (e.isDirectory()) {
        out.set(`${rel}/`, 'dir');
        await walk(p);
      } else if (e.isSymbolicLink()) out.set(rel, `-> ${await readlink(p)}`);
      else if (e.isFile()) out.set(rel, createHash('sha256').update(await readFile(p)).digest('hex'));
      else out.set(rel, 'special');
    }
  };
  await walk(dir);
  return out;
}

function runSealimg(args: string[], env: Record<string, string> = {}) {
  return ctx.hosts.operatorRun(process.execPath, [SEALIMG, '--root', ctx.root, ...args], {
    env: { SEALIMG_HOME: ctx.home, SEALIMG_SSH_PASSWORD: ctx.hosts.rootPassword, ...env },
    timeoutMs: 180_000,
  });
}

const ips = () => ctx.hosts.hosts.map((h) => h.ip);
const runArgs = (...images: string[]) => ['run', ...images, '--masters', ips()[0]!, '--nodes', `${ips()[1]},${ips()[2]}`];
const hookLog = async (i: number) => (await ctx.hosts.hosts[i]!.sh('cat /var/lib/sealimg-example/hooks.log 2>/dev/null || true')).stdout.trim().split('\n').filter(Boolean);
const appLog = async (i: number) => (await ctx.hosts.hosts[i]!.sh('cat /var/lib/sealimg-example/app.log 2>/dev/null || true')).stdout.trim().split('\n').filter(Boolean);

test.before(async () => {
  await cleanupStaleHosts();
  ctx.root = await tmpDir();
  ctx.home = await tmpDir();
  // The cluster image: the example, its registry binary, and one embedded image in registry/.
  const context = await clusterTinyContext();
  const layout = join(await tmpDir(), 'layout');
  await makeImage(await OciLayoutStore.open(layout, { create: true }), { tag: 'hello', layers: ['hello from the embedded registry'] });
  const embed = await sealimg(ctx.root, ['copy', '-q', `oci:${layout}:hello`, `distribution:${join(context, 'registry')}:library/hello:v1`]);
  assert.is(embed.code, 0, embed.stderr);
  for (const [tag, dir] of [['example.com/cluster-tiny:v1', context], ['example.com/tiny-app:v1', join(EXAMPLES, 'cluster-tiny-app')]] as const) {
    const b = await sealimg(ctx.root, ['build', '-q', '-t', tag, dir]);
    assert.is(b.code, 0, b.stderr + b.stdout);
  }
  // A second application: the same recipe under another name and ENV.
  const b2 = await sealimg(ctx.root, ['build', '-q', '-t', 'example.com/other-app:v1', '--build-arg', 'X=1', join(EXAMPLES, 'cluster-tiny-app')]);
  assert.is(b2.code, 0, b2.stderr);
  // A bulk patch image: enough files for distribution to take several batches.
  const bulk = join(await tmpDir(), 'bulk');
  await mkdir(join(bulk, 'data'), { recursive: true });
  for (let i = 0; i < 12; i++) await writeFile(join(bulk, 'data', `blob${i}`), randomBytes(512 * 1024));
  await writeFile(join(bulk, 'Sealfile'), 'FROM scratch\nLABEL sealos.io.type=patch\nCOPY data data\n');
  const b3 = await sealimg(ctx.root, ['build', '-q', '--compression', 'none', '-t', 'example.com/bulk:v1', bulk]);
  assert.is(b3.code, 0, b3.stderr);
  ctx.hosts = await createTestHosts({ count: 3, users: [{ name: 'ops', password: 'ops-pw', sudo: 'password' }] });
  ctx.before = new Map();
  for (const h of ctx.hosts.hosts) ctx.before.set(h.index, await upper(h.upperDir));
});

test.after(async () => {
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

test('a host that is down stops the run with its name and step; once it is back the run completes', async () => {
  await ctx.hosts.hosts[2]!.down();
  const r = await runSealimg(runArgs('example.com/cluster-tiny:v1', 'example.com/tiny-app:v1'));
  await ctx.hosts.hosts[2]!.up();
  assert.is(r.code, 1);
  assert.match(r.stderr, new RegExp(`Error: ${ctx.hosts.hosts[2]!.ip.replace(/\./g, '\\.')}: cannot connect`));
  const status = JSON.parse((await runSealimg(['status', '--cluster', 'default', '--format', 'json'])).stdout);
  assert.is(status.phase, 'ClusterInProgress');
  assert.ok(status.conditions.some((c: { type: string; status: string }) => c.type === 'Check' && c.status === 'False'), 'the failed step is recorded as failed');
  assert.equal(await hookLog(0), [], 'no hook ran while a host was missing');
});

test('a wrong password is an auth error naming the host', async () => {
  const r = await runSealimg(runArgs('example.com/cluster-tiny:v1', 'example.com/tiny-app:v1'), { SEALIMG_SSH_PASSWORD: 'wrong' });
  assert.is(r.code, 1);
  assert.match(r.stderr, /user root was rejected.*\[AUTH_FAILED\]/);
});

test('run installs the images: merged tree, hooks in order, embedded registry served, app on master0 only', async () => {
  const r = await runSealimg(runArgs('example.com/cluster-tiny:v1', 'example.com/tiny-app:v1'));
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'Cluster default is ready');
  const [m0, n1, n2] = ctx.hosts.hosts;
  for (const [i, h] of ctx.hosts.hosts.entries()) {
    const mode = i === 0 ? 'master' : 'node';
    const log = await hookLog(i);
    const want = i === 0 ? ['check', 'init-registry', 'init-cri', 'init', 'guest'] : ['check', 'init-cri', 'init', 'guest'];
    assert.equal(log.map((l) => l.split(' ')[0]), want, `hooks on ${h.hostname}`);
    assert.ok(log.every((l) => l === `${l.split(' ')[0]} ${h.hostname} ${mode} v1.28.0`), log.join('\n'));
    const tree = await h.sh('cd /var/lib/sealimg/data/default/rootfs && ls etc scripts bin && cat etc/registry_config.yml');
    assert.match(tree.stdout, 'registry_config.yml.tmpl');
    assert.match(tree.stdout, 'rootdirectory: /var/lib/registry', 'the template was rendered with the image ENV');
    const hosts = await h.sh('grep sealos.hub /etc/hosts');
    assert.match(hosts.stdout, `${m0!.ip} sealos.hub`);
  }
  assert.is((await n1!.sh('test -d /var/lib/sealimg/data/default/rootfs/registry/docker && echo yes || echo no')).stdout.trim(), 'no', 'registry/ goes to the registry host only');
  const inspect = await n2!.sh('skopeo inspect --tls-verify=false docker://sealos.hub:5000/library/hello:v1');
  assert.is(inspect.code, 0, inspect.stderr);
  assert.is(JSON.parse(inspect.stdout).Name, 'sealos.hub:5000/library/hello');
  assert.equal((await appLog(0)).map((l) => l.split(' ').slice(0, 2).join(' ')), [`tiny ${m0!.hostname}`]);
  assert.match((await appLog(0))[0]!, '/var/lib/sealimg/data/default/applications/tiny-app/workdir');
  assert.equal(await appLog(1), []);
  assert.equal(await appLog(2), []);
  const cf = await readFile(join(ctx.home, 'default', 'Clusterfile'), 'utf8');
  assert.match(cf, 'phase: ClusterSuccess');
  assert.is((await lstat(join(ctx.home, 'default', 'Clusterfile'))).mode & 0o777, 0o600);
  assert.not.match(cf.replace(/passwd: .*/, ''), ctx.hosts.rootPassword);
});

test('the same run again does nothing and says so', async () => {
  const before = await hookLog(0);
  const r = await runSealimg(runArgs('example.com/cluster-tiny:v1', 'example.com/tiny-app:v1'));
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'nothing to do');
  assert.equal(await hookLog(0), before);
});

test('one more application image, from a tarball, installs just that one', async () => {
  const before = await hookLog(0);
  // Offline delivery: the new image arrives as a file, and the store does not have it yet.
  const tar = join(await tmpDir(), 'other-app.tar');
  assert.is((await sealimg(ctx.root, ['save', '-q', '-o', tar, 'example.com/other-app:v1'])).code, 0);
  assert.is((await sealimg(ctx.root, ['rmi', 'example.com/other-app:v1'])).code, 0);
  const r = await runSealimg(runArgs('example.com/cluster-tiny:v1', 'example.com/tiny-app:v1', tar));
  assert.is(r.code, 0, r.stderr);
  assert.equal(await hookLog(0), before, 'no hook ran again');
  const apps = await appLog(0);
  assert.is(apps.length, 2, apps.join('\n'));
  assert.match(apps[1]!, 'applications/other-app/workdir');
  assert.match(r.stderr, `${ctx.hosts.hosts[1]!.ip}: distributed 0 files`);
});

test('reset leaves every host as it was and archives the Clusterfile', async () => {
  const r = await runSealimg(['reset']);
  assert.is(r.code, 0, r.stderr);
  for (const h of ctx.hosts.hosts) {
    const before = ctx.before.get(h.index)!;
    const after = await upper(h.upperDir);
    for (const [path, hash] of after) {
      // Logs, and what root's login shells leave (history, pyenv's shims): not the run's doing.
      if (/^(var\/log|run|tmp|root\/\.(ssh|pyenv|cache|bash_history))\b/.test(path) || before.get(path) === hash) continue;
      // Copied up by an edit that was undone (/etc/hosts) or a directory walked through: same as the real one.
      const real = await lstat(join('/', path)).then(
        (st) => (st.isDirectory() ? 'dir' : readFile(join('/', path)).then((b) => createHash('sha256').update(b).digest('hex'))),
        () => undefined,
      );
      assert.is(hash, real, `${h.hostname}: ${path} changed`);
    }
    assert.is((await h.sh('grep -c sealimg /etc/hosts || true')).stdout.trim(), '0');
    assert.is((await h.sh('pgrep -f "[b]in/registry serve" || echo none')).stdout.trim(), 'none');
  }
  const files = await readdir(join(ctx.home, 'default'));
  assert.ok(files.some((f) => /^Clusterfile\.\d{8}T\d{6}$/.test(f)), files.join(' '));
  assert.not.ok(files.includes('Clusterfile'));
});

test('a run killed during distribution sends only what was missing when run again', async () => {
  const images = ['example.com/cluster-tiny:v1', 'example.com/bulk:v1'];
  const state = join(ctx.home, 'default', 'state', `${ips()[0]}.json`);
  const sentFiles = async () => {
    const s = JSON.parse(await readFile(state, 'utf8').catch(() => '{}')) as Record<string, Record<string, string>>;
    return Object.keys(s['/var/lib/sealimg/data/default/rootfs'] ?? {}).length;
  };
  const child = spawn('nsenter', [`--net=/run/netns/${ctx.hosts.operatorNetns}`, '--', process.execPath, SEALIMG, '--root', ctx.root, ...runArgs(...images)], {
    env: { ...process.env, SEALIMG_HOME: ctx.home, SEALIMG_SSH_PASSWORD: ctx.hosts.rootPassword, SEALIMG_DISTRIBUTE_BATCH: String(1024 * 1024) },
    stdio: 'ignore',
  });
  const exited = new Promise((r) => child.once('exit', r));
  // Kill it once master0 has some of the bulk files but not all (bounded wait).
  let seen = 0;
  for (let i = 0; i < 600 && (seen = await sentFiles()) < 2; i++) await new Promise((r) => setTimeout(r, 50));
  child.kill('SIGKILL');
  await exited;
  const before = await sentFiles();
  const r = await runSealimg(runArgs(...images), { SEALIMG_DISTRIBUTE_BATCH: String(1024 * 1024) });
  assert.is(r.code, 0, r.stderr);
  const line = new RegExp(`${ips()[0]!.replace(/\./g, '\\.')}: distributed (\\d+) files`).exec(r.stderr);
  assert.ok(line, r.stderr);
  const total = await sentFiles();
  assert.ok(seen >= 2 && before < total, `killed after ${before} of ${total} files`);
  assert.is(Number(line![1]), total - before, `sent ${line![1]} files; ${before} of ${total} had arrived before the kill`);
  for (const h of ctx.hosts.hosts) {
    const sums = await h.sh('cd /var/lib/sealimg/data/default/rootfs/data && sha256sum blob* | wc -l');
    assert.is(sums.stdout.trim(), '12', `${h.hostname} has every file`);
  }
  assert.is((await runSealimg(['reset'])).code, 0);
});

test('a user with sudo installs as root', async () => {
  const r = await runSealimg([...runArgs('example.com/cluster-tiny:v1'), '-u', 'ops'], { SEALIMG_SSH_PASSWORD: 'ops-pw' });
  assert.is(r.code, 0, r.stderr);
  const log = await hookLog(1);
  assert.equal(log.map((l) => l.split(' ')[0]), ['check', 'init-cri', 'init', 'guest'], 'hooks wrote to /var/lib, as root');
  const cf = await readFile(join(ctx.home, 'default', 'Clusterfile'), 'utf8');
  assert.match(cf, 'user: ops', cf);
  const reset = await runSealimg(['reset']);
  assert.is(reset.code, 0, reset.stderr);
});

test.run();
