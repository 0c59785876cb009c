/**
 * Test hosts: N small "machines" on this one, each with sshd, for every runner
 * test. Needs root, iproute2, util-linux (unshare, nsenter) and openssh-server.
 *
 * Layout of one run (n = a free third octet, claimed by mkdir of the run dir):
 *
 *   netns slh<n>-br   a bridge br0 and nothing else: no address, no route
 *   netns slh<n>-op   the operator: eth0 10.77.<n>.2/24 on the bridge; sealimg runs
 *                     here (`operatorRun`), and the test process reaches the hosts
 *                     through sockets made here (`dial`)
 *   netns slh<n>-h<i> host i: eth0 10.77.<n>.<11+i>/24, plus its own mount, UTS, IPC
 *                     and PID namespaces; root = overlay(lower=/, upper=run dir), its own
 *                     /run, /tmp, /dev, /proc; sshd is its PID 1
 *
 * 10.77.x.x exists only inside these namespaces and none of them has a default
 * route, so no packet can leave the machine, even from a buggy test (the root
 * namespace has no route to the hosts, only an "unreachable" one for 10.77/16).
 *
 * Everything a host writes lands in its overlay's upper dir under
 * /var/tmp/sealimg-testhosts/run-<n>/disk/, which a host cannot see (masked by
 * an empty tmpfs). That disk is itself a tmpfs, one per run. On this VM a new
 * file on ext4 costs 0.03-1.3 ms of kernel CPU, varying from minute to minute
 * (0.01 ms on tmpfs): `tar -x` of a 723 MB tree of 5617 files took 4.9-8.3 s
 * of system time in a host whose disk was ext4, and 0.98-1.04 s into an
 * overlay on tmpfs. With every host sharing this machine's two cores and one
 * file system, that cost was what a multi-host benchmark measured, not the
 * network or the tool. Killing the `unshare` process kills the host's PID
 * namespace, which drops its private mounts; teardown then deletes the
 * namespaces, unmounts the disk and deletes the run dir. `cleanupStaleHosts()`
 * does the same for runs whose owner is dead.
 *
 * What a test should know:
 * - A host starts as a copy of this machine's / (every installed tool is there:
 *   skopeo, docker-registry, sudo...), with an empty /tmp and /run of its own.
 *   Other paths (/root, /work, /var/tmp) show the real files, copy-on-write.
 * - Non-namespaced sysctls and /sys are read-only in a host; /proc/sys/net is its own.
 * - No systemd in a host: sshd is PID 1. `host.sh()` runs a command inside it
 *   without SSH, for a test's own checks.
 * - The operator namespace has its own loopback: a registry that sealimg (run
 *   via `operatorRun`) must reach is started there (`operatorCommand`), not on
 *   the root namespace's 127.0.0.1. Benchmarks shape the operator's link with
 *   tc on eth0 in `operatorNetns`.
 * - In-process SSH (the runner's SshPool) reaches the hosts with `dial` as its
 *   dial option. A plain connect from the test process fails at once: the root
 *   namespace gets an "unreachable 10.77.0.0/16" route, so that no mistake can
 *   send these addresses to the real network by the default route.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from './cli.js';

export const HOSTS_BASE = '/var/tmp/sealimg-testhosts';
const NS_PREFIX = 'slh';
const DIALER = fileURLToPath(new URL('./netns-dialer.js', import.meta.url));

export interface TestUser {
  name: string;
  password?: string;
  authorizedKeys?: string[];
  /** 'nopasswd': sudo without a password; 'password': sudo asks for the user's password. */
  sudo?: 'nopasswd' | 'password';
}

export interface TestHostsOptions {
  count: number;
  /** Root's password on every host (default: a random one, in `rootPassword`). */
  rootPassword?: string;
  /** Public keys (OpenSSH one-line form) allowed to log in as root. */
  authorizedKeys?: string[];
  /** Extra login users, made inside every host's overlay. */
  users?: TestUser[];
  /** sshd's port on every host (default 22). */
  sshPort?: number;
  /** Hostnames (default node1..nodeN). */
  hostnames?: string[];
  /** How long a host may take until its sshd answers (default 15 s). */
  readyTimeoutMs?: number;
}

