/**
 * Relay: the operator sends a tree to master0 once, and the other hosts fetch
 * the same tar streams from master0 over the hosts' own network, so the
 * operator's link carries one copy instead of one per host.
 *
 * While master0 receives each upload batch it keeps the exact stream
 * (upload.ts `tee`) in a root-only dir. The operator makes a key pair for this
 * run and puts its public half in master0's root authorized_keys, restricted
 * to the other hosts' addresses and to a forced command that can only print
 * one kept stream. Each other host gets the private key and master0's host key
 * (the one this run's own connection accepted) in a root-only temp dir, runs
 * `ssh master0 N | <the same receive command>`, and so ends with the same
 * checked, atomically renamed files as a direct upload. Batches are replayed
 * as soon as master0 has them, so the relay overlaps master0's own upload.
 *
 * Everything here is best effort: any failure leaves the host to the direct
 * upload (distribute.ts), which sends only what the host's record still lacks.
 * close() removes the key line, the kept streams and (per host) the key files.
 */
import ssh2 from 'ssh2';
import { SealimgError } from '../errors.js';
import { recordSent, type SentBatch } from './distribute.js';
import type { RunHost } from './hosts.js';
import { hostKeyType, knownHostName } from './known-hosts.js';
import { randomId, shellQuote, type SshSession } from './ssh.js';
import { receiveCommand } from './upload.js';

const RELAY_ROOT = '/var/lib/sealimg/relay';
const RETRY_PAUSE_MS = 1000;
/** How long a relay key line is honoured: far longer than any distribution, short enough to be harmless if left. */
const EXPIRY_HOURS = 12;

export interface RelayResult {
  files: number;
  bytes: number;
}

/**
 * The script master0 runs to take `line` into root's authorized_keys, with the relay's stream dir `dir`.
 * Exported for its test.
 */
export function authorizeScript(dir: string, line: string): string {
  // A run that dies before close() leaves its line behind: sshd stops accepting it after EXPIRY_HOURS
  // (expiry-time, OpenSSH 7.7+, in master0's own time zone), and the next relay removes it with the
  // streams kept beside it. Two runs at once on one cluster are not supported, so any other relay line is stale.
  return [
    'umask 077',
    `f=~/.ssh/authorized_keys`,
    `if [ -f "$f" ] && grep -q -F sealimg-relay- "$f"; then grep -v -F sealimg-relay- "$f" > "$f.sealimg-tmp"; chmod 600 "$f.sealimg-tmp" && mv -f "$f.sealimg-tmp" "$f" || exit 1; fi`,
    `rm -rf -- ${shellQuote(RELAY_ROOT)} && mkdir -p ${shellQuote(dir)} ~/.ssh || exit 1`,
    // Without GNU date the line has no expiry; the next relay still removes it.
    `opt=''; exp=$(date -d '+${EXPIRY_HOURS} hours' +%Y%m%d%H%M 2>/dev/null) && opt="expiry-time=\\"$exp\\","`,
    `printf '%s%s\\n' "$opt" ${shellQuote(line)} >> "$f"`,
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
    private readonly privateKey: string,
    private readonly knownHost: string,
  ) {}

  /**
   * Authorises the relay key on master0 for `targets`; undefined (direct upload for everyone) when master0 is not
   * reached as root or its host key is not known yet.
   */
  static async open(master0: SshSession, from: RunHost, targets: RunHost[], signal?: AbortSignal): Promise<Relay | undefined> {
    if (master0.user !== 'root' || !master0.hostKey || targets.length === 0) return undefined;
    const id = randomId();
    const keys = ssh2.utils.generateKeyPairSync('ed25519', { comment: `sealimg-relay-${id}` });
    const dir = `${RELAY_ROOT}/${id}`;
    // The forced command takes only a batch number; anything else gets nothing.
    const forced = `case $SSH_ORIGINAL_COMMAND in [0-9]|[0-9][0-9]|[0-9][0-9][0-9]) exec cat ${dir}/$SSH_ORIGINAL_COMMAND.tar;; esac; exit 1`;
    const line = `restrict,from="${targets.map((t) => t.ip).join(',')}",command="${forced}" ${keys.public.trim()}`;
    const install = authorizeScript(dir, line);
    await master0.exec(install, {
      step: 'distribute',
      label: 'authorise the relay key on master0',
      signal,
    });
    const blob = master0.hostKey;
    const knownHost = `${knownHostName(from.ip, from.port)} ${hostKeyType(blob)} ${blob.toString('base64')}`;
    return new Relay(master0, from, id, keys.private, knownHost);
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
    const keyDir = `${RELAY_ROOT}/${this.id}.client`;
    const K = shellQuote(keyDir);
    await session.exec(`command -v ssh >/dev/null || { echo 'no ssh client' >&2; exit 1; }; umask 077 && mkdir -p ${K} && cat > ${K}/key && printf '%s\\n' ${shellQuote(this.knownHost)} > ${K}/known_hosts`, {
      stdin: this.privateKey,
      step: 'distribute',
      label: 'prepare the relay from master0',
      signal,
    });
    try {
      const ssh = [
        // Errors only (not -q): why a fetch failed is in the message, not lost.
        'ssh -o LogLevel=ERROR -i key -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=known_hosts -o GlobalKnownHostsFile=/dev/null',
        '-o StrictHostKeyChecking=yes -o ConnectTimeout=15 -o ServerAliveInterval=15 -o Compression=no',
        // AES-GCM is the cheapest cipher where the CPU has AES instructions; the others stay as fallbacks.
        '-c aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr',
        `-p ${this.from.port} root@${this.from.ip}`,
      ].join(' ');
      for (let n = 0; ; n++) {
        const b = await this.next(n);
        if (!b) break;
        // ssh runs in the key dir (relative paths), the receive command in a subshell that changes to the target.
        const cmd = `cd ${K} || exit 1; ${ssh} ${n} </dev/null | ( ${receiveCommand(remoteDir, b.tmp)}\n)`;
        const label = `relay batch ${n} from master0 ${this.from.name} into ${remoteDir}`;
        // One more try after a pause: a failed fetch leaves nothing behind (receiveCommand), and a
        // connection refused while master0 is busy is worth a second look before the direct upload.
        await session.exec(cmd, { step: 'distribute', label, signal }).catch(async () => {
          await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
          return session.exec(cmd, { step: 'distribute', label, signal });
        });
        await recordSent(statePath, remoteDir, b.files);
        out.files += b.files.length;
        out.bytes += b.bytes;
      }
    } finally {
      await session.exec(`rm -rf -- ${K}; rmdir ${RELAY_ROOT} 2>/dev/null; true`, { step: 'distribute', label: 'remove the relay key', allowFailure: true, timeoutMs: 20_000 }).catch(() => undefined);
    }
    return out;
  }

  /** Removes the key line and the kept streams from master0. */
  async close(): Promise<void> {
    const tag = shellQuote(`sealimg-relay-${this.id}`);
    await this.master0.exec(
      `f=~/.ssh/authorized_keys; if [ -f "$f" ]; then grep -v -F -e ${tag} "$f" > "$f.sealimg-tmp"; chmod 600 "$f.sealimg-tmp" && mv -f "$f.sealimg-tmp" "$f"; fi; rm -rf -- ${shellQuote(`${RELAY_ROOT}/${this.id}`)}; rmdir ${RELAY_ROOT} 2>/dev/null; true`,
      { step: 'distribute', label: 'remove the relay key and streams from master0', timeoutMs: 30_000 },
    );
  }
}
