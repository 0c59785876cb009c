/**
 * Distribution by relay (src/runner/relay.ts) on three test hosts: the
 * operator sends the tree to master0 once, the nodes fetch the same streams
 * from master0's agent, and afterwards no agent, kept stream or spool file
 * is left anywhere. Then the agents on their own: who may fetch, and a
 * stream that is not what the operator sent is refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SEALIMG, run, sealimg } from '../helpers/cli.js';
import { cleanupStaleHosts, createTestHosts, shellQuote, type TestHost, type TestHosts } from '../helpers/hosts.js';
import { clusterTinyContext } from '../helpers/cluster-tiny.js';
import { FETCH_FAILED, agentCommand, batchScript, sumOrder } from '../../src/runner/relay.js';
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
  // A relayed tree has the modes a direct upload gives (the relay's own files are root-only; the tree is not).
  const modes = (h: TestHost) => h.sh(`stat -c '%n %a' /var/lib/sealimg /var/lib/sealimg/data; cd ${ROOTFS}/.. && find rootfs -path rootfs/registry -prune -o -printf '%p %m\n' | sort`).then((r) => r.stdout);
  const [m0modes, ...nodeModes] = await Promise.all(ctx.hosts.hosts.map(modes));
  assert.match(m0modes!, /^\/var\/lib\/sealimg 755\n\/var\/lib\/sealimg\/data 755\n/, m0modes);
  assert.match(m0modes!, /^rootfs 755$/m);
  for (const m of nodeModes) assert.is(m, m0modes);
}

test('the nodes get the tree from master0: the operator sends it once, every file checked, nothing left behind', async () => {
  // What a relay killed half-way leaves on master0: its kept streams. This run clears them.
  const m0 = ctx.hosts.hosts[0]!;
  await m0.sh('mkdir -p /var/lib/sealimg && umask 077 && mkdir -p /var/lib/sealimg/relay/stale && echo x > /var/lib/sealimg/relay/stale/0.tar');
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

test('SEALIMG_DISTRIBUTE_GZIP=1: the tree goes gzipped, and the nodes relay and check the gzipped streams the same way', async () => {
  const n1 = ctx.hosts.hosts[1]!;
  const received = async () => Number((await n1.sh('cat /sys/class/net/eth0/statistics/rx_bytes')).stdout);
  const before = await received();
  const r = await runSealimg(runArgs(), { SEALIMG_DISTRIBUTE_GZIP: '1' });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^Distributing \d+ files \([\d.]+ MB\) to 3 hosts, gzipped, relayed host to host/m);
  let tree = 0;
  for (const [ip, from] of [[ips()[1]!, ips()[0]!], [ips()[2]!, ips()[1]!]]) {
    const m = new RegExp(`${esc(ip!)}: distributed \\d+ files \\(([\\d.]+) MB, \\1 MB of it relayed from ${esc(from!)}\\)`).exec(r.stderr);
    assert.ok(m, r.stderr);
    tree = Number(m![1]) * 1e6;
  }
  // What master0 kept and sent on was gzip, as the operator sent it: node1 took in less than the tree (the
  // random blobs do not shrink, the registry binary does).
  const got = (await received()) - before;
  assert.ok(got < 0.85 * tree, `node1 received ${got} bytes for a ${tree}-byte tree`);
  await assertCleanAndComplete();
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

test('hosts whose firewall lets in only the ports the cluster uses get the tree directly, after seconds, not a wait per host', async () => {
  const hosts = ctx.hosts.hosts;
  // SSH and the registry (a security group made for the cluster), and answers; DROP, not REJECT: a connection
  // that is never answered, the slow case.
  const rules = ['-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT', '-p tcp --dport 22 -j ACCEPT', '-p tcp --dport 5000 -j ACCEPT', '-p tcp -j DROP'];
  for (const h of hosts) for (const rule of rules) assert.is((await h.sh(`iptables -A INPUT ${rule}`)).code, 0, rule);
  const n1log = join(ctx.home, 'default', 'logs', `${hosts[1]!.ip}.log`);
  const logged = async () => readFile(n1log, 'utf8').catch(() => '');
  const before = (await logged()).length;
  try {
    const t = Date.now();
    const r = await runSealimg(runArgs());
    const s = (Date.now() - t) / 1000;
    assert.is(r.code, 0, r.stderr);
    for (const h of hosts.slice(1)) {
      assert.match(r.stderr, new RegExp(`${esc(h.ip)}: relay failed \\([\\s\\S]*cannot reach the relay on`), r.stderr);
      assert.match(r.stderr, new RegExp(`${esc(h.ip)}: distributed \\d+ files \\([\\d.]+ MB\\)`), r.stderr);
    }
    // node1's source is master0: each batch it tried failed once, unreachable, and was not tried from master0 again.
    const unreachable = [...(await logged()).slice(before).matchAll(/^#\d+ \| exit (\d+) 4 /gm)].map((m) => m[1]);
    assert.ok(unreachable.length > 0, 'node1 could not reach master0');
    assert.equal(unreachable, [...new Set(unreachable)], `one fetch a batch: ${unreachable.join(' ')}`);
    // node1 gives up on master0 at its first try (3 s); node2 tries node1, then master0 (3 + 1 + 3 s). It was 34 s.
    assert.ok(s < 25, `the run took ${s.toFixed(1)} s`);
    await assertCleanAndComplete();
  } finally {
    for (const h of hosts) await h.sh('iptables -F INPUT');
  }
  assert.is((await runSealimg(['reset'])).code, 0);
});

/** A relay agent on `h` (AGENT; `copy` 'buffer': it serves through a buffer, as where it knows no sendfile), its stdin a FIFO that a sleep holds open (killing the sleep ends it, as the operator closing the channel does); its port. */
async function startAgent(h: TestHost, token: string, dir: string, drop: boolean, allowed: string[], script: string, copy?: 'buffer'): Promise<number> {
  const command = `${copy ? `export SEALIMG_RELAY_COPY=${copy}\n` : ''}${agentCommand(dir, token, h.ip, drop, allowed, script)}`;
  // One agent a host at a time: an earlier one is stopped first (it removes its dir as it goes).
  await stopAgent(h);
  const r = await h.sh(
    `rm -f /tmp/agent.*; mkfifo /tmp/agent.in; (sleep 300 > /tmp/agent.in < /dev/null 2>&1 &); (sh -c ${shellQuote(command)} < /tmp/agent.in > /tmp/agent.out 2> /tmp/agent.err &); for i in $(seq 100); do grep -q '^port ' /tmp/agent.out 2>/dev/null && break; sleep 0.1; done; sed -n 's/^port //p' /tmp/agent.out`,
  );
  return Number(r.stdout.trim());
}

