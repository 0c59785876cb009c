/**
 * Relay: the operator sends a tree to master0 once, and the other hosts pass
 * the same tar streams along a chain over the hosts' own network
 * (master0 -> node1 -> node2 ...), so the operator's link carries one copy
 * instead of one per host, and no host's link carries more than two (one in,
 * one out; fetching all from master0 would put every copy on its link).
 *
 * While master0 receives each upload batch it keeps the exact stream
 * (upload.ts `tee`) in a root-only dir, and the operator notes the sha256 of
 * the bytes it sent. For the run, master0 and every host in the chain but the
 * last run a small stream server (perl, from perl-base, so on every Debian or
 * Ubuntu host and most others) on their own address, answering only the next
 * host's address and a random token. Each host fetches batch N from the host
 * before it into a root-only file, checks it against the sha256 the operator
 * gave it over SSH, and only then unpacks it with the same receive command as
 * a direct upload (less its file-by-file check, which that sha256 already
 * covers) and keeps it for the next host, whose server drops it once sent:
 * nothing that came over a plain connection is used before it matches what
 * the operator sent. A host whose predecessor failed fetches from master0,
 * which has every batch. All of that is one SSH command per batch
 * (relayCommand): each command starts a login shell on the host, and going
 * from four commands a batch to one took a 5-host run on the test hosts from
 * 85 to 56 CPU-seconds.
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
 * close() stops the servers and removes the kept streams.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { sleep } from '../content/retry.js';
import { SealimgError } from '../errors.js';
import { recordSent, type SentBatch } from './distribute.js';
import type { RunHost } from './hosts.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';
import { STREAM_CHECKED, receiveScript } from './upload.js';

const RELAY_ROOT = '/var/lib/sealimg/relay';
const RETRY_PAUSE_MS = 1000;

export interface RelayResult {
  files: number;
  bytes: number;
  /** The hosts the batches came from. */
  from: string[];
}

/**
 * A host's stream server: `perl -e SERVER DIR TOKEN ADDRESS DROP ALLOWED...`. It listens on ADDRESS (any
 * port), prints the port on stdout, and for a connection from an allowed address that sends "TOKEN N\n"
 * sends DIR/N.tar and closes; while only DIR/N.tar.part exists (the stream is still coming in) it sends that
 * as it grows, until it is renamed (whole) or removed (failed: the reader gets a short stream). With DROP
 * 1 (a host of the chain, which serves only the next one) it removes DIR/N.tar once it has sent it whole:
 * the next host falls back to master0, never back here. It stops when its stdin ends (the operator closed
 * the channel, or died and sshd closed it) and after 12 hours whatever happens.
 */
const SERVER = String.raw`
use strict; use warnings; use IO::Socket::IP; use IO::Select; use POSIX ();
my ($dir, $token, $addr, $drop, @from) = @ARGV;
my %from = map { $_ => 1 } @from;
my $l = IO::Socket::IP->new(Listen => 64, LocalHost => $addr, LocalPort => 0, ReuseAddr => 1) or die "cannot listen on $addr: $@\n";
$| = 1;
print $l->sockport, "\n";
$SIG{CHLD} = 'IGNORE';
my $sel = IO::Select->new($l, \*STDIN);
my $end = time + 12 * 3600;
while (time < $end) {
  for my $fh ($sel->can_read(60)) {
    if ($fh != $l) { my $b; exit 0 unless sysread(STDIN, $b, 4096); next; }
    my $c = $l->accept or next;
    my $peer = $c->peerhost // ''; $peer =~ s/^::ffff://;
    my $pid = $from{$peer} ? fork() : undef;
    if (defined $pid && $pid == 0) { close($l); serve($c); POSIX::_exit(0); }
    close($c);
  }
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
  my ($buf, $moved) = ('', time);
  for (;;) {
    alarm 600;
    my $n = sysread($f, $buf, 1 << 20);
    return unless defined $n;
    if ($n == 0) {
      # At the end of what is written so far: the stream is whole once renamed, and failed once gone.
      if (-e $whole) { $n = sysread($f, $buf, 1 << 20); return unless defined $n; if ($n == 0) { unlink($whole) if $drop; last; } }
      elsif (-e $part && time - $moved < 600) { select(undef, undef, undef, 0.02); next; }
      else { return; }
    }
    $moved = time;
    for (my $o = 0; $o < $n;) { my $w = syswrite($c, $buf, $n - $o, $o); return unless defined $w; $o += $w; }
  }
}
`;

