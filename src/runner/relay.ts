/**
 * Relay: the operator sends a tree to master0 once, and the other hosts pass
 * the same tar streams along a chain over the hosts' own network
 * (master0 -> node1 -> node2 ...), so the operator's link carries one copy
 * instead of one per host, and no host's link carries more than two (one in,
 * one out; fetching all from master0 would put every copy on its link).
 *
 * While master0 receives each upload batch it keeps the exact stream
 * (upload.ts `tee`) in a root-only dir, and the operator notes the sha256 of
 * the bytes it sent. For the run, every host of the relay runs one agent
 * (perl, from perl-base, so on every Debian or Ubuntu host and most others):
 * master0's and every host's in the chain but the last serve the streams on
 * their own address, answering only the next host's address (master0: any
 * target's) and a random token. Each host's agent fetches batch N from the
 * host before it into a root-only file, checks it against the sha256 the
 * operator gave it over SSH, and only then unpacks it with the same receive
 * script as a direct upload (less its file-by-file check, which that sha256
 * already covers) and keeps it for the next host, whose fetch drops it once
 * sent: nothing that came over a plain connection is used before it matches
 * what the operator sent. A host whose predecessor failed fetches from
 * master0, which has every batch.
 *
 * The agent is one SSH command per host for the whole relay, told what to
 * fetch on its stdin, because every SSH command starts a login shell on the
 * host (on the test hosts, root's .bashrc alone costs 0.11 CPU-seconds). One
 * command per batch, and a server and a clean-up command per host, was 8
 * commands a host for the bench tree's 6 batches.
 *
 * Why plain TCP and not ssh from master0 (the first version): on this
 * project's 2-core test machine an OpenSSH hop cost 1.4 CPU-seconds per 128
 * MB (ssh 0.75, sshd 0.62) against 0.37 for these two perl processes, and
 * with every host sharing those cores that was the whole difference. It also
 * needed a key line in master0's root authorized_keys. The price: the rootfs
 * tree crosses the cluster network unencrypted (as the embedded registry
 * already serves its images over plain HTTP there); application trees and
 * registry/ are never relayed. SEALIMG_RELAY=0 turns the relay off.
 *
 * Everything here is best effort: any failure leaves the host to the direct
 * upload (distribute.ts), which sends only what the host's record still lacks.
 * close() stops the agents, which remove the kept streams.
 */
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { PassThrough } from 'node:stream';
import { sleep } from '../content/retry.js';
import { SealimgError } from '../errors.js';
import { recordSent, type SentBatch } from './distribute.js';
import type { RunHost } from './hosts.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';
import { receiveScript } from './upload.js';
import { STREAM_CHECKED } from './upload-tar.js';

const RELAY_ROOT = '/var/lib/sealimg/relay';
const RETRY_PAUSE_MS = 1000;

export interface RelayResult {
  files: number;
  bytes: number;
  /** The hosts the batches came from. */
  from: string[];
}

/**
 * A host's relay agent, the one SSH command it runs for the whole relay (each command costs a login shell on
 * the host: see the header): `perl -e AGENT DIR TOKEN ADDRESS DROP ALLOWED BATCH`.
 *
 * Serving (ALLOWED, a comma list of addresses, not empty): it listens on ADDRESS (any port) and, for a
 * connection from an allowed address that sends "TOKEN N\n", sends DIR/N.tar and closes; while only
 * DIR/N.tar.part exists (the stream is still coming in) it sends that as it grows, until it is renamed
 * (whole) or removed (failed: the reader gets a short stream). With DROP 1 (a host of the chain, which
 * serves only the next one) it removes DIR/N.tar once it has sent it whole: the next host falls back to
 * master0, never back here. master0, every host's fallback, keeps every stream.
 *
 * Fetching, as the operator asks on its stdin:
 *   "fetch N ADDRESS PORT NAME": fetch batch N from the agent at ADDRESS:PORT (host NAME) into
 *     DIR/N.tar.part as it comes, then run the shell script BATCH (batchScript) on it, whose stdin gets...
 *   "sum N SHA256 BYTES STAGING": ...the operator's line for batch N, once master0 has it whole, or
 *   "cancel N": nothing (master0 failed; the script removes what was fetched and fails).
 * It answers each fetch with "exit N CODE MESSAGE" (CODE 0 done, FETCH_FAILED when the stream did not arrive
 * as sent, UNREACHABLE when ADDRESS:PORT took no connection) and says "port P" first (0: not serving). When its stdin ends (the operator closed the channel,
 * or died and sshd closed it), and after 12 hours whatever happens, it stops its batches, removes DIR and
 * exits.
 */