export interface TestHost {
  index: number;
  hostname: string;
  ip: string;
  port: number;
  netns: string;
  /** The host's overlay upper dir (on the run's tmpfs, seen from this process): what the host changed. */
  upperDir: string;
  /** Runs `sh -c script` as root inside the host (all its namespaces), not over SSH: for assertions. */
  sh(script: string, opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<RunResult>;
  /** Takes the host's link down (it stops answering, like a machine that is off) and back up. */
  down(): Promise<void>;
  up(): Promise<void>;
}

export interface TestHosts {
  hosts: TestHost[];
  /** The /24 the hosts live on, e.g. 10.77.42.0/24. */
  subnet: string;
  operatorNetns: string;
  operatorIp: string;
  rootPassword: string;
  /** A TCP connection to ip:port made in the operator namespace (for ssh2's `sock`). */
  dial(ip: string, port: number, timeoutMs?: number): Promise<Socket>;
  /**
   * Runs a command in the operator namespace: its network only (the files are the real ones). It
   * reaches the hosts and its own loopback, not the root namespace's 127.0.0.1: a registry sealimg
   * must pull from there is started in this namespace too (see `operatorCommand`).
   */
  operatorRun(cmd: string, args: string[], opts?: Parameters<typeof run>[2]): Promise<RunResult>;
  /** The argv that runs cmd+args in the operator namespace, for callers that spawn (servers, benchmarks). */
  operatorCommand(cmd: string, args: string[]): [string, string[]];
  /** Removes every host, namespace and file of this run; safe to call twice. */
  teardown(): Promise<void>;
}

/** Everything needed to undo one run, also synchronously from an exit handler. */
interface RunRecord {
  n: number;
  dir: string;
  pids: number[];
  dialer?: ChildProcess;
  done: boolean;
}

const live = new Set<RunRecord>();

process.on('exit', () => {
  // Last resort for a suite that crashed before its after hook: nothing may outlive the test process.
  for (const r of live) teardownSync(r);
});
// A signal (CI's `timeout`, Ctrl-C) ends a process without 'exit' handlers: clean up, then die of the signal as before.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    for (const r of live) teardownSync(r);
    process.kill(process.pid, sig);
  });
}

/** Single-quotes a string for sh. */
function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function must(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 30_000, ...opts });
  if (r.code !== 0) throw new Error(`test hosts: ${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

const nsName = (n: number, what: string) => `${NS_PREFIX}${n}-${what}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** "pid starttime": the starttime field tells a live owner from a reused pid. */
function ownerStamp(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return `${pid} ${fields[19]}`;
  } catch {
    return undefined;
  }
}

/** Claims a free /24 by creating its run dir (mkdir is atomic across processes). */
async function claimRun(): Promise<{ n: number; dir: string }> {
  await mkdir(HOSTS_BASE, { recursive: true, mode: 0o700 });
  const start = (process.pid % 250) + 1;
  for (let k = 0; k < 250; k++) {
    const n = ((start + k) % 250) + 1;
    const dir = `${HOSTS_BASE}/run-${n}`;
    if (existsSync(`/run/netns/${nsName(n, 'br')}`)) continue;
    try {
      await mkdir(dir);
    } catch {
      continue;
    }
    await writeFile(`${dir}/owner`, `${ownerStamp(process.pid)}\n`);
    return { n, dir };
  }
  throw new Error('test hosts: no free 10.77.x.0/24 left; run cleanupStaleHosts()');
}

function sshdConfig(port: number): string {
  return [
    '# sshd for a sealimg test host; lives only in this host overlay',
    `Port ${port}`,
    'HostKey /etc/ssh/sealimg-test/ssh_host_ed25519_key',
    'PermitRootLogin yes',
    'PasswordAuthentication yes',
    'PubkeyAuthentication yes',
    'KbdInteractiveAuthentication no',
    // No PAM: there is no login session machinery in a namespace; passwords are checked against /etc/shadow.
    'UsePAM no',
    'UseDNS no',
    'PidFile none',
    'MaxStartups 100:30:200',
    'MaxSessions 64',
    'AuthorizedKeysFile .ssh/authorized_keys',
    'Subsystem sftp /usr/lib/openssh/sftp-server',
    '',
  ].join('\n');
}

