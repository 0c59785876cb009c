/**
 * The test hosts and the runner's SSH layer against real sshd in network,
 * mount, UTS and PID namespaces (test/helpers/hosts.ts). Needs root.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isSealimgError } from '../../src/errors.js';
import { HostCommandError, SshPool, type SshOptions } from '../../src/runner/ssh.js';
import { uploadFile, uploadTree } from '../../src/runner/upload.js';
import { ok, run } from '../helpers/cli.js';
import { HOSTS_BASE, cleanupStaleHosts, createTestHosts, type TestHosts } from '../helpers/hosts.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('test hosts and SSH');

interface Ctx {
  hosts: TestHosts;
  dir: string;
  key: string;
  keyPub: string;
  encKey: string;
  pools: SshPool[];
}
const ctx = {} as Ctx;

/** A pool that reaches the hosts through the operator namespace. */
function pool(extra: Partial<SshOptions> = {}): SshPool {
  const p = new SshPool({
    knownHostsFile: join(ctx.dir, 'known_hosts'),
    logDir: join(ctx.dir, 'logs'),
    connectTimeoutMs: 5000,
    dial: (ip, port, ms) => ctx.hosts.dial(ip, port, ms),
    ...extra,
  });
  ctx.pools.push(p);
  return p;
}

async function rejects(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

test.before(async () => {
  await cleanupStaleHosts();
  ctx.pools = [];
  ctx.dir = await tmpDir();
  ctx.key = join(ctx.dir, 'id_ed25519');
  await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', ctx.key]);
  ctx.keyPub = await readFile(`${ctx.key}.pub`, 'utf8');
  ctx.encKey = join(ctx.dir, 'id_enc');
  await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'open sesame', '-f', ctx.encKey]);
  ctx.hosts = await createTestHosts({
    count: 3,
    authorizedKeys: [ctx.keyPub, await readFile(`${ctx.encKey}.pub`, 'utf8')],
    users: [
      { name: 'alice', password: 'alice-pw', sudo: 'password' },
      { name: 'bob', authorizedKeys: [ctx.keyPub], sudo: 'nopasswd' },
    ],
  });
});