const AGENT = String.raw`
use strict; use warnings; use IO::Socket::IP; use IO::Select; use POSIX (); use Config;
my ($dir, $token, $addr, $drop, $allowed, $script) = @ARGV;
# sendfile(2), by its number where we know it (perl has no call for it): a stream served then never passes through
# this process (5 hosts here: 1 CPU-s less of 20). Elsewhere, or with SEALIMG_RELAY_COPY=buffer, through a buffer.
my $SENDFILE = ($ENV{SEALIMG_RELAY_COPY} // '') eq 'buffer' ? 0 : { x86_64 => 40, aarch64 => 71 }->{ (split /-/, $Config{archname})[0] } // 0;
my $buf = '';  # pass()'s, when it copies
my %from = map { $_ => 1 } grep { length } split /,/, $allowed;
$| = 1;
$SIG{PIPE} = 'IGNORE';
my $l;
if (%from) { $l = IO::Socket::IP->new(Listen => 64, LocalHost => $addr, LocalPort => 0, ReuseAddr => 1) or print STDERR "cannot listen on $addr: $@\n"; }
print 'port ', ($l ? $l->sockport : 0), "\n";
my %batch;  # pid -> N, for the fetches running
my %sum;    # N -> the pipe to its script's stdin
my %kids;   # every child, to stop at the end
$SIG{CHLD} = sub {};  # only to wake the select below; children are reaped there
my $sel = IO::Select->new(\*STDIN);
$sel->add($l) if $l;
my ($in, $end) = ('', time + 12 * 3600);
LOOP: while (time < $end) {
  for my $fh ($sel->can_read(5)) {
    if ($l && $fh == $l) {
      my $c = $l->accept or next;
      my $peer = $c->peerhost // ''; $peer =~ s/^::ffff://;
      my $pid = $from{$peer} ? fork() : undef;
      if (defined $pid && $pid == 0) { child(); serve($c); POSIX::_exit(0); }
      $kids{$pid} = 1 if $pid;
      close($c);
      next;
    }
    my $got = sysread(STDIN, $in, 65536, length $in);
    next if !defined $got && $!{EINTR};
    last LOOP unless $got;
    while ($in =~ s/^([^\n]*)\n//) { order($1); }
  }
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $code = $? & 127 ? 1 : $? >> 8;
    delete $kids{$pid};
    my $n = delete $batch{$pid};
    next unless defined $n;
    delete $sum{$n};
    my $why = '';
    if (open(my $f, '<', "$dir/$n.log")) { my @l = grep { /\S/ } map { chomp; $_ } <$f>; $why = join('; ', @l[($#l > 2 ? $#l - 2 : 0) .. $#l]); }
    unlink("$dir/$n.log");
    print "exit $n $code $why\n";
  }
}
kill('TERM', map { -$_ } keys %batch);
kill('TERM', keys %kids);
1 while waitpid(-1, 0) > 0;
system('rm', '-rf', '--', $dir);
rmdir($dir =~ s{/[^/]+$}{}r);
exit 0;

sub child { close($l) if $l; $sel = undef; $SIG{CHLD} = 'DEFAULT'; }

sub order {
  my ($line) = @_;
  if ($line =~ /^fetch ([0-9]{1,4}) (\S+) ([0-9]{1,5}) (\S+)$/ && !exists $sum{$1}) {
    my ($n, $src, $port, $name) = ($1, $2, $3, $4);
    pipe(my $r, my $w) or return print "exit $n 1 no pipe: $!\n";
    my $pid = fork();
    return print "exit $n 1 cannot fork: $!\n" unless defined $pid;
    if ($pid == 0) { close($w); child(); fetch($n, $src, $port, $name, $r); }
    close($r);
    ($batch{$pid}, $sum{$n}, $kids{$pid}) = ($n, $w, 1);
  } elsif ($line =~ /^(sum|cancel) ([0-9]{1,4}) ?(.*)$/ && $sum{$2}) {
    my $w = $sum{$2};
    syswrite($w, "$3\n") if $1 eq 'sum';
    close($w);
    $sum{$2} = 0;
  }
}

# A fetch, in its own process group (stopped whole at the end): batch N into DIR/N.tar.part, then BATCH on it.
sub fetch {
  my ($n, $src, $port, $name, $r) = @_;
  POSIX::setsid();
  my $part = "$dir/$n.tar.part";
  open(STDIN, '<&', $r) or POSIX::_exit(1);
  close($r);
  open(STDOUT, '>', "$dir/$n.log") or POSIX::_exit(1);
  open(STDERR, '>&', \*STDOUT) or POSIX::_exit(1);
  my $fail = sub { print STDERR "batch $n: $_[0]\n"; unlink($part); POSIX::_exit($_[1] // 3); };
  $SIG{ALRM} = sub { $fail->("the relay on $name stopped sending") };
  # On a cluster's own network a host answers at once or a firewall drops the port: 3 s covers a lost SYN.
  my $c = IO::Socket::IP->new(PeerHost => $src, PeerPort => $port, Timeout => 3) or $fail->("cannot reach the relay on $name port $port: $@", 4);
  open(my $out, '>', $part) or $fail->("cannot write $part: $!");
  syswrite($c, "$token $n\n") or $fail->("cannot ask $name for it: $!");
  my $buf;
  for (;;) {
    alarm 120;
    my $got = sysread($c, $buf, 1 << 20);
    $fail->("reading from the relay on $name: $!") unless defined $got;
    last if $got == 0;
    for (my $o = 0; $o < $got;) { my $w = syswrite($out, $buf, $got - $o, $o); $fail->("writing $part: $!") unless defined $w; $o += $w; }
  }
  alarm 0;
  close($out) or $fail->("writing $part: $!");
  exec('/bin/sh', '-c', $script, 'relay', $n, $name) or $fail->("cannot run sh: $!");
}

sub serve {
  my ($c) = @_;
  open(STDIN, '<', '/dev/null'); open(STDOUT, '>', '/dev/null'); open(STDERR, '>', '/dev/null');
  $SIG{ALRM} = sub { POSIX::_exit(1) };
  alarm 30;
  my $req = <$c>;
  return unless defined $req && $req =~ /^(\S+) ([0-9]{1,4})\n\z/ && $1 eq $token;
  my ($whole, $part) = ("$dir/$2.tar", "$dir/$2.tar.part");
  # A stream still coming in (.part) is sent as it grows: the next host checks it whole anyway.
  my $f;
  for (my $i = 0; !(open($f, '<', $whole) || open($f, '<', $part)); $i++) { return if $i >= 300; select(undef, undef, undef, 0.1); }
  my $moved = time;
  for (;;) {
    alarm 600;
    my $n = pass($f, $c);
    return unless defined $n;
    if ($n == 0) {
      # At the end of what is written so far: the stream is whole once renamed, and failed once gone.
      if (-e $whole) { $n = pass($f, $c); return unless defined $n; if ($n == 0) { unlink($whole) if $drop; last; } }
      elsif (-e $part && time - $moved < 600) { select(undef, undef, undef, 0.02); next; }
      else { return; }
    }
    $moved = time;
  }
}

# Up to 1 MiB more of file $f onto socket $c: how much (0 at the file's end for now), undef on failure.
sub pass {
  my ($f, $c) = @_;
  if ($SENDFILE) {
    my $n = syscall($SENDFILE, fileno($c), fileno($f), 0, 1 << 20);
    return $n if $n >= 0;
    return undef unless $!{EINVAL} || $!{ENOSYS};
    $SENDFILE = 0;  # not for this file or kernel (nothing was sent): through a buffer from here on
  }
  my $n = sysread($f, $buf, 1 << 20);
  return $n unless $n;
  for (my $o = 0; $o < $n;) { my $w = syswrite($c, $buf, $n - $o, $o); return undef unless defined $w; $o += $w; }
  return $n;
}
`;