/** Ends the agent's stdin (a command apart: its own command line must not match the pattern); what is left. */
async function stopAgent(h: TestHost): Promise<string> {
  await h.sh(`pkill -f 'sleep 30[0]'`);
  return (await h.sh(`for i in $(seq 50); do pgrep -x perl >/dev/null || { echo stopped; break; }; sleep 0.1; done; ls -A /var/lib/sealimg 2>&1`)).stdout;
}

/** Orders `h`'s agent to fetch batch n from `src`, gives it `sum` (an order line, or none) and waits for the fetch's end. */
async function fetchOn(h: TestHost, n: number, src: { ip: string; port: number }, sum: string | undefined, during?: () => Promise<unknown>): Promise<{ code: number; message: string }> {
  const seen = Number((await h.sh('wc -l < /tmp/agent.out')).stdout.trim());
  const order = (line: string) => h.sh(`printf '%s\\n' ${shellQuote(line)} > /tmp/agent.in`);
  await order(`fetch ${n} ${src.ip} ${src.port} ${src.ip}`);
  await during?.();
  await order(sum ?? `cancel ${n}`);
  const r = await h.sh(`for i in $(seq 300); do tail -n +${seen + 1} /tmp/agent.out | grep -q '^exit ${n} ' && break; sleep 0.1; done; tail -n +${seen + 1} /tmp/agent.out | grep -m1 '^exit ${n} '`);
  const m = /^exit \d+ (\d+) ?(.*)$/.exec(r.stdout.trim());
  assert.ok(m, `the agent on ${h.hostname} answered the fetch: ${r.stdout}${(await h.sh('cat /tmp/agent.err')).stdout}`);
  return { code: Number(m![1]), message: m![2]! };
}