test.after(async () => {
  for (const p of ctx.pools) await p.close();
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

test('every host answers over SSH (password and key) with its own hostname', async () => {
  const p = pool();
  const names = await Promise.all(
    ctx.hosts.hosts.map(async (h, i) => {
      const auth = i % 2 === 0 ? { password: ctx.hosts.rootPassword } : { privateKey: await readFile(ctx.key) };
      const r = await p.host({ address: h.ip, ...auth }).exec('hostname; id -u');
      return r.stdout.trim();
    }),
  );
  assert.equal(names, ctx.hosts.hosts.map((h) => `${h.hostname}\n0`));
  assert.equal(new Set(names).size, 3);
  // A passphrase-protected key works with its passphrase.
  const enc = await p.host({ address: ctx.hosts.hosts[0].ip, privateKey: await readFile(ctx.encKey), passphrase: 'open sesame' }).exec('echo ok');
  assert.is(enc.stdout, 'ok\n');
});

test('a file written on one host is on no other host and not on the real /', async () => {
  const p = pool();
  const [a, b, c] = ctx.hosts.hosts;
  const stamp = `/etc/sealimg-test-${Date.now()}`;
  await p.host({ address: a.ip, password: ctx.hosts.rootPassword }).exec(`echo from-a > ${stamp}`);
  assert.is((await a.sh(`cat ${stamp}`)).stdout, 'from-a\n');
  for (const h of [b, c]) {
    const r = await p.host({ address: h.ip, password: ctx.hosts.rootPassword }).exec(`test -e ${stamp}`, { allowFailure: true });
    assert.is(r.code, 1, `${stamp} must not exist on ${h.hostname}`);
  }
  assert.not.ok(existsSync(stamp), `${stamp} leaked onto the real /`);
  // And it is in A's overlay upper dir, where teardown will remove it.
  assert.ok(existsSync(join(a.upperDir, stamp)));
});

test('a rejected password is an AUTH_FAILED error naming the host', async () => {
  const h = ctx.hosts.hosts[1];
  const e = await rejects(pool().host({ address: h.ip, password: 'wrong' }).exec('true'));
  assert.ok(isSealimgError(e, 'AUTH_FAILED'), String(e));
  assert.match(e.message, h.ip);
  assert.match(e.message, 'root');
  // A wrong passphrase is said before anything is sent.
  const e2 = await rejects(pool().host({ address: h.ip, privateKey: await readFile(ctx.encKey), passphrase: 'nope' }).exec('true'));
  assert.ok(isSealimgError(e2, 'AUTH_FAILED'), String(e2));
  assert.match(e2.message, h.ip);
});

test('known_hosts: trust on first use, once; a changed key stops with SSH_FAILED naming the host', async () => {
  const file = join(ctx.dir, 'kh-test');
  const [a, b] = ctx.hosts.hosts;
  const told: string[] = [];
  const p = pool({ knownHostsFile: file, onNewHostKey: (h, fp) => told.push(`${h} ${fp}`) });
  await Promise.all([1, 2, 3].map(() => p.host({ address: a.ip, password: ctx.hosts.rootPassword }).exec('true')));
  await pool({ knownHostsFile: file, onNewHostKey: (h) => told.push(`again ${h}`) }).host({ address: a.ip, password: ctx.hosts.rootPassword }).exec('true');
  assert.is(told.length, 1, told.join('\n'));
  const fp = (await ok('ssh-keygen', ['-l', '-f', join(a.upperDir, 'etc/ssh/sealimg-test/ssh_host_ed25519_key.pub')])).split(' ')[1];
  assert.is(told[0], `${a.ip} ${fp}`);
  // OpenSSH reads what we wrote.
  assert.match(await ok('ssh-keygen', ['-F', a.ip, '-f', file]), 'ssh-ed25519');

  // Now A answers with B's key: what a reinstalled host (or someone in between) looks like.
  const line = (await readFile(file, 'utf8')).trim();
  const bKey = (await readFile(join(b.upperDir, 'etc/ssh/sealimg-test/ssh_host_ed25519_key.pub'), 'utf8')).split(' ').slice(0, 2).join(' ');
  await writeFile(file, `${a.ip} ${bKey}\n`);
  const e = await rejects(pool({ knownHostsFile: file }).host({ address: a.ip, password: ctx.hosts.rootPassword }).exec('true'));
  assert.ok(isSealimgError(e, 'SSH_FAILED'), String(e));
  assert.match(e.message, `${a.ip}`);
  assert.match(e.message, 'changed');
  assert.match(e.message, fp);
  assert.is((await readFile(file, 'utf8')).trim(), `${a.ip} ${bKey}`, 'a changed key must not be recorded');
  // The override connects anyway.
  const r = await pool({ knownHostsFile: file, insecureSkipHostKeyCheck: true }).host({ address: a.ip, password: ctx.hosts.rootPassword }).exec('hostname');
  assert.is(r.stdout.trim(), a.hostname);
  assert.ok(line.startsWith(`${a.ip} ssh-ed25519 `));
});

test('a failing command is HOST_STEP_FAILED naming host and command, with its output; every command is logged', async () => {
  const h = ctx.hosts.hosts[2];
  const p = pool({ logDir: join(ctx.dir, 'logs-fail') });
  const s = p.host({ address: h.ip, password: ctx.hosts.rootPassword });
  const r = await s.exec('echo out; echo err >&2', { env: { GREETING: "it's me" } });
  assert.equal([r.code, r.stdout, r.stderr], [0, 'out\n', 'err\n']);
  assert.is((await s.exec('printf %s "$GREETING"', { env: { GREETING: "it's me" } })).stdout, "it's me");
  const e = await rejects(s.exec('echo half-done; echo broken pipe >&2; exit 3', { step: 'init hook' }));
  assert.ok(e instanceof HostCommandError && isSealimgError(e, 'HOST_STEP_FAILED'), String(e));
  assert.match(e.message, h.ip);
  assert.match(e.message, 'init hook');
  assert.match(e.message, 'exit 3');
  assert.match(e.message, 'broken pipe');
  assert.is((e as HostCommandError).result.stdout, 'half-done\n');
  // stdin reaches the command.
  assert.is((await s.exec('wc -c', { stdin: Buffer.alloc(70_000, 1) })).stdout.trim(), '70000');
  await p.close();
  const log = await readFile(join(ctx.dir, 'logs-fail', `${h.ip}.log`), 'utf8');
  assert.match(log, 'echo half-done');
  assert.match(log, 'broken pipe');
  assert.match(log, 'exit 3');
  assert.match(log, '| out');
});

test('non-root users run as root through sudo (with and without a password)', async () => {
  const h = ctx.hosts.hosts[0];
  // Cached sudo credentials shared by every session: sudo would not ask again, and must not get a password line then.
  await h.sh("printf 'Defaults timestamp_type=global\\n' > /etc/sudoers.d/zz-global && chmod 440 /etc/sudoers.d/zz-global");
  const p = pool();
  const alice = p.host({ address: h.ip, user: 'alice', password: 'alice-pw' });
  assert.is((await alice.exec('id -u')).stdout.trim(), '0');
  assert.is((await alice.exec('cat', { stdin: 'first\n' })).stdout, 'first\n');
  assert.is((await alice.exec('id -un', { sudo: false })).stdout.trim(), 'alice');
  // stdin still reaches the command after sudo took its password line.
  assert.is((await alice.exec('cat', { stdin: 'after the password\n' })).stdout, 'after the password\n');
  const bob = p.host({ address: h.ip, user: 'bob', privateKey: await readFile(ctx.key) });
  assert.is((await bob.exec('id -u')).stdout.trim(), '0');
  const src = join(await tmpDir(), 'tree');
  await mkdir(src);
  await writeFile(join(src, 'f'), 'by bob\n');
  await uploadTree(bob, src, '/opt/sealimg-sudo');
  assert.is((await h.sh('stat -c %U:%s /opt/sealimg-sudo/f')).stdout.trim(), 'root:7');
  // The password line sudo reads comes before the (gzipped tar) stream, which arrives whole.
  await uploadFile(alice, join(src, 'f'), '/opt/sealimg-sudo/by-alice');
  assert.is((await h.sh('stat -c %U /opt/sealimg-sudo/by-alice && cat /opt/sealimg-sudo/by-alice')).stdout, 'root\nby bob\n');
});

test('upload: a tree arrives whole, checked by sha256 on the host, with no temp files left', async () => {
  const h = ctx.hosts.hosts[1];
  const s = pool().host({ address: h.ip, password: ctx.hosts.rootPassword });
  const src = join(await tmpDir(), 'rootfs');
  const long = `${'d'.repeat(60)}/${'e'.repeat(60)}`;
  await mkdir(join(src, 'bin'), { recursive: true });
  await mkdir(join(src, 'etc/empty-dir'), { recursive: true });
  await mkdir(join(src, long), { recursive: true });
  const files: Record<string, Buffer> = {
    'bin/tool': Buffer.from('#!/bin/sh\necho tool\n'),
    'etc/config.yaml': Buffer.from('a: 1\n'),
    'etc/empty': Buffer.alloc(0),
    "etc/it's a name with spaces": Buffer.from('quoted\n'),
    [`${long}/${'f'.repeat(90)}.bin`]: Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 251)),
  };
  for (const [rel, data] of Object.entries(files)) await writeFile(join(src, rel), data);
  await chmod(join(src, 'bin/tool'), 0o755);
  await symlink('../bin/tool', join(src, 'etc/tool-link'));

  // gzipped here; the later uploads go plain (the default).
  const res = await uploadTree(s, src, '/opt/sealimg-up', { compress: true });
  for (const [rel, data] of Object.entries(files)) assert.is(res.files.get(rel), createHash('sha256').update(data).digest('hex'), rel);
  assert.is(res.files.get('etc/tool-link'), 'symlink:../bin/tool');

  // What the host has, seen from inside the host (not over SSH).
  const listing = (await h.sh('cd /opt/sealimg-up && find . -type f -exec sha256sum {} + | sort -k2')).stdout;
  const expected = Object.entries(files)
    .map(([rel, data]) => `${createHash('sha256').update(data).digest('hex')}  ./${rel}`)
    .sort((x, y) => (x.split('  ')[1] < y.split('  ')[1] ? -1 : 1))
    .join('\n');
  assert.is(listing.trim(), expected);
  assert.is((await h.sh('stat -c %a /opt/sealimg-up/bin/tool; readlink /opt/sealimg-up/etc/tool-link; test -d /opt/sealimg-up/etc/empty-dir && echo dir')).stdout, '755\n../bin/tool\ndir\n');
  assert.is((await h.sh("find /opt/sealimg-up -name '.sealimg-*' | wc -l")).stdout.trim(), '0');

  // A failed upload (here: a directory stands where the first file must go) leaves no temp files, and
  // files it did not get to stay as they were (each file is replaced whole or not at all).
  await h.sh('rm /opt/sealimg-up/bin/tool && mkdir /opt/sealimg-up/bin/tool');
  await writeFile(join(src, 'etc/config.yaml'), 'a: 2\n');
  const e = await rejects(uploadTree(s, src, '/opt/sealimg-up'));
  assert.ok(isSealimgError(e, 'HOST_STEP_FAILED'), String(e));
  assert.match(e.message, h.ip);
  assert.match(e.message, 'upload');
  assert.is((await h.sh("find /opt/sealimg-up -name '.sealimg-*' | wc -l")).stdout.trim(), '0');
  assert.is((await h.sh('cat /opt/sealimg-up/etc/config.yaml')).stdout, 'a: 1\n');

  // The host checks what arrived: a tar that corrupts a file on the way in (a fake one, first in PATH on this
  // host only) makes the checksum fail; the old file stays and the staging dir goes.
  await h.sh('rmdir /opt/sealimg-up/bin/tool');
  await h.sh(
    `printf '%s\\n' '#!/bin/sh' '/usr/bin/tar "$@" || exit' 'for f in .sealimg-*/etc/config.yaml; do printf X | dd of="$f" conv=notrunc 2>/dev/null; done' > /usr/local/bin/tar && chmod 755 /usr/local/bin/tar`,
  );
  try {
    const e2 = await rejects(uploadTree(s, src, '/opt/sealimg-up'));
    assert.ok(isSealimgError(e2, 'HOST_STEP_FAILED'), String(e2));
    assert.match(e2.message, 'FAILED');
    assert.match(e2.message, 'config.yaml');
  } finally {
    await h.sh('rm /usr/local/bin/tar');
  }
  assert.is((await h.sh('cat /opt/sealimg-up/etc/config.yaml')).stdout, 'a: 1\n');
  assert.is((await h.sh("find /opt/sealimg-up -name '.sealimg-*' | wc -l")).stdout.trim(), '0');
  // And without the fake tar the same upload completes.
  await uploadTree(s, src, '/opt/sealimg-up');
  assert.is((await h.sh('cat /opt/sealimg-up/etc/config.yaml')).stdout, 'a: 2\n');
  // One file, to a path of its own name.
  const one = await uploadFile(s, join(src, 'bin/tool'), '/usr/local/sbin/renamed-tool');
  assert.is(one.files.size, 1);
  assert.is((await h.sh('stat -c %a /usr/local/sbin/renamed-tool && /usr/local/sbin/renamed-tool')).stdout, '755\ntool\n');
  // Nothing of it on the real machine.
  assert.not.ok(existsSync('/opt/sealimg-up'));
});