/** A host's fetch: `perl -e CLIENT ADDRESS PORT TOKEN N > FILE`; fails on a refused connection or a 2-minute stall. */
const CLIENT = String.raw`
use strict; use warnings; use IO::Socket::IP;
my ($addr, $port, $token, $n) = @ARGV;
my $c = IO::Socket::IP->new(PeerHost => $addr, PeerPort => $port, Timeout => 15) or die "cannot reach the relay at $addr port $port: $@\n";
$c->autoflush(1);
print $c "$token $n\n";
$SIG{ALRM} = sub { die "the relay at $addr stopped sending\n" };
binmode(STDOUT);
my $buf;
for (;;) {
  alarm 120;
  my $r = sysread($c, $buf, 1 << 20);
  die "reading from the relay at $addr: $!\n" unless defined $r;
  last if $r == 0;
  for (my $o = 0; $o < $r;) { my $w = syswrite(STDOUT, $buf, $r - $o, $o); die "writing the relayed stream: $!\n" unless defined $w; $o += $w; }
}
`;

/**
 * The command a host runs to serve the streams in `dir` (made if missing) on `address` to `from`; `drop` on a
 * host of the chain (exported for its test).
 */
export function serverCommand(dir: string, token: string, address: string, drop: boolean, from: string[]): string {
  return [
    `command -v perl >/dev/null || { echo 'no perl' >&2; exit 1; }`,
    `umask 077 && mkdir -p -- ${shellQuote(dir)} || exit 1`,
    `exec perl -e ${shellQuote(SERVER)} ${[dir, token, address, drop ? '1' : '0', ...from].map(shellQuote).join(' ')}`,
  ].join('\n');
}

/** Where a host keeps the streams it serves (and, on master0, where the upload keeps them). */
const streamDir = (id: string) => `${RELAY_ROOT}/${id}`;
const streamPath = (id: string, index: number) => `${streamDir(id)}/${index}.tar`;

/** Exit code of relayCommand when the batch did not arrive as the operator sent it (the fetch, or its check, failed). */
export const FETCH_FAILED = 3;

/**
 * The one command a host runs for batch n (each SSH command costs a login shell on the host: see the
 * header): fetch it from the server at
 * address:port into dir/N.tar.part (root-only) as it comes; read the operator's "SHA256 BYTES STAGING" for
 * it from stdin (the operator knows it once master0 has the whole batch, often after the fetch began);
 * check the stream against it, and only if it matches unpack it as a direct upload is, less the
 * file-by-file check (STREAM_CHECKED) that the stream's sha256 covers. When `serve`, the checked stream is
 * renamed dir/N.tar for the host's own server to send on; else it goes. Exits FETCH_FAILED, leaving
 * nothing, when the stream is not what was sent (exported for its test).
 */
