/**
 * distributeTree against a real sshd (a test host): what a re-run sends is
 * exactly what changed since the host's record, whether that record was
 * written from hashes taken before the upload or while it streamed. Needs root.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { distributeTree, listTree } from '../../src/runner/distribute.js';
import { SshPool, type SshSession } from '../../src/runner/ssh.js';
import { ok } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, type TestHosts } from '../helpers/hosts.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('distribute');

const ctx = {} as { hosts: TestHosts; dir: string; pool: SshPool; session: SshSession };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

test.before(async () => {
  await cleanupStaleHosts();
  ctx.dir = await tmpDir();
  const key = join(ctx.dir, 'id');
  await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  ctx.hosts = await createTestHosts({ count: 1, authorizedKeys: [await readFile(`${key}.pub`, 'utf8')] });
  ctx.pool = new SshPool({ knownHostsFile: join(ctx.dir, 'known_hosts'), dial: (ip, port, ms) => ctx.hosts.dial(ip, port, ms) });
  ctx.session = ctx.pool.host({ address: ctx.hosts.hosts[0]!.ip, privateKey: await readFile(key) });
});

test.after(async () => {
  await ctx.pool?.close();
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

/** What the host holds under `dir`: relative path -> "sha256 mode" for files, "-> target" for links. */
async function onHost(dir: string): Promise<Record<string, string>> {
  const r = await ctx.hosts.hosts[0]!.sh(`cd ${dir} && find . -type f -printf '%P\\0' | sort -z | xargs -0 -r sh -c 'for f; do printf "%s %s %s\\n" "$f" $(sha256sum < "$f" | cut -c1-64) $(stat -c %a "$f"); done' _; find . -type l -printf '%P -> %l\\n'`);
  assert.is(r.code, 0, r.stderr);
  const out: Record<string, string> = {};
  for (const line of r.stdout.trim().split('\n').filter(Boolean)) {
    const [path, ...rest] = line.split(' ');
    out[path!] = rest.join(' ');
  }
  return out;
}

test('a first run is hashed while it uploads; a re-run sends only the changed, chmod-ed and new files and removes the gone one', async () => {
  const src = join(ctx.dir, 'tree');
  await mkdir(join(src, 'bin'), { recursive: true });
  await mkdir(join(src, 'etc'), { recursive: true });
  const big = Buffer.alloc(5 << 20, 7);
  await writeFile(join(src, 'bin/tool'), big);
  await writeFile(join(src, 'etc/a.conf'), 'a=1\n');
  await writeFile(join(src, 'etc/b.conf'), 'b=1\n');
  await writeFile(join(src, 'run.sh'), '#!/bin/sh\n');
  const state = join(ctx.dir, 'sent.json');
  const remote = '/opt/dist';

  // Batches of 1 MiB: the first run goes out in several streams, each recorded as it lands.
  process.env.SEALIMG_DISTRIBUTE_BATCH = String(1 << 20);
  try {
    const tree = await listTree(src);
    assert.is(tree.files.get('bin/tool')!.hash, undefined, 'listing reads no file');
    const first = await distributeTree(ctx.session, src, remote, state, { tree });
    assert.equal([first.sentFiles, first.unchanged, first.removed], [4, 0, 0]);
    // The hashes the upload took are the record, in the form a comparison needs.
    assert.is(tree.files.get('bin/tool')!.hash, `${sha(big)}:644`);
    const record = JSON.parse(await readFile(state, 'utf8'))[remote];
    assert.is(record['etc/a.conf'], `${sha('a=1\n')}:644`);
    assert.is(Object.keys(record).length, 4);

    const same = await distributeTree(ctx.session, src, remote, state);
    assert.equal([same.sentFiles, same.unchanged], [0, 4], 'nothing changed, nothing sent');

    await writeFile(join(src, 'etc/a.conf'), 'a=2\n');
    await chmod(join(src, 'run.sh'), 0o755);
    await writeFile(join(src, 'etc/c.conf'), 'c=1\n');
    await rm(join(src, 'etc/b.conf'));
    const again = await distributeTree(ctx.session, src, remote, state);
    assert.equal([again.sentFiles, again.unchanged, again.removed], [3, 1, 1]);
    assert.is(again.sentBytes, 4 + 10 + 4, 'the 5 MiB file is not sent again');
  } finally {
    delete process.env.SEALIMG_DISTRIBUTE_BATCH;
  }
  assert.equal(await onHost(remote), {
    'bin/tool': `${sha(big)} 644`,
    'etc/a.conf': `${sha('a=2\n')} 644`,
    'etc/c.conf': `${sha('c=1\n')} 644`,
    'run.sh': `${sha('#!/bin/sh\n')} 755`,
  });
});

test('a file gone between listing and sending fails the upload naming it, and is not recorded as sent', async () => {
  const src = join(ctx.dir, 'vanishing');
  await mkdir(src, { recursive: true });
  await writeFile(join(src, 'stays'), 'kept\n');
  await writeFile(join(src, 'goes'), 'gone\n');
  const state = join(ctx.dir, 'sent-vanishing.json');
  const tree = await listTree(src);
  await rm(join(src, 'goes'));
  let error: Error | undefined;
  try {
    await distributeTree(ctx.session, src, '/opt/vanishing', state, { tree });
  } catch (e) {
    error = e as Error;
  }
  assert.ok(error, 'the upload must fail');
  assert.match(error.message, `${join(src, 'goes')} was not uploaded`);
  const record = JSON.parse(await readFile(state, 'utf8').catch(() => '{}'))['/opt/vanishing'] ?? {};
  assert.not.ok('goes' in record, 'a file the host never got is not in its record');
});

test.run();
