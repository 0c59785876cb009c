/**
 * Relay: the operator sends a tree to master0 once, and the other hosts fetch
 * the same tar streams from master0 over the hosts' own network, so the
 * operator's link carries one copy instead of one per host.
 *
 * While master0 receives each upload batch it keeps the exact stream
 * (upload.ts `tee`) in a root-only dir, and the operator notes the sha256 of
 * the bytes it sent. For the run, master0 runs a small stream server (perl,
 * from perl-base, so on every Debian or Ubuntu host and most others) on its own
 * address, answering only the other hosts' addresses and a random token. Each
 * other host fetches batch N into a root-only file, checks it against the
 * sha256 the operator gave it over SSH, and only then unpacks it with the same
 * receive command as a direct upload (less its file-by-file check, which that
 * sha256 already covers): nothing that came over the plain connection is used
 * before it matches what the operator sent.
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
 * close() stops the server and removes the kept streams.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { SealimgError } from '../errors.js';
import { recordSent, type SentBatch } from './distribute.js';
import type { RunHost } from './hosts.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';
import { STREAM_CHECKED, receiveCommand } from './upload.js';

const RELAY_ROOT = '/var/lib/sealimg/relay';
const RETRY_PAUSE_MS = 1000;

export interface RelayResult {
  files: number;
  bytes: number;
}

/**
 * master0's stream server: `perl -e SERVER DIR TOKEN ADDRESS ALLOWED...`. It listens on ADDRESS (any port),
 * writes the port to DIR/port, and for a connection from an allowed address that sends "TOKEN N\n" sends
 * DIR/N.tar and closes. It stops when its stdin ends (the operator closed the channel, or died and sshd
 * closed it) and after 12 hours whatever happens.
 */
const SERVER = String.raw`
use strict; use warnings; use IO::Socket::IP; use IO::Select; use POSIX ();
my ($dir, $token, $addr, @from) = @ARGV;
my %from = map { $_ => 1 } @from;
my $l = IO::Socket::IP->new(Listen => 64, LocalHost => $addr, LocalPort => 0, ReuseAddr => 1) or die "cannot listen on $addr: $@\n";
open(my $p, '>', "$dir/port.tmp") or die "$dir: $!\n";
print $p $l->sockport, "\n"; close($p) or die "$dir: $!\n";
rename("$dir/port.tmp", "$dir/port") or die "$dir: $!\n";
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
  open(my $f, '<', "$dir/$2.tar") or return;
  my $buf;
  for (;;) {
    alarm 600;
    my $n = sysread($f, $buf, 1 << 20);
    last unless $n;
    for (my $o = 0; $o < $n;) { my $w = syswrite($c, $buf, $n - $o, $o); return unless defined $w; $o += $w; }
  }
}
`;

/** A host's fetch: `perl -e CLIENT ADDRESS PORT TOKEN N > FILE`; fails on a refused connection or a 2-minute stall. */
const CLIENT = String.raw`
use strict; use warnings; use IO::Socket::IP;
my ($addr, $port, $token, $n) = @ARGV;
my $c = IO::Socket::IP->new(PeerHost => $addr, PeerPort => $port, Timeout => 15) or die "cannot reach master0's relay at $addr port $port: $@\n";
$c->autoflush(1);
print $c "$token $n\n";
$SIG{ALRM} = sub { die "master0's relay stopped sending\n" };
binmode(STDOUT);
my $buf;
for (;;) {
  alarm 120;
  my $r = sysread($c, $buf, 1 << 20);
  die "reading from master0's relay: $!\n" unless defined $r;
  last if $r == 0;
  for (my $o = 0; $o < $r;) { my $w = syswrite(STDOUT, $buf, $r - $o, $o); die "writing the relayed stream: $!\n" unless defined $w; $o += $w; }
}
`;

/** The command master0 runs to serve the streams in `dir` on `address` to `from` (exported for its test). */
export function serverCommand(dir: string, token: string, address: string, from: string[]): string {
  return `command -v perl >/dev/null || { echo 'no perl on master0' >&2; exit 1; }; exec perl -e ${shellQuote(SERVER)} ${[dir, token, address, ...from].map(shellQuote).join(' ')} >/dev/null`;
}

/**
 * The command a host runs to take batch `b` from the server at address:port into `remoteDir`: fetched into
 * `spool` (root-only), checked against the operator's sha256 of the stream, then unpacked and checked file by
 * file as a direct upload is (exported for its test).
 */
export function fetchCommand(address: string, port: number, token: string, b: Pick<SentBatch, 'index' | 'tmp' | 'stream'>, remoteDir: string, spool: string): string {
  const S = shellQuote(spool);
  const f = shellQuote(`${spool}/${b.index}.tar`);
  const args = [address, String(port), token, String(b.index)].map(shellQuote).join(' ');
  return [
    `command -v perl >/dev/null || { echo 'no perl' >&2; exit 1; }`,
    `umask 077 && mkdir -p -- ${S} || exit 1`,
    `if ! perl -e ${shellQuote(CLIENT)} ${args} > ${f}; then rm -f -- ${f}; exit 1; fi`,
    // openssl where it is (4x sha256sum's speed here, see upload.ts), else coreutils.
    `sum=$( { openssl dgst -sha256 -r ${f} 2>/dev/null || sha256sum ${f}; } | cut -c1-64)`,
    `if [ "$sum" != ${b.stream.sha256} ]; then echo "batch ${b.index} from master0 is not the stream the operator sent ($(wc -c < ${f}) of ${b.stream.bytes} bytes, sha256 $sum)" >&2; rm -f -- ${f}; exit 1; fi`,
    // The file-by-file check is skipped (STREAM_CHECKED): the sha256 above covered every byte of the stream.
    `( export ${STREAM_CHECKED}=1; ${receiveCommand(remoteDir, b.tmp)}\n) < ${f}; rc=$?; rm -f -- ${f}; exit $rc`,
  ].join('\n');
}