export function relayCommand(address: string, port: number, token: string, index: number, dir: string, from: string, remoteDir: string, serve: boolean): string {
  const part = shellQuote(`${dir}/${index}.tar.part`);
  const args = [address, String(port), token, String(index)].map(shellQuote).join(' ');
  const refuse = (why: string) => `{ echo ${why} >&2; rm -f -- ${part}; exit ${FETCH_FAILED}; }`;
  return [
    `command -v perl >/dev/null || { echo 'no perl' >&2; exit ${FETCH_FAILED}; }`,
    `umask 077 && mkdir -p -- ${shellQuote(dir)} || exit ${FETCH_FAILED}`,
    `perl -e ${shellQuote(CLIENT)} ${args} > ${part} || ${refuse(`"batch ${index}: fetching from ${from} failed"`)}`,
    `read -r want bytes T || ${refuse(`'batch ${index}: the operator sent no sha256 for it'`)}`,
    // The staging name is ours (upload.ts: .sealimg- and hex); anything else is not used in a path.
    `case "\${T#.sealimg-}" in ''|*[!0-9a-f]*) ${refuse(`'batch ${index}: a bad staging name'`)};; esac`,
    // openssl where it is (4x sha256sum's speed here, see upload.ts), else coreutils.
    `sum=$( { openssl dgst -sha256 -r ${part} 2>/dev/null || sha256sum ${part}; } | cut -c1-64)`,
    `[ "$sum" = "$want" ] || ${refuse(`"batch ${index} from ${from} is not the stream the operator sent ($(wc -c < ${part} 2>/dev/null || echo 0) of $bytes bytes, sha256 $sum)"`)}`,
    // Opened before it is renamed: the server here may send N.tar on and drop it before tar gets to read it.
    `exec 3< ${part}`,
    serve ? `mv -f -- ${part} ${shellQuote(`${dir}/${index}.tar`)}` : `rm -f -- ${part}`,
    `( export ${STREAM_CHECKED}=1; ${receiveScript(remoteDir)}
) <&3`,
  ].join('\n');
}

/** The line relayCommand reads from stdin for batch `b`. */
export function streamLine(b: Pick<SentBatch, 'stream' | 'tmp'>): string {
  return `${b.stream.sha256} ${b.stream.bytes} ${b.tmp}\n`;
}

/** A relayed batch that failed; `fetch` when it did not arrive as sent (worth fetching again from master0). */
class RelayFetchError extends SealimgError {
  constructor(
    readonly fetch: boolean,
    message: string,
  ) {
    super('HOST_STEP_FAILED', message);
  }
}

/** A host of the chain: it serves the batches it gets to the next one, as they come in. */
interface Source {
  host: RunHost;
  session?: SshSession;
  /** Until its replay has started (or not) its server, the next host waits (at most START_WAIT_MS). */
  starting: boolean;
  /** Set once its server listens. */
  port?: number;
  stopServer?: () => Promise<void>;
  /** Batches it is receiving or holds (its server sends a batch as it grows). */
  started: Set<number>;
  /** It gets no more: failed, or finished. */
  done: boolean;
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

/** How long a host waits for the one before it to start serving before it fetches from master0 instead. */
const START_WAIT_MS = 30_000;

/** Starts a stream server for `dir` on `host`, allowing `next`; its port, and how to stop it. */
async function startServer(session: SshSession, host: RunHost, dir: string, token: string, drop: boolean, next: string[], signal?: AbortSignal): Promise<{ port: number; stop: () => Promise<void> }> {
  const stdin = new PassThrough();
  let printed = '';
  let listening: (port: number) => void = () => undefined;
  const port = new Promise<number>((r) => (listening = r));
  const server = session.exec(serverCommand(dir, token, host.ip, drop, next), {
    stdin,
    step: 'distribute',
    label: `serve the relay on ${host.name}`,
    signal,
    allowFailure: true,
    onStdout: (b) => {
      printed += b.toString();
      const m = /^(\d+)\n/.exec(printed);
      if (m) listening(Number(m[1]));
    },
  });
  const stop = async () => {
    stdin.end();
    // It stops at once when its stdin ends; nothing waits longer than 10 s for it.
    await within(server.catch(() => undefined), 10_000, undefined);
  };
  // It prints its port once it listens: a few hundred ms. One that exits first failed; one that says nothing for 10 s is stopped.
  const exited = server.then(
    (r) => ({ failed: r.stderr.trim() || `exit code ${r.code}` }),
    (e: unknown) => ({ failed: e instanceof Error ? e.message : String(e) }),
  );
  const first = await within(Promise.race([port.then((p) => ({ port: p })), exited]), 10_000, { failed: 'no port after 10 s' });
  if ('port' in first && first.port > 0 && first.port < 65536) return { port: first.port, stop };
  await stop();
  throw new SealimgError('HOST_STEP_FAILED', `${host.name}: the relay did not start: ${'failed' in first ? first.failed : `port ${first.port}`}`);
}

export class Relay {
  private readonly batches: SentBatch[] = [];
  private failure?: unknown;
  private waiters: Array<() => void> = [];
  private readonly token = randomBytes(16).toString('hex');
  /** master0 first, then the targets in chain order. */
  private readonly chain: Source[];