/** Where every relay keeps its streams on a host (master0's upload keeps them there too). */
const streamDir = (id: string) => `${RELAY_ROOT}/${id}`;

/** Exit code of a fetch when the batch did not arrive as the operator sent it (the fetch, or its check, failed). */
export const FETCH_FAILED = 3;
/** Exit code of a fetch whose source took no connection within 3 s (a firewall that drops the relay's port, most often). */
export const UNREACHABLE = 4;

/**
 * The script a host's agent runs on batch $1, fetched from host $2 into dir/$1.tar.part (root-only): read
 * the operator's "SHA256 BYTES STAGING" for it from stdin, check the stream against it, and only if it
 * matches unpack it as a direct upload is, less the file-by-file check (STREAM_CHECKED) that the stream's
 * sha256 covers. When `serve`, the checked stream is renamed dir/N.tar for the agent to send on; else it
 * goes. Exits FETCH_FAILED, leaving nothing, when the stream is not what was sent.
 */
export function batchScript(dir: string, remoteDir: string, serve: boolean, compress = false): string {
  const d = shellQuote(dir);
  return [
    'n=$1 from=$2',
    `part=${d}/"$n.tar.part"`,
    `refuse() { echo "batch $n: $1" >&2; rm -f -- "$part"; exit ${FETCH_FAILED}; }`,
    `read -r want bytes T || refuse 'the operator sent no sha256 for it'`,
    // The staging name is ours (upload.ts: .sealimg- and hex); anything else is not used in a path.
    'case "$T" in .sealimg-*) h=${T#.sealimg-} ;; *) h= ;; esac',
    `case "$h" in ''|*[!0-9a-f]*) refuse 'a bad staging name';; esac`,
    // openssl where it is (several times sha256sum's speed, see upload-tar.ts), else coreutils.
    `sum=$( { openssl dgst -sha256 -r "$part" 2>/dev/null || sha256sum "$part"; } | cut -c1-64)`,
    `[ "$sum" = "$want" ] || refuse "from $from is not the stream the operator sent ($(wc -c < "$part" 2>/dev/null || echo 0) of $bytes bytes, sha256 $sum)"`,
    // Opened before it is renamed: the agent may send N.tar on and drop it before tar gets to read it.
    'exec 3< "$part"',
    serve ? `mv -f -- "$part" ${d}/"$n.tar"` : 'rm -f -- "$part"',
    // The agent runs with umask 077 (its streams are root-only); what it unpacks gets the usual 022, as a direct upload does.
    `( umask 022; export ${STREAM_CHECKED}=1; ${receiveScript(remoteDir, { fromFile: true, compress })}
) <&3`,
  ].join('\n');
}

