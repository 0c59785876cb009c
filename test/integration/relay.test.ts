/**
 * Distribution by relay (src/runner/relay.ts) on three test hosts: the
 * operator sends the tree to master0 once, the nodes fetch the same streams
 * from master0, and afterwards no relay key or kept stream is left anywhere.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SEALIMG, run, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, type TestHosts } from '../helpers/hosts.js';
import { clusterTinyContext } from '../helpers/cluster-tiny.js';
import { authorizeScript } from '../../src/runner/relay.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('distribution by relay from master0');
const ctx = {} as { hosts: TestHosts; root: string; home: string; sums: string };
const ROOTFS = '/var/lib/sealimg/data/default/rootfs';

function runSealimg(args: string[], env: Record<string, string> = {}) {
  return ctx.hosts.operatorRun(process.execPath, [SEALIMG, '--root', ctx.root, ...args], {
    env: { SEALIMG_HOME: ctx.home, SEALIMG_SSH_PASSWORD: ctx.hosts.rootPassword, SEALIMG_DISTRIBUTE_BATCH: String(2 * 1024 * 1024), ...env },
    timeoutMs: 180_000,
  });
}
const ips = () => ctx.hosts.hosts.map((h) => h.ip);
const runArgs = () => ['run', 'example.com/cluster-tiny:v1', 'example.com/bulk:v1', '--masters', ips()[0]!, '--nodes', `${ips()[1]},${ips()[2]}`];
const esc = (s: string) => s.replace(/\./g, '\\.');

test.before(async () => {
  await cleanupStaleHosts();
  ctx.root = await tmpDir();
  ctx.home = await tmpDir();
  const context = await clusterTinyContext();
  const b = await sealimg(ctx.root, ['build', '-q', '-t', 'example.com/cluster-tiny:v1', context]);
  assert.is(b.code, 0, b.stderr + b.stdout);
  // Several batches (2 MiB each) of random data, so the nodes replay more than one stream.
  const bulk = join(await tmpDir(), 'bulk');
  await mkdir(join(bulk, 'data'), { recursive: true });
  const sums: string[] = [];
  for (let i = 0; i < 10; i++) {
    const data = randomBytes(700 * 1024);
    await writeFile(join(bulk, 'data', `blob${i}`), data);
    sums.push(`${createHash('sha256').update(data).digest('hex')}  blob${i}`);
  }
  ctx.sums = sums.join('\n');
  await writeFile(join(bulk, 'Sealfile'), 'FROM scratch\nLABEL sealos.io.type=patch\nCOPY data data\n');
  const b2 = await sealimg(ctx.root, ['build', '-q', '--compression', 'none', '-t', 'example.com/bulk:v1', bulk]);
  assert.is(b2.code, 0, b2.stderr);
  ctx.hosts = await createTestHosts({ count: 3 });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'sealimg-relay-stale', '-f', join(ctx.home, 'stale')]);
});

test.after(async () => {
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

async function assertCleanAndComplete(): Promise<void> {
  for (const h of ctx.hosts.hosts) {
    const c = await h.sh(`cd ${ROOTFS}/data && sha256sum -c --quiet - <<'EOF'\n${ctx.sums}\nEOF\necho rc=$?`);
    assert.match(c.stdout, 'rc=0', `${h.hostname}: every file checked: ${c.stdout}${c.stderr}`);
    const left = await h.sh('ls -A /var/lib/sealimg/relay 2>&1; grep -c sealimg-relay /root/.ssh/authorized_keys; ls -A ' + ROOTFS + ' | grep -c "^\\.sealimg-"');
    assert.match(left.stdout, /No such file or directory\n0\n0\n$/, `${h.hostname}: no relay dir, key line or temp file left: ${left.stdout}`);
  }
  assert.is((await ctx.hosts.hosts[1]!.sh(`test -d ${ROOTFS}/registry && echo yes || echo no`)).stdout.trim(), 'no', 'registry/ stays on the registry host');
}

test('the nodes get the tree from master0: the operator sends it once, every file checked, nothing left behind', async () => {
  // What a relay killed half-way leaves on master0: its key line and kept streams. This run clears them.
  const m0 = ctx.hosts.hosts[0]!;
  await m0.sh(`umask 077; mkdir -p /root/.ssh /var/lib/sealimg/relay/stale && echo x > /var/lib/sealimg/relay/stale/0.tar && printf '%s\\n' 'restrict,command="false" ${(await readFile(join(ctx.home, 'stale.pub'), 'utf8')).trim()}' >> /root/.ssh/authorized_keys`);
  const r = await runSealimg(runArgs());
  assert.is(r.code, 0, r.stderr);
  const m0line = new RegExp(`${esc(ips()[0]!)}: distributed \\d+ files \\(([\\d.]+) MB\\)`).exec(r.stderr);
  assert.ok(m0line, r.stderr);
  for (const ip of ips().slice(1)) {
    const n = new RegExp(`${esc(ip)}: distributed \\d+ files \\(([\\d.]+) MB, ([\\d.]+) MB of it relayed from master0`).exec(r.stderr);
    assert.ok(n, `${ip} relayed: ${r.stderr}`);
    // Everything a node got came from master0: the operator sent nothing to it.
    assert.is(n![2], n![1]);
    assert.ok(Number(n![1]) >= 7, `${ip} got the bulk data (${n![1]} MB)`);
  }
  // The node's record holds the same files as master0's (a re-run sends nothing).
  const state = async (ip: string) => Object.keys(JSON.parse(await readFile(join(ctx.home, 'default', 'state', `${ip}.json`), 'utf8'))[ROOTFS]).filter((k) => !k.startsWith('registry/')).sort();
  assert.equal(await state(ips()[1]!), await state(ips()[0]!));
  await assertCleanAndComplete();
  const again = await runSealimg(runArgs());
  assert.is(again.code, 0, again.stderr);
  assert.not.match(again.stderr, /relayed|distributed [1-9]/, again.stderr);
  assert.is((await runSealimg(['reset'])).code, 0);
});

test('a node whose relay fails gets the tree directly, and says why', async () => {
  const n2 = ctx.hosts.hosts[2]!;
  await n2.sh('mv /usr/bin/ssh /usr/bin/ssh.off');
  try {
    const r = await runSealimg(runArgs());
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${esc(n2.ip)}: relay from master0 failed \\([\\s\\S]*no ssh client`), r.stderr);
    assert.match(r.stderr, new RegExp(`${esc(n2.ip)}: distributed \\d+ files \\([\\d.]+ MB\\)`));
    assert.match(r.stderr, new RegExp(`${esc(ips()[1]!)}: distributed \\d+ files \\([\\d.]+ MB, [\\d.]+ MB of it relayed`));
    await assertCleanAndComplete();
  } finally {
    await n2.sh('mv /usr/bin/ssh.off /usr/bin/ssh');
  }
  assert.is((await runSealimg(['reset'])).code, 0);
});

test('the relay key line master0 gets expires in 12 hours, and replaces a crashed run\'s line and streams', async () => {
  const m0 = ctx.hosts.hosts[0]!;
  const pub = (await readFile(join(ctx.home, 'stale.pub'), 'utf8')).trim();
  await m0.sh(`umask 077; mkdir -p /root/.ssh /var/lib/sealimg/relay/old && echo x > /var/lib/sealimg/relay/old/0.tar && printf '%s\\n' 'keep-me ${pub.replace('sealimg-relay-stale', 'someone')}' 'restrict ${pub}' > /root/.ssh/authorized_keys`);
  const line = `restrict,command="true" ${pub.replace('sealimg-relay-stale', 'sealimg-relay-new')}`;
  const r = await m0.sh(authorizeScript('/var/lib/sealimg/relay/new', line));
  assert.is(r.code, 0, r.stderr);
  const keys = (await m0.sh('cat /root/.ssh/authorized_keys; ls -A /var/lib/sealimg/relay')).stdout.trim().split('\n');
  assert.is(keys[0], `keep-me ${pub.replace('sealimg-relay-stale', 'someone')}`, 'other lines stay as they were');
  const m = /^expiry-time="(\d{12})",(.*)$/.exec(keys[1]!);
  assert.ok(m, `the new line has an expiry: ${keys[1]}`);
  assert.is(m![2], line);
  const hostNow = (await m0.sh("date +%Y%m%d%H%M")).stdout.trim();
  const toDate = (t: string) => Date.UTC(+t.slice(0, 4), +t.slice(4, 6) - 1, +t.slice(6, 8), +t.slice(8, 10), +t.slice(10, 12));
  const hours = (toDate(m![1]!) - toDate(hostNow)) / 3_600_000;
  assert.ok(hours > 11.9 && hours <= 12, `expires ${hours} hours from now`);
  assert.equal(keys.slice(2), ['new'], 'the stale line and streams are gone');
  await m0.sh('rm -rf /var/lib/sealimg/relay; : > /root/.ssh/authorized_keys');
});

test.run();
