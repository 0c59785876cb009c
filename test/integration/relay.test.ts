/**
 * Distribution by relay (src/runner/relay.ts) on three test hosts: the
 * operator sends the tree to master0 once, the nodes fetch the same streams
 * from master0's stream server, and afterwards no server, kept stream or
 * spool file is left anywhere. Then the server and the fetch on their own:
 * who may fetch, and a stream that is not what the operator sent is refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SEALIMG, run, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, shellQuote, type TestHost, type TestHosts } from '../helpers/hosts.js';
import { clusterTinyContext } from '../helpers/cluster-tiny.js';
import { relayCommand, serverCommand, streamLine } from '../../src/runner/relay.js';
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
});

test.after(async () => {
  await ctx.hosts?.teardown();
  await cleanupTmp();
});

async function assertCleanAndComplete(): Promise<void> {
  for (const h of ctx.hosts.hosts) {
    const c = await h.sh(`cd ${ROOTFS}/data && sha256sum -c --quiet - <<'EOF'\n${ctx.sums}\nEOF\necho rc=$?`);
    assert.match(c.stdout, 'rc=0', `${h.hostname}: every file checked: ${c.stdout}${c.stderr}`);
    const left = await h.sh('ls -A /var/lib/sealimg/relay 2>&1; pgrep -c -x perl; ls -A ' + ROOTFS + ' | grep -c "^\\.sealimg-"');
    assert.match(left.stdout, /No such file or directory\n0\n0\n$/, `${h.hostname}: no relay dir, relay server or temp file left: ${left.stdout}`);
  }
  assert.is((await ctx.hosts.hosts[1]!.sh(`test -d ${ROOTFS}/registry && echo yes || echo no`)).stdout.trim(), 'no', 'registry/ stays on the registry host');
}

test('the nodes get the tree from master0: the operator sends it once, every file checked, nothing left behind', async () => {
  // What a relay killed half-way leaves on master0: its kept streams. This run clears them.
  const m0 = ctx.hosts.hosts[0]!;
  await m0.sh('umask 077; mkdir -p /var/lib/sealimg/relay/stale && echo x > /var/lib/sealimg/relay/stale/0.tar');
  const r = await runSealimg(runArgs());
  assert.is(r.code, 0, r.stderr);
  const m0line = new RegExp(`${esc(ips()[0]!)}: distributed \\d+ files \\(([\\d.]+) MB\\)`).exec(r.stderr);
  assert.ok(m0line, r.stderr);
  // A chain: master0 -> node 1 -> node 2.
  for (const [ip, from] of [[ips()[1]!, ips()[0]!], [ips()[2]!, ips()[1]!]]) {
    const n = new RegExp(`${esc(ip!)}: distributed \\d+ files \\(([\\d.]+) MB, ([\\d.]+) MB of it relayed from ${esc(from!)}\\)`).exec(r.stderr);
    assert.ok(n, `${ip} relayed from ${from}: ${r.stderr}`);
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

test('a node whose relay fails gets the tree directly and says why; the node after it fetches from master0', async () => {
  const n1 = ctx.hosts.hosts[1]!;
  await n1.sh('mv /usr/bin/perl /usr/bin/perl.off');
  try {
    const r = await runSealimg(runArgs());
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${esc(n1.ip)}: relay failed \\([\\s\\S]*no perl`), r.stderr);
    assert.match(r.stderr, new RegExp(`${esc(n1.ip)}: distributed \\d+ files \\([\\d.]+ MB\\)`));
    assert.match(r.stderr, new RegExp(`${esc(ips()[2]!)}: distributed \\d+ files \\([\\d.]+ MB, [\\d.]+ MB of it relayed from ${esc(ips()[0]!)}\\)`));
    await assertCleanAndComplete();
  } finally {
    await n1.sh('mv /usr/bin/perl.off /usr/bin/perl');
  }
  assert.is((await runSealimg(['reset'])).code, 0);
});

test('the stream server answers only its hosts with the token, sends a stream as it grows, a stream that is not what was sent is refused, and it stops when its stdin ends', async () => {
  const [m0, n1, n2] = ctx.hosts.hosts as [TestHost, TestHost, TestHost];
  const dir = '/var/lib/sealimg/relay/t';
  // A stream as upload.ts makes them: files under the staging name, then the script that moves them into place.
  const made = await m0.sh(`umask 077; mkdir -p ${dir}/s/.sealimg-0a1b2c && cd ${dir}/s && echo hello > .sealimg-0a1b2c/greeting && printf 'set -e\\nmv -f ./.sealimg-0a1b2c/greeting ./greeting\\n' > .sealimg-0a1b2c.sh && tar -cf ../0.tar .sealimg-0a1b2c .sealimg-0a1b2c.sh && rm -rf ${dir}/s && sha256sum ../0.tar | cut -c1-64 && wc -c < ../0.tar`);
  assert.is(made.code, 0, made.stderr);
  const [sha256, bytes] = made.stdout.trim().split('\n') as [string, string];
  const token = randomBytes(16).toString('hex');
  // Its stdin is a pipe from `sleep`: killing the sleep ends it, as the operator closing the channel does.
  const started = await m0.sh(`( sleep 120 | sh -c ${shellQuote(serverCommand(dir, token, m0.ip, false, [n1.ip]))} ) >${dir}.port 2>${dir}.err & for i in $(seq 50); do [ -s ${dir}.port ] && break; sleep 0.1; done; cat ${dir}.port`);
  const port = Number(started.stdout.trim());
  assert.ok(port > 0, `the server printed its port: ${started.stdout}${started.stderr}`);
  const batch = { index: 0, tmp: '.sealimg-0a1b2c', stream: { sha256, bytes: Number(bytes) } };
  const spool = '/var/lib/sealimg/relay/spool';
  // The operator's sha256 of the stream reaches the fetch on its stdin, as relay.ts sends it once master0 has the batch.
  const fetch = (h: TestHost, opts: { token?: string; sha256?: string; keep?: boolean; index?: number; tmp?: string } = {}) => {
    const b = { ...batch, index: opts.index ?? 0, tmp: opts.tmp ?? batch.tmp, stream: { ...batch.stream, sha256: opts.sha256 ?? sha256 } };
    return h.sh(`printf ${shellQuote(streamLine(b))} | { ${relayCommand(m0.ip, port, opts.token ?? token, b.index, spool, m0.ip, '/opt/relayed', opts.keep ?? false)}\n}`);
  };
  const state = async (h: TestHost) => (await h.sh('cat /opt/relayed/greeting 2>/dev/null; find /opt/relayed /var/lib/sealimg/relay/spool -mindepth 1 ! -name greeting 2>/dev/null | wc -l')).stdout;

  const wrongToken = await fetch(n1, { token: 'not-the-token' });
  assert.is.not(wrongToken.code, 0, 'a wrong token gets nothing');
  assert.match(wrongToken.stderr, /is not the stream the operator sent \(0 of \d+ bytes/);
  const stranger = await fetch(n2);
  assert.is.not(stranger.code, 0, 'a host the server was not told about gets nothing');
  assert.is(await state(n2), '0\n', 'and keeps nothing');
  const wrongSum = await fetch(n1, { sha256: createHash('sha256').update('something else').digest('hex') });
  assert.is.not(wrongSum.code, 0);
  assert.match(wrongSum.stderr, new RegExp(`is not the stream the operator sent \\(${bytes} of ${bytes} bytes, sha256 ${sha256}\\)`));
  assert.is(await state(n1), '0\n', 'nothing of a refused stream is unpacked or kept');
  const badName = await fetch(n1, { tmp: '.sealimg-../../etc' });
  assert.is(badName.code, 3, 'a staging name that is not ours is refused before anything is checked or unpacked');
  assert.match(badName.stderr, /a bad staging name/);
  assert.is(await state(n1), '0\n');
  const good = await fetch(n1);
  assert.is(good.code, 0, good.stderr);
  assert.is(await state(n1), 'hello\n0\n', 'the right stream lands, and its spool file and staging dir are gone');
  // A host in the middle of a chain keeps the checked stream for the next one.
  const kept = await fetch(n1, { keep: true });
  assert.is(kept.code, 0, kept.stderr);
  assert.is((await n1.sh('sha256sum < /var/lib/sealimg/relay/spool/0.tar | cut -c1-64')).stdout.trim(), sha256);
  // Served on from there by a server that drops what it sent whole (a host of the chain); master0's server keeps its copy.
  const onward = await n1.sh(`( sleep 120 | sh -c ${shellQuote(serverCommand(spool, token, n1.ip, true, [n2.ip]))} ) >${spool}.port 2>/dev/null & for i in $(seq 50); do [ -s ${spool}.port ] && break; sleep 0.1; done; cat ${spool}.port`);
  const n1port = Number(onward.stdout.trim());
  assert.ok(n1port > 0, onward.stderr);
  const relayed = await n2.sh(`printf ${shellQuote(streamLine(batch))} | { ${relayCommand(n1.ip, n1port, token, 0, spool, n1.ip, '/opt/relayed', false)}\n}`);
  assert.is(relayed.code, 0, relayed.stderr);
  assert.is(await state(n2), 'hello\n0\n');
  assert.is((await n1.sh(`ls ${spool}`)).stdout.trim(), '', 'the middle host dropped the stream once it was sent whole');
  assert.is((await m0.sh(`ls ${dir}`)).stdout.trim(), '0.tar', 'master0 keeps every stream');
  await n1.sh(`pkill -f 'sleep 120'; rm -rf /opt/relayed /var/lib/sealimg/relay ${spool}.port`);
  await n2.sh('rm -rf /opt/relayed /var/lib/sealimg/relay');

  // A stream still coming in is sent as it grows, and ends when it is whole (renamed)...
  const half = Math.floor(Number(bytes) / 2);
  await m0.sh(`head -c ${half} ${dir}/0.tar > ${dir}/1.tar.part`);
  const growing = fetch(n1, { index: 1 });
  await new Promise((r) => setTimeout(r, 500));
  await m0.sh(`tail -c +${half + 1} ${dir}/0.tar >> ${dir}/1.tar.part && mv ${dir}/1.tar.part ${dir}/1.tar`);
  const grown = await growing;
  assert.is(grown.code, 0, grown.stderr);
  assert.is(await state(n1), 'hello\n0\n', 'a stream fetched while it grew lands whole');
  await n1.sh('rm -rf /opt/relayed');
  // ...or short when it is removed (it failed where it came from), and then it is refused.
  await m0.sh(`head -c ${half} ${dir}/0.tar > ${dir}/2.tar.part`);
  const failing = fetch(n1, { index: 2 });
  await new Promise((r) => setTimeout(r, 500));
  await m0.sh(`rm ${dir}/2.tar.part`);
  const failed = await failing;
  assert.is.not(failed.code, 0);
  assert.match(failed.stderr, new RegExp(`is not the stream the operator sent \\(${half} of ${bytes} bytes`));
  assert.is(await state(n1), '0\n');

  await m0.sh(`pkill -f 'sleep 120'`);
  const gone = await m0.sh(`for i in $(seq 50); do pgrep -x perl >/dev/null || { echo stopped; break; }; sleep 0.1; done`);
  assert.is(gone.stdout.trim(), 'stopped', 'the server stops when its stdin ends');
  await m0.sh(`rm -rf /var/lib/sealimg/relay ${dir}.err ${dir}.port`);
  await n1.sh('rm -rf /opt/relayed /var/lib/sealimg/relay');
});

test.run();