/**
 * The command that starts a host's agent (AGENT) on `address`, serving `allowed` (none: it only fetches),
 * with the streams in `dir`; whatever an earlier relay left on the host goes first (two runs at once on
 * one cluster are not supported). Exported for its test.
 */
export function agentCommand(dir: string, token: string, address: string, drop: boolean, allowed: string[], script: string): string {
  return [
    `command -v perl >/dev/null || { echo 'no perl' >&2; exit 1; }`,
    // Its parent with the usual modes (the tree goes there too); only the relay's own dir is root-only.
    `mkdir -p -- ${shellQuote(posix.dirname(RELAY_ROOT))} && umask 077 && rm -rf -- ${shellQuote(RELAY_ROOT)} && mkdir -p -- ${shellQuote(dir)} || exit 1`,
    `exec perl -e ${shellQuote(AGENT)} ${[dir, token, address, drop ? '1' : '0', allowed.join(','), script].map(shellQuote).join(' ')}`,
  ].join('\n');
}

/** The "sum" order for batch `b`: what its script reads from stdin. */
export function sumOrder(b: Pick<SentBatch, 'index' | 'stream' | 'tmp'>): string {
  return `sum ${b.index} ${b.stream.sha256} ${b.stream.bytes} ${b.tmp}\n`;
}

/** A fetch's end, as its agent told it: 0, FETCH_FAILED, or another failure; what its script said last. */
interface Fetched {
  code: number;
  message: string;
}