test('another port: known_hosts says [ip]:port, and OpenSSH in the operator namespace accepts what we recorded', async () => {
  const h = ctx.hosts.hosts[0];
  // A second sshd on the host, on port 2222 (it stays in the host's PID namespace and dies with it).
  await h.sh('/usr/sbin/sshd -f /etc/ssh/sealimg-test/sshd_config -p 2222');
  // sshd forks into the background before it listens: wait (bounded) until it does.
  for (let i = 0; i < 50 && !(await h.sh('ss -Hltn sport = :2222')).stdout.trim(); i++) await new Promise((r) => setTimeout(r, 50));
  const file = join(ctx.dir, 'kh-port');
  const r = await pool({ knownHostsFile: file }).host({ address: h.ip, port: 2222, privateKey: await readFile(ctx.key) }).exec('hostname');
  assert.is(r.stdout.trim(), h.hostname);
  assert.match(await readFile(file, 'utf8'), `[${h.ip}]:2222 ssh-ed25519 `);
  const ssh = await ctx.hosts.operatorRun('ssh', [
    '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${file}`,
    '-i', ctx.key, '-p', '2222', `root@${h.ip}`, 'hostname',
  ], { timeoutMs: 20_000 });
  assert.is(ssh.code, 0, ssh.stderr);
  assert.is(ssh.stdout.trim(), h.hostname);
});