/**
 * The script that turns a fresh mount+UTS+PID namespace into a host and execs
 * sshd as its PID 1. Values are baked in (quoted) so nothing is passed in argv.
 */
function hostScript(o: { dir: string; hostname: string; etcHosts: string; rootPassword: string; authorizedKeys: string[]; users: TestUser[] }): string {
  const M = `${o.dir}/root`;
  const lines = [
    'set -eu',
    `M=${q(M)}`,
    `mount -t overlay overlay -o lowerdir=/,upperdir=${q(o.dir + '/upper')},workdir=${q(o.dir + '/work')} "$M"`,
    // Hide every run's files from the host: they sit in the lower layer (the real /var/tmp).
    `mount -t tmpfs -o mode=700,size=1m tmpfs "$M"${q(HOSTS_BASE)}`,
    'mount -t proc proc "$M/proc"',
    // Non-namespaced sysctls and sysfs are read-only, so a hook cannot change the real machine.
    'mount --bind "$M/proc/sys" "$M/proc/sys" && mount -o remount,bind,ro "$M/proc/sys"',
    'mount --bind "$M/proc/sys/net" "$M/proc/sys/net"',
    'mount -t sysfs -o ro sysfs "$M/sys"',
    'mount -t tmpfs -o mode=755,size=64m tmpfs "$M/dev"',
    'for d in null zero full random urandom tty; do touch "$M/dev/$d"; mount --bind "/dev/$d" "$M/dev/$d"; done',
    'mkdir "$M/dev/pts" "$M/dev/shm"',
    'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$M/dev/pts"',
    'ln -s pts/ptmx "$M/dev/ptmx"',
    'ln -s /proc/self/fd "$M/dev/fd"',
    'mount -t tmpfs -o mode=1777,size=64m tmpfs "$M/dev/shm"',
    'mount -t tmpfs -o mode=755,size=64m tmpfs "$M/run"',
    'mkdir -m 755 "$M/run/sshd"',
    // An empty /tmp of its own (on disk, in the run dir): a host must not see the operator's temp files.
    `mount --bind ${q(o.dir + '/tmp')} "$M/tmp"`,
    `hostname ${q(o.hostname)}`,
    `printf '%s\\n' ${q(o.hostname)} > "$M/etc/hostname"`,
    `printf '%s' ${q(o.etcHosts)} >> "$M/etc/hosts"`,
    `printf '%s\\n' ${q(randomBytes(16).toString('hex'))} > "$M/etc/machine-id"`,
    'mkdir -p "$M/etc/ssh/sealimg-test"',
    `cp ${q(o.dir + '/ssh')}/* "$M/etc/ssh/sealimg-test/"`,
    `printf '%s\\n' ${q(`root:${o.rootPassword}`)} | chroot "$M" chpasswd`,
    'mkdir -p -m 700 "$M/root/.ssh"',
    `printf '%s' ${q(o.authorizedKeys.map((k) => k.trim() + '\n').join(''))} > "$M/root/.ssh/authorized_keys"`,
    'chmod 600 "$M/root/.ssh/authorized_keys"',
  ];
  for (const u of o.users) {
    lines.push(`chroot "$M" useradd -m -s /bin/bash ${q(u.name)}`);
    if (u.password !== undefined) lines.push(`printf '%s\\n' ${q(`${u.name}:${u.password}`)} | chroot "$M" chpasswd`);
    // useradd leaves the account locked ("!"), and sshd without PAM then refuses even keys: "*" is "no password", not locked.
    else lines.push(`chroot "$M" usermod -p '*' ${q(u.name)}`);
    if (u.authorizedKeys?.length) {
      lines.push(
        `chroot "$M" su -s /bin/sh ${q(u.name)} -c ${q(`mkdir -p -m 700 ~/.ssh && printf '%s' ${q(u.authorizedKeys.map((k) => k.trim() + '\n').join(''))} > ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys`)}`,
      );
    }
    if (u.sudo) {
      const rule = `${u.name} ALL=(ALL:ALL) ${u.sudo === 'nopasswd' ? 'NOPASSWD: ' : ''}ALL\n`;
      lines.push(`printf '%s' ${q(rule)} > "$M/etc/sudoers.d/sealimg-test-${u.name}"`, `chmod 440 "$M/etc/sudoers.d/sealimg-test-${u.name}"`);
    }
  }
  lines.push('exec chroot "$M" /usr/sbin/sshd -D -e -f /etc/ssh/sealimg-test/sshd_config', '');
  return lines.join('\n');
}