/** `p`'s value, or `late` once `ms` have passed, whichever comes first; the timer does not outlive the race. */
async function within<T, L>(p: Promise<T>, ms: number, late: L): Promise<T | L> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<L>((r) => (timer = setTimeout(() => r(late), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A host's running agent: the port it serves on (0: none), the fetches it runs for us, and how to stop it. */
class Agent {
  private readonly fetches = new Map<number, (f: Fetched) => void>();
  private gone?: string;

  private constructor(
    private readonly host: RunHost,
    private readonly orders: PassThrough,
    private readonly ended: Promise<boolean>,
    readonly port: number,
  ) {}

  static async start(session: SshSession, host: RunHost, command: string, signal?: AbortSignal): Promise<Agent> {
    const orders = new PassThrough();
    let agent: Agent | undefined;
    let said = '';
    let listening: (port: number) => void = () => undefined;
    const port = new Promise<number>((r) => (listening = r));
    const exec = session.exec(command, {
      stdin: orders,
      step: 'distribute',
      label: `run the relay agent on ${host.name}`,
      signal,
      allowFailure: true,
      onStdout: (b) => {
        const lines = (said + b.toString()).split('\n');
        said = lines.pop()!; // a line not ended yet
        for (const line of lines) {
          const p = /^port (\d+)$/.exec(line);
          if (p) listening(Number(p[1]));
          const e = /^exit (\d+) (\d+) ?(.*)$/.exec(line);
          if (e) agent?.done(Number(e[1]), { code: Number(e[2]), message: e[3]! });
        }
      },
    });
    // Every fetch still running ends when the agent does.
    const ended = exec.then(
      (r) => {
        agent?.end(r.stderr.trim().split('\n').slice(-3).join('; ') || `exit code ${r.code}`);
        return r.code === 0;
      },
      (e: unknown) => {
        agent?.end(e instanceof Error ? e.message : String(e));
        return false;
      },
    );
    // It prints its port at once (a few hundred ms); one that exits first failed, one that says nothing for 10 s is stopped.
    const first = await within(Promise.race([port, ended.then(() => undefined)]), 10_000, null);
    if (typeof first === 'number' && first < 65536) return (agent = new Agent(host, orders, ended, first));
    orders.end();
    await within(ended, 10_000, false);
    const r = await exec.catch((e: unknown) => ({ stderr: e instanceof Error ? e.message : String(e), code: -1 }));
    throw new SealimgError('HOST_STEP_FAILED', `${host.name}: the relay did not start: ${first === null ? 'no port after 10 s' : r.stderr.trim() || `exit code ${r.code}`}`);
  }

  private done(n: number, f: Fetched): void {
    const resolve = this.fetches.get(n);
    this.fetches.delete(n);
    resolve?.(f);
  }

  private end(why: string): void {
    this.gone = `the relay agent on ${this.host.name} ended: ${why}`;
    for (const n of [...this.fetches.keys()]) this.done(n, { code: -1, message: this.gone });
  }

  /** Fetches batch n from `src`'s agent; it waits for sum() (or cancel()) before it unpacks anything. */
  fetch(n: number, src: { host: RunHost; port: number }): Promise<Fetched> {
    if (this.gone) return Promise.resolve({ code: -1, message: this.gone });
    const f = new Promise<Fetched>((r) => this.fetches.set(n, r));
    this.orders.write(`fetch ${n} ${src.host.ip} ${src.port} ${src.host.name.replace(/\s/g, '_')}\n`);
    return f;
  }

  sum(b: SentBatch): void {
    if (!this.gone) this.orders.write(sumOrder(b));
  }

  cancel(n: number): void {
    if (!this.gone) this.orders.write(`cancel ${n}\n`);
  }

  /** Ends the agent (it stops its fetches and removes its streams); whether it did so cleanly within 10 s. */
  async stop(): Promise<boolean> {
    this.orders.end();
    return within(this.ended, 10_000, false);
  }
}

/** A relayed batch that failed; `again` when it is worth fetching again from master0. */
class RelayFetchError extends SealimgError {
  constructor(
    readonly again: boolean,
    message: string,
  ) {
    super('HOST_STEP_FAILED', message);
  }
}

/** A host of the chain: it serves the batches it gets to the next one, as they come in. */
interface Source {
  host: RunHost;
  session?: SshSession;
  agent?: Agent;
  /** Until its replay has started (or not) its agent, the next host waits (at most START_WAIT_MS). */
  starting: boolean;
  /** Set once its agent serves. */
  port?: number;
  /** Batches it is receiving or holds (its agent sends a batch as it grows). */
  started: Set<number>;
  /** It gets no more: failed, or finished. */
  done: boolean;
}

/** How long a host waits for the one before it to start serving before it fetches from master0 instead. */
const START_WAIT_MS = 30_000;

export class Relay {
  private readonly batches: SentBatch[] = [];
  private failure?: unknown;
  private waiters: Array<() => void> = [];
  private readonly token = randomBytes(16).toString('hex');
  private readonly dir = streamDir(randomId());
  /** master0 first, then the targets in chain order. */
  private readonly chain: Source[];

  private constructor(
    master0: Source,
    private readonly targets: RunHost[],
    /** master0's streams are gzipped (SEALIMG_DISTRIBUTE_GZIP). */
    private readonly compress: boolean,
  ) {
    this.chain = [master0, ...targets.map((host) => ({ host, starting: true, started: new Set<number>(), done: false }))];
  }

  /**
   * Starts master0's agent for `targets` (chained in this order; every one of them may fall back to
   * master0); undefined (direct upload for everyone) when master0 is not reached as root.
   */
  static async open(master0: SshSession, from: RunHost, targets: RunHost[], opts: { compress?: boolean; signal?: AbortSignal } = {}): Promise<Relay | undefined> {
    const signal = opts.signal;
    if (master0.user !== 'root' || targets.length === 0) return undefined;
    const relay = new Relay({ host: from, session: master0, starting: false, started: new Set(), done: false }, targets, opts.compress ?? false);
    const m0 = relay.chain[0]!;
    m0.agent = await Agent.start(master0, from, agentCommand(relay.dir, relay.token, from.ip, false, targets.map((t) => t.ip), ''), signal);
    if (m0.agent.port === 0) {
      await relay.close();
      throw new SealimgError('HOST_STEP_FAILED', `${from.name}: the relay cannot listen on ${from.ip}`);
    }
    m0.port = m0.agent.port;
    return relay;
  }

  /** Where master0 keeps batch n's stream. */
  teePath(index: number): string {
    return `${this.dir}/${index}.tar`;
  }

  /** master0 starts receiving batch n (its kept stream grows from now). */
  start(index: number): void {
    this.chain[0]!.started.add(index);
    this.wake();
  }

  /** master0 has batch `b` (its stream kept whole). */
  add(b: SentBatch): void {
    this.batches[b.index] = b;
    this.wake();
  }

  /** master0 has everything (or failed: the hosts stop replaying and go direct). */
  end(failure?: unknown): void {
    const m0 = this.chain[0]!;
    if (m0.done) return;
    m0.done = true;
    this.failure = failure;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves at the next change of any host's state, or after `ms` when given. */
  private async changed(ms?: number): Promise<void> {
    const change = new Promise<void>((r) => this.waiters.push(r));
    if (ms === undefined) return change;
    await within(change, ms, undefined);
  }

  private masterFailed(): SealimgError {
    return new SealimgError('HOST_STEP_FAILED', `master0 ${this.chain[0]!.host.name} did not receive the tree`);
  }

  /** Whether there is a batch n: master0 started it (true), or finished without it (false). */
  private async exists(n: number): Promise<boolean> {
    for (;;) {
      const m0 = this.chain[0]!;
      if (this.failure !== undefined) throw this.masterFailed();
      if (m0.started.has(n)) return true;
      if (m0.done) return false;
      await this.changed();
    }
  }

  /** Batch n as master0 got it whole (its sha256 and staging name). */
  private async whole(n: number): Promise<SentBatch> {
    for (;;) {
      if (this.batches[n]) return this.batches[n]!;
      if (this.chain[0]!.done) throw this.masterFailed();
      await this.changed();
    }
  }

  /**
   * Where target i gets batch n: the host before it once that is receiving it, else master0 (it failed, is
   * not serving, or has not started within START_WAIT_MS).
   */
  private async sourceFor(i: number, n: number): Promise<Source> {
    const before = this.chain[i]!;
    const deadline = Date.now() + START_WAIT_MS;
    for (;;) {
      if (before.started.has(n)) return before;
      if (before.done || (!before.starting && before.port === undefined) || (before.starting && Date.now() >= deadline)) return this.chain[0]!;
      await this.changed(before.starting ? Math.max(0, deadline - Date.now()) : undefined);
    }
  }

  /**
   * Replays every batch master0 gets onto `host` (a target) from the host before it in the chain, passing each
   * on to the host after it as it comes in, and records them in its state; throws on any failure.
   */
  async replay(session: SshSession, host: RunHost, remoteDir: string, statePath: string, signal?: AbortSignal): Promise<RelayResult> {
    const i = this.targets.indexOf(host);
    if (i < 0) throw new SealimgError('USAGE', `${host.name} is not a relay target`);
    const self = this.chain[i + 1]!;
    self.session = session;
    const out: RelayResult = { files: 0, bytes: 0, from: [] };
    const after = this.targets[i + 1];
    try {
      // An agent that cannot listen (port 0) still fetches; the next host then fetches from master0.
      const agent = await Agent.start(session, host, agentCommand(this.dir, this.token, host.ip, true, after ? [after.ip] : [], batchScript(this.dir, remoteDir, after !== undefined, this.compress)), signal);
      self.agent = agent;
      if (agent.port > 0) self.port = agent.port;
      self.starting = false;
      this.wake();
      // Two batches at a time, as a direct upload sends them: one is fetched while the other unpacks.
      const running = new Set<Promise<void>>();
      let failure: unknown;
      // The host's record is read, changed and written whole: one update at a time.
      let recording: Promise<void> = Promise.resolve();
      const one = async (n: number): Promise<void> => {
        // Fetch (as it comes in upstream), check against master0's sha256 (sent on once known), unpack.
        const take = async (src: Source): Promise<SentBatch> => {
          if (self.port !== undefined) {
            self.started.add(n);
            this.wake();
          }
          const fetched = agent.fetch(n, { host: src.host, port: src.port! });
          let b: SentBatch;
          try {
            b = await this.whole(n);
          } catch (e) {
            // Without its sum (master0 failed) the fetch removes what it got and fails.
            agent.cancel(n);
            await fetched;
            throw e;
          }
          agent.sum(b);
          const r = await fetched;
          if (r.code === 0) return b;
          // Worth one more try from master0, unless it was master0 that could not be reached.
          const again = r.code === FETCH_FAILED || (r.code === UNREACHABLE && src !== this.chain[0]);
          throw new RelayFetchError(again, `${host.name}: relaying batch ${n} from ${src.host.name} failed: ${r.message || `exit code ${r.code}`}`);
        };
        const src = await this.sourceFor(i, n);
        // A stream that did not arrive as sent gets one more try, from master0 after a pause; it left nothing behind.
        const [b, used] = await take(src).then(
          (b) => [b, src] as const,
          async (e: unknown) => {
            if (!(e instanceof RelayFetchError && e.again)) throw e;
            await sleep(RETRY_PAUSE_MS, signal);
            return [await take(this.chain[0]!), this.chain[0]!] as const;
          },
        );
        if (!out.from.includes(used.host.name)) out.from.push(used.host.name);
        recording = recording.then(() => recordSent(statePath, remoteDir, b.files));
        await recording;
        out.files += b.files.length;
        out.bytes += b.bytes;
      };
      for (let n = 0; failure === undefined && (await this.exists(n)); n++) {
        const p: Promise<void> = one(n).catch((e: unknown) => {
          failure ??= e;
        });
        running.add(p);
        void p.then(() => running.delete(p));
        while (running.size >= 2 && failure === undefined) await Promise.race(running);
      }
      await Promise.all(running);
      if (failure !== undefined) throw failure;
    } finally {
      self.starting = false;
      self.done = true;
      this.wake();
    }
    return out;
  }

  /**
   * Stops every agent of the chain, which removes its streams; where one did not end cleanly (it was gone
   * already, or hung), a command removes them.
   */
  async close(): Promise<void> {
    await Promise.all(
      this.chain.map(async (s) => {
        if (!s.session || (s.agent && (await s.agent.stop()))) return;
        await s.session.exec(`rm -rf -- ${shellQuote(this.dir)}; rmdir ${RELAY_ROOT} 2>/dev/null; true`, {
          step: 'distribute',
          label: 'remove the relay streams',
          timeoutMs: 30_000,
          allowFailure: true,
        });
      }),
    );
  }
}