test('the relay agents: a server answers only its hosts with the token and sends a stream as it grows; a fetch unpacks only a stream that is what was sent; a host of the chain drops what it sent on; an agent stops when its stdin ends', async () => {
  const [m0, n1, n2] = ctx.hosts.hosts as [TestHost, TestHost, TestHost];
  const token = randomBytes(16).toString('hex');
  const dir = '/var/lib/sealimg/relay/t';
  const port = await startAgent(m0, token, dir, false, [n1.ip], '');
  assert.ok(port > 0, `master0's agent printed its port: ${(await m0.sh('cat /tmp/agent.out /tmp/agent.err')).stdout}`);
  // A stream as upload.ts makes them: files under the staging name, then the script that moves them into place.
  const made = await m0.sh(`mkdir -p /tmp/s/.sealimg-0a1b2c && cd /tmp/s && echo hello > .sealimg-0a1b2c/greeting && printf 'set -e\\nmv -f ./.sealimg-0a1b2c/greeting ./greeting\\n' > .sealimg-0a1b2c.sh && tar -cf ${dir}/0.tar .sealimg-0a1b2c .sealimg-0a1b2c.sh && cp ${dir}/0.tar /tmp/stream0.tar && rm -rf /tmp/s && sha256sum ${dir}/0.tar | cut -c1-64 && wc -c < ${dir}/0.tar`);
  assert.is(made.code, 0, made.stderr);
  const [sha256, bytes] = made.stdout.trim().split('\n') as [string, string];
  const batch = { index: 0, tmp: '.sealimg-0a1b2c', stream: { sha256, bytes: Number(bytes) } };
  const sum = (o: { index?: number; sha256?: string; tmp?: string } = {}) => sumOrder({ index: o.index ?? 0, tmp: o.tmp ?? batch.tmp, stream: { ...batch.stream, sha256: o.sha256 ?? sha256 } }).trim();
  const m0src = { ip: m0.ip, port };
  // What a host holds: the unpacked file, then anything else in the target dir or the agent's dir.
  const state = async (h: TestHost, d: string) => (await h.sh(`cat /opt/relayed/greeting 2>/dev/null; ls -A /opt/relayed ${d} 2>/dev/null | grep -v -e '^greeting$' -e ':$' -e '^$' | sort | tr '\\n' ' '`)).stdout;

  // n1, a host of the chain: fetches, and serves what it got to n2 only, dropping it once sent.
  const spool = '/var/lib/sealimg/relay/spool';
  const n1port = await startAgent(n1, token, spool, true, [n2.ip], batchScript(spool, '/opt/relayed', true));
  assert.ok(n1port > 0);
  const wrongToken = await startAgent(n2, 'not-the-token', spool, true, [], batchScript(spool, '/opt/relayed', false)).then(() => fetchOn(n2, 0, { ip: n1.ip, port: n1port }, sum()));
  assert.is(wrongToken.code, FETCH_FAILED, 'a wrong token gets nothing');
  assert.match(wrongToken.message, /is not the stream the operator sent \(0 of \d+ bytes/);
  const stranger = await fetchOn(n2, 0, m0src, sum());
  assert.is(stranger.code, FETCH_FAILED, 'a host the server was not told about gets nothing');
  assert.is(await state(n2, spool), '', 'and keeps nothing');
  const wrongSum = await fetchOn(n1, 0, m0src, sum({ sha256: createHash('sha256').update('something else').digest('hex') }));
  assert.is(wrongSum.code, FETCH_FAILED);
  assert.match(wrongSum.message, new RegExp(`is not the stream the operator sent \\(${bytes} of ${bytes} bytes, sha256 ${sha256}\\)`));
  assert.is(await state(n1, spool), '', 'nothing of a refused stream is unpacked or kept');
  const badName = await fetchOn(n1, 0, m0src, sum({ tmp: '.sealimg-../../etc' }));
  assert.is(badName.code, FETCH_FAILED, 'a staging name that is not ours is refused before anything is checked or unpacked');
  assert.match(badName.message, /a bad staging name/);
  const notOurs = await fetchOn(n1, 0, m0src, sum({ tmp: 'abc123' }));
  assert.match(notOurs.message, /a bad staging name/);
  const cancelled = await fetchOn(n1, 0, m0src, undefined);
  assert.is(cancelled.code, FETCH_FAILED);
  assert.match(cancelled.message, /the operator sent no sha256 for it/);
  assert.is(await state(n1, spool), '');
  const good = await fetchOn(n1, 0, m0src, sum());
  assert.is(good.code, 0, good.message);
  assert.is(await state(n1, spool), 'hello\n0.tar ', 'the right stream lands, its staging dir is gone, and the checked stream is kept to send on');
  assert.is((await n1.sh(`sha256sum < ${spool}/0.tar | cut -c1-64`)).stdout.trim(), sha256);

  // Sent on to n2, which serves nobody (the end of the chain): it keeps nothing, and n1 dropped its copy once sent whole.
  await startAgent(n2, token, spool, true, [], batchScript(spool, '/opt/relayed', false));
  const relayed = await fetchOn(n2, 0, { ip: n1.ip, port: n1port }, sum());
  assert.is(relayed.code, 0, relayed.message);
  assert.is(await state(n2, spool), 'hello\n');
  assert.is(await state(n1, spool), 'hello\n', 'the middle host dropped the stream once it was sent whole');
  assert.is((await m0.sh(`ls ${dir}`)).stdout.trim(), '0.tar', 'master0 keeps every stream');
  await n1.sh('rm -rf /opt/relayed');

  // A stream still coming in is sent as it grows, and ends when it is whole (renamed), or short when it is removed
  // (it failed where it came from), and then it is refused: served by sendfile, and through a buffer (elsewhere).
  const half = Math.floor(Number(bytes) / 2);
  for (const [n, copy] of [[1, undefined], [3, 'buffer']] as const) {
    if (copy) {
      assert.ok((m0src.port = await startAgent(m0, token, dir, false, [n1.ip], '', copy)) > 0);
      await m0.sh(`cp /tmp/stream0.tar ${dir}/0.tar`);
    }
    await m0.sh(`head -c ${half} ${dir}/0.tar > ${dir}/${n}.tar.part`);
    const grown = await fetchOn(n1, n, m0src, sum({ index: n }), async () => {
      await new Promise((r) => setTimeout(r, 500));
      await m0.sh(`tail -c +${half + 1} ${dir}/0.tar >> ${dir}/${n}.tar.part && mv ${dir}/${n}.tar.part ${dir}/${n}.tar`);
    });
    assert.is(grown.code, 0, grown.message);
    assert.is(await state(n1, spool), `hello\n${n}.tar `, 'a stream fetched while it grew lands whole');
    await n1.sh(`rm -rf /opt/relayed ${spool}/${n}.tar`);
    await m0.sh(`head -c ${half} ${dir}/0.tar > ${dir}/${n + 1}.tar.part`);
    const failed = await fetchOn(n1, n + 1, m0src, sum({ index: n + 1 }), async () => {
      await new Promise((r) => setTimeout(r, 500));
      await m0.sh(`rm ${dir}/${n + 1}.tar.part`);
    });
    assert.is(failed.code, FETCH_FAILED);
    assert.match(failed.message, new RegExp(`is not the stream the operator sent \\(${half} of ${bytes} bytes`));
    assert.is(await state(n1, spool), '', `${copy ?? 'sendfile'}: nothing of it is kept`);
  }

  // Ending an agent's stdin stops it, and it removes its streams.
  for (const h of [m0, n1, n2]) {
    const left = await stopAgent(h);
    assert.match(left, /^stopped\n/, `${h.hostname}: the agent stops when its stdin ends`);
    assert.not.match(left, /relay/, `${h.hostname}: and its streams are gone`);
    await h.sh('rm -rf /opt/relayed /tmp/agent.* /tmp/stream0.tar');
  }
});

test.run();