test('the pool: many commands at once share a few connections; a dropped connection is replaced', async () => {
  const h = ctx.hosts.hosts[1];
  // bob, as no other test logs in as bob on this host: his sessions on the host are this pool's connections.
  const s = pool().host({ address: h.ip, user: 'bob', privateKey: await readFile(ctx.key) });
  const outs = await Promise.all(Array.from({ length: 24 }, (_, i) => s.exec(`sleep 0.1; echo ${i}`, { sudo: false })));
  assert.equal(outs.map((o) => o.stdout), Array.from({ length: 24 }, (_, i) => `${i}\n`));
  // Quick commands whose whole answer (output, exit status, close) comes in one read: no status is lost.
  const codes = await Promise.all(Array.from({ length: 160 }, (_, i) => s.exec(`exit ${i % 7}`, { sudo: false, allowFailure: true })));
  assert.equal(codes.map((c) => c.code), Array.from({ length: 160 }, (_, i) => i % 7));
  // At most 2 connections: one session process per connection on the host.
  const sessions = Number((await h.sh("pgrep -c -f '^sshd: bob@' || true")).stdout.trim());
  assert.ok(sessions >= 1 && sessions <= 2, `${sessions} sessions`);
  // The host drops every connection (as a reboot would); the next command just reconnects.
  await h.sh("pkill -f '^sshd: bob'");
  await new Promise((r) => setTimeout(r, 200));
  assert.is((await s.exec('echo again')).stdout, 'again\n');
  // Even when the pool had not noticed yet.
  await h.sh("pkill -f '^sshd: bob'");
  assert.is((await s.exec('echo once more')).stdout, 'once more\n');
});