export class Relay {
  private readonly batches: SentBatch[] = [];
  private ended = false;
  private failure?: unknown;
  private waiters: Array<() => void> = [];

  private constructor(
    private readonly master0: SshSession,
    private readonly from: RunHost,
    private readonly id: string,
    private readonly token: string,
    private readonly port: number,
    /** Ending it ends the server's stdin, which stops it. */
    private readonly serverStdin: PassThrough,
    private readonly server: Promise<unknown>,
  ) {}

  /**
   * Starts master0's stream server for `targets`; undefined (direct upload for everyone) when master0 is not
   * reached as root.
   */
  static async open(master0: SshSession, from: RunHost, targets: RunHost[], signal?: AbortSignal): Promise<Relay | undefined> {
    if (master0.user !== 'root' || targets.length === 0) return undefined;
    const id = randomId();
    const dir = `${RELAY_ROOT}/${id}`;
    // Two runs at once on one cluster are not supported, so whatever an earlier relay left is stale.
    await master0.exec(`umask 077 && rm -rf -- ${shellQuote(RELAY_ROOT)} && mkdir -p -- ${shellQuote(dir)}`, { step: 'distribute', label: 'make the relay dir on master0', signal });
    const token = randomBytes(16).toString('hex');
    const stdin = new PassThrough();
    const server = master0.exec(serverCommand(dir, token, from.ip, targets.map((t) => t.ip)), { stdin, step: 'distribute', label: 'serve the relay on master0', signal, allowFailure: true });
    let stopped: string | undefined;
    void server.then((r) => (stopped = r.stderr.trim() || `exit code ${r.code}`), (e: unknown) => (stopped = e instanceof Error ? e.message : String(e)));
    // The server writes its port once it listens: a few hundred ms; bounded, and cut short if it failed.
    for (let i = 0; i < 100 && stopped === undefined; i++) {
      const r = await master0.exec(`cat ${shellQuote(`${dir}/port`)} 2>/dev/null`, { step: 'distribute', label: 'wait for the relay on master0', signal, allowFailure: true });
      const port = Number(r.stdout.trim());
      if (r.code === 0 && Number.isInteger(port) && port > 0 && port < 65536) return new Relay(master0, from, id, token, port, stdin, server);
      await new Promise((res) => setTimeout(res, 100));
    }
    stdin.end();
    await server.catch(() => undefined);
    throw new SealimgError('HOST_STEP_FAILED', `master0 ${from.name}: the relay did not start: ${stopped ?? 'no port after 10 s'}`);
  }

  /** Where master0 keeps batch n's stream. */
  teePath(index: number): string {
    return `${RELAY_ROOT}/${this.id}/${index}.tar`;
  }

  /** master0 has batch `b` (its stream kept). */
  add(b: SentBatch): void {
    this.batches[b.index] = b;
    this.wake();
  }

  /** master0 has everything (or failed: the hosts stop replaying and go direct). */
  end(failure?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Batch n once master0 has it; null when there is none. */
  private async next(n: number): Promise<SentBatch | null> {
    for (;;) {
      if (this.batches[n]) return this.batches[n]!;
      if (this.ended) {
        if (this.failure !== undefined) throw new SealimgError('HOST_STEP_FAILED', `master0 ${this.from.name} did not receive the tree`);
        return null;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Replays every batch master0 gets onto `session`'s host and records them in its state; throws on any failure. */
  async replay(session: SshSession, remoteDir: string, statePath: string, signal?: AbortSignal): Promise<RelayResult> {
    const out: RelayResult = { files: 0, bytes: 0 };
    const spool = `${RELAY_ROOT}/${this.id}.in`;
    try {
      for (let n = 0; ; n++) {
        const b = await this.next(n);
        if (!b) break;
        const cmd = fetchCommand(this.from.ip, this.port, this.token, b, remoteDir, spool);
        const label = `relay batch ${n} from master0 ${this.from.name} into ${remoteDir}`;
        // One more try after a pause: a failed fetch leaves nothing behind (fetchCommand, receiveCommand).
        await session.exec(cmd, { step: 'distribute', label, signal }).catch(async () => {
          await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
          return session.exec(cmd, { step: 'distribute', label, signal });
        });
        await recordSent(statePath, remoteDir, b.files);
        out.files += b.files.length;
        out.bytes += b.bytes;
      }
    } finally {
      await session.exec(`rm -rf -- ${shellQuote(spool)}; rmdir ${RELAY_ROOT} 2>/dev/null; true`, { step: 'distribute', label: 'remove the relay spool', allowFailure: true, timeoutMs: 20_000 }).catch(() => undefined);
    }
    return out;
  }

  /** Stops the server and removes the kept streams from master0. */
  async close(): Promise<void> {
    this.serverStdin.end();
    // It stops at once when its stdin ends; the streams go even if it did not.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.server.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, 10_000)))]);
    clearTimeout(timer);
    await this.master0.exec(`rm -rf -- ${shellQuote(`${RELAY_ROOT}/${this.id}`)}; rmdir ${RELAY_ROOT} 2>/dev/null; true`, {
      step: 'distribute',
      label: 'remove the relay streams from master0',
      timeoutMs: 30_000,
    });
  }
}