  private constructor(
    private readonly id: string,
    master0: Source,
    private readonly targets: RunHost[],
  ) {
    this.chain = [master0, ...targets.map((host) => ({ host, starting: true, started: new Set<number>(), done: false }))];
  }

  /**
   * Starts master0's server for `targets` (chained in this order; every one of them may fall back to
   * master0); undefined (direct upload for everyone) when master0 is not reached as root.
   */
  static async open(master0: SshSession, from: RunHost, targets: RunHost[], signal?: AbortSignal): Promise<Relay | undefined> {
    if (master0.user !== 'root' || targets.length === 0) return undefined;
    const id = randomId();
    // Two runs at once on one cluster are not supported, so whatever an earlier relay left is stale.
    await master0.exec(`umask 077 && rm -rf -- ${shellQuote(RELAY_ROOT)} && mkdir -p -- ${shellQuote(streamDir(id))}`, { step: 'distribute', label: 'make the relay dir on master0', signal });
    const relay = new Relay(id, { host: from, session: master0, starting: false, started: new Set(), done: false }, targets);
    const server = await startServer(master0, from, streamDir(id), relay.token, false, targets.map((t) => t.ip), signal);
    relay.chain[0]!.port = server.port;
    relay.chain[0]!.stopServer = server.stop;
    return relay;
  }

  /** Where master0 keeps batch n's stream. */
  teePath(index: number): string {
    return streamPath(this.id, index);
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
    const dir = streamDir(this.id);
    const after = this.targets[i + 1];
    const run = (command: string, label: string, stdin?: PassThrough) => session.exec(command, { step: 'distribute', label, signal, stdin });
    try {
      if (after) {
        // Without a server here (no perl, say), the next host fetches from master0.
        const server = await startServer(session, host, dir, this.token, true, [after.ip], signal).catch(() => undefined);
        self.port = server?.port;
        self.stopServer = server?.stop;
      }
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
          const line = new PassThrough();
          const done = session.exec(relayCommand(src.host.ip, src.port!, this.token, n, dir, src.host.name, remoteDir, self.port !== undefined), {
            step: 'distribute',
            label: `relay batch ${n} from ${src.host.name} into ${remoteDir}`,
            signal,
            stdin: line,
            allowFailure: true,
          });
          done.catch(() => undefined); // a lost connection while master0 still receives is seen below, not as unhandled
          let b: SentBatch;
          try {
            b = await this.whole(n);
          } catch (e) {
            // Without the line (master0 failed) the command removes what it fetched and fails.
            line.end();
            await done.catch(() => undefined);
            throw e;
          }
          line.end(streamLine(b));
          const r = await done;
          if (r.code === 0) return b;
          throw new RelayFetchError(r.code === FETCH_FAILED, `${host.name}: relaying batch ${n} from ${src.host.name} failed: ${r.stderr.trim().split('\n').slice(-3).join('; ') || `exit code ${r.code}`}`);
        };
        const src = await this.sourceFor(i, n);
        // A stream that did not arrive as sent gets one more try, from master0 after a pause; it left nothing behind.
        const [b, used] = await take(src).then(
          (b) => [b, src] as const,
          async (e: unknown) => {
            if (!(e instanceof RelayFetchError && e.fetch)) throw e;
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

  /** Stops the servers and removes the kept streams from every host of the chain. */
  async close(): Promise<void> {
    await Promise.all(
      this.chain.map(async (s) => {
        await s.stopServer?.();
        if (!s.session) return;
        const dir = s === this.chain[0] ? streamDir(this.id) : RELAY_ROOT;
        await s.session.exec(`rm -rf -- ${shellQuote(dir)}; rmdir ${RELAY_ROOT} 2>/dev/null; true`, {
          step: 'distribute',
          label: 'remove the relay streams',
          timeoutMs: 30_000,
          allowFailure: true,
        });
      }),
    );
  }
}