test('a command that times out or is aborted is stopped on the host, children included', async () => {
  const h = ctx.hosts.hosts[2];
  const root = pool().host({ address: h.ip, password: ctx.hosts.rootPassword });
  let t0 = Date.now();
  const e = await rejects(root.exec('sleep 31 & sleep 32; echo never', { timeoutMs: 300, step: 'init hook' }));
  assert.ok(isSealimgError(e, 'HOST_STEP_FAILED'), String(e));
  assert.match(e.message, h.ip);
  assert.match(e.message, 'timed out');
  // Bounded (the commands would run 31-34 s), with room for a loaded CI machine.
  assert.ok(Date.now() - t0 < 15_000, `${Date.now() - t0} ms`);
  // Through sudo as well, stopped by an AbortSignal.
  const bob = pool().host({ address: h.ip, user: 'bob', privateKey: await readFile(ctx.key) });
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 300);
  t0 = Date.now();
  const e2 = await rejects(bob.exec('sleep 33 & sleep 34', { signal: ac.signal }));
  assert.ok(isSealimgError(e2, 'ABORTED'), String(e2));
  assert.ok(Date.now() - t0 < 15_000, `${Date.now() - t0} ms`);
  // Gone from the host (polled: on a loaded machine the kill may land just after the caller was told).
  let left = '';
  for (let i = 0; i < 40; i++) {
    left = (await h.sh("pgrep -f '^sleep 3[1-4]' || true")).stdout.trim();
    if (!left) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.is(left, '');
  // The session still works afterwards.
  assert.is((await root.exec('echo fine')).stdout, 'fine\n');
});

