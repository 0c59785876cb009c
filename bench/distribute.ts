/**
 * `sealimg run` distribution to 1, 3 and 5 test hosts against parallel
 * `scp -r` of the same tree to the same hosts (sealos' method), with the
 * operator's link limited by tc (tbf on eth0 in the operator namespace).
 * Times `run` from start to its last "distributed" line (the image has no
 * hooks). Needs root. Run by hand:
 *   npm run build && node dist/bench/distribute.js [MB]      (default 700)
 * BENCH_RATE sets the operator's link rate (default 1gbit), BENCH_HOST_RATE
 * each host's (default unlimited: hosts pass the tree on over the bridge at
 * memory speed), BENCH_HOSTS the counts
 * (default 1,3,5), SEALIMG_RELAY=0 measures direct uploads only (the master0
 * relay is on by default, as in sealimg run). The tree is half random bytes, half text-like files.
 * "mount+setup" is the part of sealimg's time before its first byte is sent:
 * unpacking the image from the store (first run only; BENCH_COLD=0 leaves
 * that run out of the report), starting the relay, listing the tree.
 *
 * What the rate measures here: every host, the operator and the relay share
 * this machine's two cores. At 1gbit both tools are CPU-bound (top showed
 * both cores busy, 8% idle, through a 5-host run), so the link time the relay
 * saves does not show there; at 200mbit the operator's link is the limit, as
 * it is for an operator outside the cluster's network, and the ratios
 * measure what the relay is for: one copy over that link instead of one per host.
 * BENCH_HOST_RATE=200mbit as well models a LAN where every machine has the
 * same link: there a host that sent every other host its copy (a star from
 * master0) would be the limit, which is why the relay is a chain.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SEALIMG, ok, run } from '../test/helpers/cli.js';
import { cleanupStaleHosts, createTestHosts } from '../test/helpers/hosts.js';
import { cleanupTmp, tmpDir } from '../test/helpers/tmp.js';

const totalMb = Number(process.argv[2] ?? 700);
const rate = process.env.BENCH_RATE ?? '1gbit';
const hostRate = process.env.BENCH_HOST_RATE;
const links = hostRate ? `${rate}, hosts ${hostRate}` : rate;
const counts = (process.env.BENCH_HOSTS ?? '1,3,5').split(',').map(Number);

async function makeTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true });
  const big = Math.max(1, Math.floor(totalMb / 40)); // 20 MB random files: the first half
  for (let i = 0; i < big; i++) await writeFile(join(dir, 'bin', `tool${i}`), randomBytes(20 << 20));
  const text = Buffer.from('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: example\n'.repeat(1024));
  const small = Math.floor(((totalMb / 2) * 1024 * 1024) / (64 << 10));
  for (let i = 0; i < small; i++) {
    const d = join(dir, 'manifests', `d${i % 50}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, `f${i}.yaml`), Buffer.concat([text.subarray(0, 48 << 10), randomBytes(16 << 10)]));
  }
}

await cleanupStaleHosts();
const root = await tmpDir();
const home = await tmpDir();
const ctxDir = join(await tmpDir(), 'image');
await makeTree(join(ctxDir, 'data'));
await writeFile(join(ctxDir, 'Sealfile'), 'FROM scratch\nLABEL sealos.io.type=rootfs sealos.io.version=v1beta1 version=v1.28.0\nCOPY data data\n');
const b = await run(process.execPath, [SEALIMG, '--root', root, 'build', '-q', '--compression', 'none', '-t', 'example.com/bench:v1', ctxDir], { timeoutMs: 1_800_000 });
if (b.code !== 0) throw new Error(b.stderr);
const key = join(home, 'id');
await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
const hosts = await createTestHosts({ count: Math.max(...counts), authorizedKeys: [await readFile(`${key}.pub`, 'utf8')] });
const netns = ['nsenter', `--net=/run/netns/${hosts.operatorNetns}`, '--'];
try {
  await ok('ip', ['netns', 'exec', hosts.operatorNetns, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms']);
  // Each host's own link too, when asked: what a host that passes the tree on can send.
  if (hostRate) for (const h of hosts.hosts) await ok('ip', ['netns', 'exec', h.netns, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', hostRate, 'burst', '256kb', 'latency', '50ms']);
  const secs = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;
  // Machine-wide busy CPU-seconds (user, nice, system, irq, softirq of /proc/stat, in USER_HZ = 100ths):
  // what both tools spend on the cores every host shares here.
  const busy = async () => (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1, 8).filter((_, i) => i !== 3 && i !== 4).reduce((a, v) => a + Number(v), 0) / 100;
  /** One `sealimg run` to the first n hosts, timed from start to its last "distributed" line, then reset. */
  const sealimgRun = async (n: number) => {
    const ips = hosts.hosts.slice(0, n).map((h) => h.ip);
    const args = [SEALIMG, '--root', root, 'run', 'example.com/bench:v1', '--masters', ips[0]!, ...(n > 1 ? ['--nodes', ips.slice(1).join(',')] : [])];
    const t = process.hrtime.bigint();
    const cpu = await busy();
    let sealimgCpu = 0;
    let lastDistributed = 0;
    let mounting = 0;
    let distributing = 0;
    let seen = 0;
    let err = '';
    const code = await new Promise<number>((resolve) => {
      const c = spawn(netns[0]!, [...netns.slice(1), process.execPath, ...args], { env: { ...process.env, SEALIMG_HOME: home, SEALIMG_SSH_PASSWORD: hosts.rootPassword, SEALIMG_RELAY: process.env.SEALIMG_RELAY ?? '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
      c.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        for (const line of d.toString().split('\n')) if (line && (process.env.BENCH_VERBOSE || /relay .*failed|cannot set up the relay/.test(line))) console.log(`  ${secs(t).toFixed(1)} s ${line}`);
        for (const line of d.toString().split('\n')) {
          if (/: distributed \d+ files/.test(line)) { seen++; lastDistributed = secs(t); void busy().then((c) => (sealimgCpu = c - cpu)); }
          if (/^Mounting \d+ image/.test(line)) mounting = secs(t);
          if (/^Distributing \d+ files/.test(line)) distributing = secs(t);
        }
      });
      c.on('close', (code) => resolve(code ?? 1));
    });
    if (code !== 0 || seen !== n) throw new Error(`sealimg run failed (${seen}/${n} distributed):\n${err}`);
    const relayed = (err.match(/MB of it relayed from /g) ?? []).length;
    const reset = await hosts.operatorRun(process.execPath, [SEALIMG, '--root', root, 'reset'], { env: { SEALIMG_HOME: home, SEALIMG_SSH_PASSWORD: hosts.rootPassword }, timeoutMs: 600_000 });
    if (reset.code !== 0) throw new Error(reset.stderr);
    return { s: lastDistributed, text: `sealimg run ${lastDistributed.toFixed(1)} s (mount+setup ${(distributing - mounting).toFixed(1)} s, ${relayed} relayed, ${sealimgCpu.toFixed(0)} CPU-s)` };
  };
  /** scp -r of the same tree to the first n hosts, in parallel. */
  const scpRun = async (n: number) => {
    const ips = hosts.hosts.slice(0, n).map((h) => h.ip);
    const t = process.hrtime.bigint();
    const cpu = await busy();
    await Promise.all(
      ips.map((ip) => hosts.operatorRun('scp', ['-r', '-q', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', join(ctxDir, 'data'), `root@${ip}:/opt/bench-scp`], { timeoutMs: 1_800_000 }).then((r) => {
        if (r.code !== 0) throw new Error(`scp to ${ip}: ${r.stderr}`);
      })),
    );
    const s = secs(t);
    const scpCpu = (await busy()) - cpu;
    for (const h of hosts.hosts.slice(0, n)) await h.sh('rm -rf /opt/bench-scp');
    return { s, text: `scp -r ${s.toFixed(1)} s (${scpCpu.toFixed(0)} CPU-s)` };
  };
  // First, a run of an image this machine has not unpacked yet (a first `run` after a pull or a build). The
  // runs after it find the image unpacked (mount.ts keeps it for every cluster, as sealos' image store
  // keeps pulled images unpacked), which is where scp -r starts: a tree on disk.
  // BENCH_COLD=0 leaves that run out of the report; it still runs, unmeasured, so the runs below find the image unpacked.
  const cold = await sealimgRun(1);
  if (process.env.BENCH_COLD !== '0') {
    const scp = await scpRun(1);
    console.log(`1 host, first run (image not unpacked yet), ${totalMb} MB, link ${links}: ${cold.text}, ${scp.text}, ratio ${(cold.s / scp.s).toFixed(2)}x`);
  }
  const one: Record<string, number> = {};
  for (const n of counts) {
    const r = await sealimgRun(n);
    const scp = await scpRun(n);
    one[n] = r.s;
    console.log(`${n} host(s), ${totalMb} MB, link ${links}: ${r.text}, ${scp.text}, ratio ${(r.s / scp.s).toFixed(2)}x` + (n > 1 && one[1] ? `, ${n} hosts / 1 host ${(r.s / one[1]).toFixed(2)}x` : ''));
  }
} finally {
  await hosts.teardown();
  await cleanupTmp();
}