/** The direct children of a process (the unshare process has one: the host's PID 1). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Reads the first bytes a server sends (the SSH banner) over a socket from the operator namespace. */
async function sshBanner(hosts: Pick<TestHosts, 'dial'>, ip: string, port: number): Promise<string> {
  const sock = await hosts.dial(ip, port, 1000);
  try {
    return await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no banner within 2 s')), 2000);
      sock.once('data', (d: Buffer) => {
        clearTimeout(t);
        resolve(d.toString('latin1'));
      });
      sock.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      sock.once('close', () => {
        clearTimeout(t);
        reject(new Error('closed before the banner'));
      });
    });
  } finally {
    sock.destroy();
  }
}

/** Starts the operator-side dialer and returns `dial` over it. */
function startDialer(rec: RunRecord, opNs: string): TestHosts['dial'] {
  const child = spawn('nsenter', [`--net=/run/netns/${opNs}`, '--', process.execPath, DIALER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  rec.dialer = child;
  rec.pids.push(child.pid!);
  // The dialer must not keep the test process alive, except while a dial is pending.
  child.unref();
  const channel = (child as unknown as { channel?: { ref(): void; unref(): void } }).channel;
  channel?.unref();
  let seq = 0;
  const waiting = new Map<number, { resolve: (s: Socket) => void; reject: (e: Error) => void }>();
  child.on('message', (m: { id: number; error?: string; code?: string }, handle?: Socket) => {
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (waiting.size === 0) channel?.unref();
    if (m.error || !handle) w.reject(Object.assign(new Error(m.error ?? 'no socket'), { code: m.code }));
    else w.resolve(handle);
  });
  child.on('exit', () => {
    for (const w of waiting.values()) w.reject(new Error('test hosts: dialer exited'));
    waiting.clear();
  });
  return (ip, port, timeoutMs = 10_000) =>
    new Promise<Socket>((resolve, reject) => {
      if (!child.connected) return reject(new Error('test hosts: torn down'));
      const id = ++seq;
      waiting.set(id, { resolve, reject });
      channel?.ref();
      child.send({ id, host: ip, port, timeoutMs });
    });
}

/** Creates `count` test hosts. Call `teardown()` in an `after` hook. */
export async function createTestHosts(opts: TestHostsOptions): Promise<TestHosts> {
  if (process.getuid?.() !== 0) throw new Error('test hosts need root (network and mount namespaces)');
  if (opts.users?.some((u) => u.sudo) && !existsSync('/usr/bin/sudo')) throw new Error('test hosts: sudo is not installed (apt-get install sudo)');
  const count = opts.count;
  if (!(count >= 1 && count <= 200)) throw new Error(`test hosts: count ${count} out of range`);
  const port = opts.sshPort ?? 22;
  const rootPassword = opts.rootPassword ?? randomBytes(9).toString('base64url');
  // A safety net in the root namespace: a test that connects to a host without `dial` gets "unreachable" at
  // once, instead of its packets following the default route out of the machine. Left in place (harmless).
  const guard = await run('ip', ['route', 'add', 'unreachable', '10.77.0.0/16']);
  if (guard.code !== 0 && !/File exists/.test(guard.stderr)) throw new Error(`test hosts: cannot add the 10.77.0.0/16 guard route: ${guard.stderr.trim()}`);
  const { n, dir } = await claimRun();
  const rec: RunRecord = { n, dir, pids: [], done: false };
  live.add(rec);
  const disk = `${dir}/disk`;
  const brNs = nsName(n, 'br');
  const opNs = nsName(n, 'op');
  const subnet = `10.77.${n}.0/24`;
  const operatorIp = `10.77.${n}.2`;
  try {
    await mkdir(disk);
    await must('mount', ['-t', 'tmpfs', '-o', 'mode=700', 'tmpfs', disk]);
    await must('ip', ['netns', 'add', brNs]);
    await must('ip', ['-n', brNs, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', brNs, 'link', 'set', 'br0', 'up']);
    const attach = async (ns: string, port: string, ip: string) => {
      await must('ip', ['netns', 'add', ns]);
      await must('ip', ['-n', brNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await must('ip', ['-n', brNs, 'link', 'set', port, 'master', 'br0', 'up']);
      await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    };
    await attach(opNs, 'op', operatorIp);
    const dial = startDialer(rec, opNs);

    const names = Array.from({ length: count }, (_, i) => opts.hostnames?.[i] ?? `node${i + 1}`);
    const ips = names.map((_, i) => `10.77.${n}.${11 + i}`);
    const etcHosts = names.map((h, i) => `${ips[i]} ${h}\n`).join('');
    const hostPids: number[] = [];
    // Hosts are made side by side: each has its own namespace, dir and keys.
    // allSettled: on a failure, teardown must come after every spawn, or a late one would outlive it.
    const made = await Promise.allSettled(Array.from({ length: count }, async (_, i): Promise<TestHost> => {
      const ns = nsName(n, `h${i + 1}`);
      const hdir = `${disk}/h${i + 1}`;
      for (const d of ['upper', 'work', 'root', 'tmp', 'ssh']) await mkdir(`${hdir}/${d}`, { recursive: true });
      await chmod(`${hdir}/tmp`, 0o1777);
      await must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', names[i], '-f', `${hdir}/ssh/ssh_host_ed25519_key`]);
      await writeFile(`${hdir}/ssh/sshd_config`, sshdConfig(port));
      await writeFile(
        `${hdir}/setup.sh`,
        hostScript({ dir: hdir, hostname: names[i], etcHosts, rootPassword, authorizedKeys: opts.authorizedKeys ?? [], users: opts.users ?? [] }),
      );
      await attach(ns, `h${i + 1}`, ips[i]);
      const log = openSync(`${hdir}/host.log`, 'a');
      const child = spawn(
        'nsenter',
        [`--net=/run/netns/${ns}`, '--', 'unshare', '--mount', '--uts', '--ipc', '--pid', '--fork', '--kill-child', '--propagation', 'private', 'sh', `${hdir}/setup.sh`],
        { stdio: ['ignore', log, log], detached: true },
      );
      closeSync(log);
      child.unref();
      rec.pids.push(child.pid!);
      hostPids[i] = child.pid!;
      const unsharePid = child.pid!;
      return {
        index: i,
        hostname: names[i],
        ip: ips[i],
        port,
        netns: ns,
        upperDir: `${hdir}/upper`,
        sh: (script, o = {}) => {
          const init = childrenOf(unsharePid)[0];
          if (!init) return Promise.reject(new Error(`test host ${names[i]} is not running`));
          return run('nsenter', ['-t', String(init), '-m', '-u', '-n', '-p', '-i', '-r', '-w', 'sh', '-c', script], { input: o.input, timeoutMs: o.timeoutMs ?? 60_000 });
        },
        down: async () => void (await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'down'])),
        up: async () => void (await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up'])),
      };
    }));
    const failed = made.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const hosts = made.map((r) => (r as PromiseFulfilledResult<TestHost>).value);

    // Every host boots in parallel; each must answer with an SSH banner in time.
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
    await Promise.all(
      hosts.map(async (h, i) => {
        for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
          const banner = await sshBanner({ dial }, h.ip, h.port).catch(() => '');
          if (banner.startsWith('SSH-')) return;
          const log = await readFile(`${dir}/h${i + 1}/host.log`, 'utf8').catch(() => '');
          if (!existsSync(`/proc/${hostPids[i]}`) || Date.now() > deadline) {
            throw new Error(`test host ${h.hostname} (${h.ip}) did not start sshd in time:\n${log}`);
          }
          await sleep(delay);
        }
      }),
    );

    const api: TestHosts = {
      hosts,
      subnet,
      operatorNetns: opNs,
      operatorIp,
      rootPassword,
      dial,
      operatorRun: (cmd, args, o) => run('nsenter', [`--net=/run/netns/${opNs}`, '--', cmd, ...args], o),
      operatorCommand: (cmd, args) => ['nsenter', [`--net=/run/netns/${opNs}`, '--', cmd, ...args]],
      teardown: () => teardown(rec),
    };
    return api;
  } catch (e) {
    await teardown(rec);
    throw e;
  }
}

/** Netns names of one run (whatever exists of them). */
function runNamespaces(n: number): string[] {
  let names: string[] = [];
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter(Boolean);
  } catch {
    return [];
  }
  return names.filter((x) => x.startsWith(`${NS_PREFIX}${n}-`));
}

function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Every pid in a netns, per `ip netns pids`. */
function netnsPids(ns: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function teardownSync(rec: RunRecord): void {
  if (rec.done) return;
  rec.done = true;
  live.delete(rec);
  if (rec.dialer?.connected) rec.dialer.disconnect();
  killPids(rec.pids);
  const nss = runNamespaces(rec.n);
  // Whatever a test started inside a host or the operator namespace goes too.
  for (let round = 0; round < 20; round++) {
    const left = nss.flatMap(netnsPids);
    if (left.length === 0) break;
    killPids(left);
    execFileSync('sleep', ['0.05']);
  }
  // The bridge namespace last: deleting it destroys the veth ends of all the others.
  for (const ns of nss.sort((a, b) => Number(a.endsWith('-br')) - Number(b.endsWith('-br')))) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // gone already
    }
  }
  // Lazily: a host whose mount namespace is still being torn down may hold the disk a moment longer.
  try {
    execFileSync('umount', ['-l', `${rec.dir}/disk`], { stdio: 'ignore' });
  } catch {
    // not mounted (a run that failed before, or a stale run from before disks were tmpfs)
  }
  rmSync(rec.dir, { recursive: true, force: true });
}

async function teardown(rec: RunRecord): Promise<void> {
  if (rec.done) return;
  if (rec.dialer?.connected) rec.dialer.disconnect();
  killPids(rec.pids);
  // Wait (bounded) for the hosts' PID 1s to die, so their mounts are gone before we delete the files below them.
  for (let i = 0; i < 100 && rec.pids.some((p) => existsSync(`/proc/${p}`)); i++) await sleep(20);
  teardownSync(rec);
}

/**
 * Removes what crashed runs left: namespaces named slh<n>-* and run dirs whose
 * owner process is gone. Live runs of other processes are left alone.
 * Returns the run numbers it removed.
 */
export async function cleanupStaleHosts(): Promise<number[]> {
  const removed = new Set<number>();
  const alive = (n: number): boolean => {
    try {
      const owner = readFileSync(`${HOSTS_BASE}/run-${n}/owner`, 'utf8').trim();
      const pid = Number(owner.split(' ')[0]);
      return ownerStamp(pid) === owner;
    } catch {
      // A run dir made this instant may not have its owner file yet.
      try {
        const { mtimeMs } = statSync(`${HOSTS_BASE}/run-${n}`);
        return Date.now() - mtimeMs < 10_000;
      } catch {
        return false;
      }
    }
  };
  const runs = new Set<number>();
  for (const e of await readdir(HOSTS_BASE).catch(() => [] as string[])) {
    const m = /^run-(\d+)$/.exec(e);
    if (m) runs.add(Number(m[1]));
  }
  for (const line of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-`).exec(line);
    if (m) runs.add(Number(m[1]));
  }
  for (const n of runs) {
    if (alive(n)) continue;
    teardownSync({ n, dir: `${HOSTS_BASE}/run-${n}`, pids: [], done: false });
    removed.add(n);
  }
  return [...removed].sort((a, b) => a - b);
}

export { q as shellQuote };