test('a host that is down is an SSH_FAILED error naming it; once back up it answers', async () => {
  const h = ctx.hosts.hosts[2];
  // A pool that was connected before the host went away, and a fresh one.
  const known = pool({ connectTimeoutMs: 800 }).host({ address: h.ip, password: ctx.hosts.rootPassword });
  await known.exec('true');
  await h.down();
  try {
    for (const s of [pool({ connectTimeoutMs: 800 }).host({ address: h.ip, password: ctx.hosts.rootPassword }), known]) {
      const t0 = Date.now();
      const e = await rejects(s.exec('true'));
      assert.ok(isSealimgError(e, 'SSH_FAILED'), String(e));
      assert.match(e.message, h.ip);
      // Bounded by the timeouts, not by TCP's own retries (minutes); room left for a loaded CI machine.
      assert.ok(Date.now() - t0 < 15_000, `${Date.now() - t0} ms`);
    }
  } finally {
    await h.up();
  }
  const r = await known.exec('hostname');
  assert.is(r.stdout.trim(), h.hostname);
});

test('hosts have no way out: no default route, and no route to the real network', async () => {
  const h = ctx.hosts.hosts[0];
  assert.is((await h.sh('ip route show default')).stdout.trim(), '');
  const r = await h.sh('ip route get 192.0.2.1 2>&1 || true');
  assert.match(r.stdout, 'unreachable');
  // The root namespace has no route to the hosts, and a mistaken plain connect fails at once, going nowhere.
  assert.match((await run('ip', ['route', 'get', h.ip])).stderr, 'No route to host');
  const err = await rejects(
    new Promise((resolve, reject) => {
      const sock = connect({ host: h.ip, port: 22 });
      sock.once('connect', () => resolve(sock.destroy()));
      sock.once('error', reject);
    }),
  );
  assert.is((err as NodeJS.ErrnoException).code, 'EHOSTUNREACH');
});

test('cleanupStaleHosts removes the hosts of a run whose process was killed', async () => {
  const script = fileURLToPath(new URL('../helpers/hosts-crash.js', import.meta.url));
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ns = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.on('exit', (c) => reject(new Error(`crash helper exited ${c} before its hosts were up`)));
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.match(await ok('ip', ['netns', 'list']), ns);
  const n = Number(/^slh(\d+)-/.exec(ns)![1]);
  const removed = await cleanupStaleHosts();
  // (Another test run on this machine may have cleaned it up first: what counts is that it is gone.)
  assert.ok(removed.includes(n) || !existsSync(`${HOSTS_BASE}/run-${n}`), `removed ${removed}`);
  assert.not.match(await ok('ip', ['netns', 'list']), `slh${n}-`);
  assert.not.ok(existsSync(`${HOSTS_BASE}/run-${n}`));
  // Our own live run was left alone.
  assert.match(await ok('ip', ['netns', 'list']), ctx.hosts.operatorNetns);
});

test('teardown leaves no namespace, process, mount or file behind', async () => {
  for (const p of ctx.pools.splice(0)) await p.close();
  const nsPrefix = ctx.hosts.operatorNetns.replace(/-op$/, '-');
  const runDir = `${HOSTS_BASE}/run-${nsPrefix.slice(3, -1)}`;
  assert.ok(existsSync(runDir));
  await ctx.hosts.teardown();
  assert.not.match(await ok('ip', ['netns', 'list']), nsPrefix);
  assert.not.ok(existsSync(runDir));
  assert.not.match(await readFile('/proc/mounts', 'utf8'), runDir);
  const ps = await run('pgrep', ['-f', runDir]);
  assert.is(ps.stdout.trim(), '');
});

test.run();
