/**
 * The runner's SSH layer (over ssh2): a pool of connections per host, host
 * keys checked against a known_hosts file (trust on first use), commands run
 * with their output captured and logged per host, sudo for non-root users.
 *
 * Every failure is a SealimgError naming the host: SSH_FAILED (cannot connect,
 * host key changed, connection lost), AUTH_FAILED (credentials rejected),
 * HOST_STEP_FAILED (a command exited non-zero; its output is in the error).
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { Readable, type Duplex, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ssh2, { type ClientChannel, type ConnectConfig } from 'ssh2';
import { SealimgError } from '../errors.js';
import { shellQuote } from './shell.js';
import { appendKnownHost, checkHostKey, fingerprint, knownHostName, readKnownHosts } from './known-hosts.js';

// ssh2 is CommonJS; only some of its exports are visible as ESM named exports.
const { Client, utils: ssh2utils } = ssh2;
type Client = InstanceType<typeof Client>;

/** One host as the Clusterfile describes it. */
export interface SshHost {
  address: string;
  port?: number;
  user?: string;
  password?: string;
  /** The private key's text (OpenSSH or PEM). */
  privateKey?: string | Buffer;
  passphrase?: string;
}

export interface SshOptions {
  /** The known_hosts file (e.g. ~/.sealimg/known_hosts). */
  knownHostsFile: string;
  /** Accept any host key and record nothing (--insecure-skip-host-key-check). */
  insecureSkipHostKeyCheck?: boolean;
  /** Told once per host when a new key is trusted (the CLI prints it). */
  onNewHostKey?: (host: string, fingerprint: string) => void;
  /** Where each host's command log goes (<dir>/<host>.log); none when unset. */
  logDir?: string;
  /** Handshake + authentication, and the TCP connect (default 20 s). */
  connectTimeoutMs?: number;
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
  maxConnectionsPerHost?: number;
  /** Below sshd's MaxSessions (10 by default). */
  channelsPerConnection?: number;
  /** Opens the TCP stream to a host (default: a plain connect). A jump host or a network namespace plugs in here. */
  dial?: (address: string, port: number, timeoutMs: number) => Promise<Duplex>;
}

export interface ExecOptions {
  /**
   * Bytes for the command's stdin; it gets EOF after them. A function writes them itself (upload.ts, to
   * know when each chunk has been taken) and its promise says when it is done, or why it failed.
   */
  stdin?: Readable | string | Buffer | ((channel: Writable) => Promise<void>);
  /** Run as root through sudo (default: whenever the user is not root). */
  sudo?: boolean;
  /** Exported for the command (quoted). Not written to the log, but visible in the host's process list while it runs. */
  env?: Record<string, string>;
  /** Return a non-zero exit instead of throwing HOST_STEP_FAILED. */
  allowFailure?: boolean;
  /** What errors and the log call this command (default: the command itself). */
  label?: string;
  /** Names the runner step in errors and the log ("distribute", "init hook"...). */
  step?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** How much of each stream the result keeps (the tail; default 1 MiB). The log keeps all. */
  maxOutputBytes?: number;
  /** Sees stdout as it comes, for a command that reports something before it ends (a server's port). */
  onStdout?: (chunk: Buffer) => void;
}

export interface ExecResult {
  code: number;
  signal?: string;
  stdout: string;
  stderr: string;
}

/** A command that exited non-zero on a host. */
export class HostCommandError extends SealimgError {
  constructor(
    readonly host: string,
    readonly command: string,
    readonly result: ExecResult,
    step?: string,
  ) {
    // The ends of both streams: tools put the reason on either one.
    const tail = (t: string) => (t.trim() ? t.trim().split('\n').slice(-12).join('\n') : '');
    const out = [tail(result.stderr), tail(result.stdout)].filter(Boolean).join('\n');
    const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.code}`;
    super('HOST_STEP_FAILED', `${host}: ${step ? `${step}: ` : ''}command ${how}: ${command}${out ? `\n${out}` : ''}`, {
      hint: `the full output is in the host's log`,
    });
  }
}

export { shellQuote } from './shell.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The environment variable that marks every process an exec started (see killTagged). */
const TAG_VAR = 'SEALIMG_EXEC';

function defaultDial(address: string, port: number, timeoutMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const sock = netConnect({ host: address, port });
    const timer = setTimeout(() => sock.destroy(Object.assign(new Error(`timed out after ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })), timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * Sends SIGKILL to a command's process group (sshd does killpg for a "signal"
 * request, RFC 4254 6.9). Without a pty, closing the channel alone would leave
 * the command running on the host. ssh2's public Channel.signal() only sends
 * while our side of the channel is writable, i.e. never once stdin got its EOF,
 * so this goes to the protocol object directly.
 */
function killChannel(channel: ClientChannel): void {
  const ch = channel as unknown as { outgoing?: { id: number; state: string }; _client?: { _protocol?: { signal(id: number, sig: string): void } } };
  try {
    if (ch.outgoing && (ch.outgoing.state === 'open' || ch.outgoing.state === 'eof')) ch._client?._protocol?.signal(ch.outgoing.id, 'KILL');
  } catch {
    // the connection is gone; nothing runs that we could stop
  }
}

/** A pooled connection found dead when a command tried to use it (the command never started). */
class DeadConnection extends Error {}

/** How a command ended, as the host said (exit-status or exit-signal). */
interface ExitStatus {
  code?: number;
  signal?: string;
}

/** One live ssh2 connection and how many channels it has open. */
interface Conn {
  client: Client;
  channels: number;
  closed: boolean;
}

/** Connections to many hosts; one `SshSession` per user@host:port. */
export class SshPool {
  private readonly sessions = new Map<string, SshSession>();
  private readonly logs = new Map<string, WriteStream>();
  /** Serialises known_hosts read-check-append, so two connections to one new host trust it once. */
  private knownHostsQueue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private logError?: Error;
  private commandIds = 0;

  constructor(readonly opts: SshOptions) {}

  /** The session for a host (made on first use; connections open lazily). */
  host(h: SshHost): SshSession {
    if (this.closed) throw new SealimgError('SSH_FAILED', 'the SSH pool is closed');
    const key = `${h.user ?? 'root'}@${h.address}:${h.port ?? 22}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = new SshSession(this, h);
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Closes every connection and log. */
  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
    await Promise.all([...this.logs.values()].map((w) => new Promise<void>((r) => w.end(r))));
    this.logs.clear();
  }

  /** @internal The host's log stream, or undefined when logging is off. */
  log(host: string): WriteStream | undefined {
    if (!this.opts.logDir) return undefined;
    if (this.logError) throw new SealimgError('IO', `cannot write the host log in ${this.opts.logDir}: ${this.logError.message}`, { cause: this.logError });
    let w = this.logs.get(host);
    if (!w) {
      mkdirSync(this.opts.logDir, { recursive: true, mode: 0o700 });
      // Commands' output may hold secrets of the cluster: the log is the user's alone.
      w = createWriteStream(join(this.opts.logDir, `${host.replace(/[^A-Za-z0-9._-]/g, '_')}.log`), { flags: 'a', mode: 0o600 });
      // A log that cannot be written stops the next command, rather than the process or the record.
      w.on('error', (e) => (this.logError ??= e));
      this.logs.set(host, w);
    }
    return w;
  }

  /** @internal Numbers commands per pool, so lines of two users on one host's log stay apart. */
  nextCommandId(): number {
    return ++this.commandIds;
  }

  /** @internal Host key check for ssh2's hostVerifier; resolves to an error message or undefined. */
  verifyHostKey(address: string, port: number, blob: Buffer): Promise<string | undefined> {
    const run = async (): Promise<string | undefined> => {
      if (this.opts.insecureSkipHostKeyCheck) return undefined;
      const file = this.opts.knownHostsFile;
      const check = checkHostKey(await readKnownHosts(file), address, port, blob);
      const name = knownHostName(address, port);
      switch (check.status) {
        case 'match':
          return undefined;
        case 'unknown':
          await appendKnownHost(file, address, port, blob);
          this.opts.onNewHostKey?.(name, fingerprint(blob));
          return undefined;
        case 'revoked':
          return `the host key of ${name} (${fingerprint(blob)}) is marked @revoked in ${file}`;
        case 'changed':
          return (
            `the host key of ${name} changed: it now shows ${fingerprint(blob)}, but ${file} has ${check.known.join(', ')}. ` +
            `Either the host was reinstalled or someone is in between`
          );
      }
    };
    const p = this.knownHostsQueue.then(run);
    this.knownHostsQueue = p.catch(() => undefined);
    return p;
  }
}

/** Commands and connections for one host. */
export class SshSession {
  readonly name: string;
  readonly user: string;
  readonly port: number;
  private readonly conns: Conn[] = [];
  private readonly waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private connecting = 0;
  private sudoMode?: Promise<'root' | 'nopasswd' | 'password'>;
  private tags = 0;
  private readonly tagBase = randomBytes(4).toString('hex');
  private parsedKey?: Buffer | string;

  constructor(
    private readonly pool: SshPool,
    readonly host: SshHost,
  ) {
    this.port = host.port ?? 22;
    this.user = host.user ?? 'root';
    this.name = this.port === 22 ? host.address : `${host.address}:${this.port}`;
  }

  /** Runs `command` with the user's shell; throws HostCommandError on a non-zero exit unless allowFailure. */
  async exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execTagged(command, opts, true);
  }

  private async execTagged(command: string, opts: ExecOptions, killable: boolean): Promise<ExecResult> {
    // Every process the command starts inherits this variable: how a timed-out command is found and stopped.
    const tag = `${this.tagBase}.${++this.tags}.`;
    const exports = [`export ${TAG_VAR}=${tag}`];
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (!ENV_NAME.test(k)) throw new SealimgError('USAGE', `${this.name}: invalid environment variable name ${JSON.stringify(k)}`);
      exports.push(`export ${k}=${shellQuote(v)}`);
    }
    const script = `${exports.join('; ')}; ${command}`;
    let wire = script;
    let stdinPrefix: Buffer | undefined;
    const sudo = opts.sudo ?? this.user !== 'root';
    if (sudo) {
      const mode = await this.sudo(opts);
      if (mode === 'nopasswd') wire = `sudo -n -- sh -c ${shellQuote(script)}`;
      if (mode === 'password') {
        // sudo reads the password from stdin one byte at a time up to the newline, so the rest of stdin stays the
        // command's. -k: always ask, even with cached credentials, or the password line would become the command's input.
        wire = `sudo -k -S -p '' -- sh -c ${shellQuote(script)}`;
        stdinPrefix = Buffer.from(`${this.host.password}\n`);
      }
    }
    const onInterrupt = killable ? () => this.killTagged(tag, sudo) : undefined;
    return this.run(wire, opts.label ?? command, opts, stdinPrefix, onInterrupt);
  }

  /** Kills every process on the host that carries `tag` (a command that timed out or was aborted). */
  private async killTagged(tag: string, sudo: boolean): Promise<void> {
    const killer = `for f in $(grep -l -a -s -F ${TAG_VAR}=${tag} /proc/[0-9]*/environ); do p=\${f#/proc/}; kill -9 "\${p%/environ}" 2>/dev/null; done; true`;
    await this.execTagged(killer, { sudo, timeoutMs: 3000, allowFailure: true, label: `stop what ${tag} started` }, false);
  }

  /** Closes this host's connections. */
  close(): void {
    for (const c of this.conns.splice(0)) {
      c.closed = true;
      c.client.end();
    }
    for (const w of this.waiters.splice(0)) w.reject(new SealimgError('SSH_FAILED', `${this.name}: connection closed`));
  }

  /** How this session becomes root: found once, by asking sudo. */
  private sudo(opts: ExecOptions): Promise<'root' | 'nopasswd' | 'password'> {
    if (this.user === 'root') return Promise.resolve('root');
    this.sudoMode ??= (async () => {
      const probe = await this.run('sudo -n true', 'sudo -n true', { ...opts, allowFailure: true, stdin: undefined });
      if (probe.code === 0) return 'nopasswd';
      if (this.host.password === undefined) {
        throw new SealimgError('AUTH_FAILED', `${this.name}: user ${this.user} needs a password for sudo, and none is configured: ${probe.stderr.trim()}`);
      }
      const check = await this.run(`sudo -k -S -p '' true`, 'sudo -k -S true', { ...opts, allowFailure: true, stdin: undefined }, Buffer.from(`${this.host.password}\n`));
      if (check.code !== 0) {
        throw new SealimgError('AUTH_FAILED', `${this.name}: sudo refused user ${this.user}: ${check.stderr.trim() || `exit code ${check.code}`}`, {
          hint: 'the user needs sudo rights for every command (a sudoers entry) and its password must be the SSH password',
        });
      }
      return 'password';
    })();
    this.sudoMode.catch(() => (this.sudoMode = undefined));
    return this.sudoMode;
  }

  /** Opens a channel, runs `wire` (the command as sent), captures and logs its output. */
  private async run(wire: string, shown: string, opts: ExecOptions, stdinPrefix?: Buffer, onInterrupt?: () => Promise<void>): Promise<ExecResult> {
    const id = this.pool.nextCommandId();
    const log = this.pool.log(this.name);
    const started = Date.now();
    log?.write(`--- #${id} ${new Date(started).toISOString()}${opts.step ? ` [${opts.step}]` : ''} ${this.user}: ${shown}\n`);
    try {
      const { conn, channel, exit } = await this.openChannel(wire);
      try {
        const result = await this.collect(channel, exit, id, opts, stdinPrefix, onInterrupt);
        log?.write(`--- #${id} ${result.signal ? `killed by ${result.signal}` : `exit ${result.code}`} after ${((Date.now() - started) / 1000).toFixed(2)} s\n`);
        if (result.code !== 0 && !opts.allowFailure) throw new HostCommandError(this.name, shown, result, opts.step);
        return result;
      } finally {
        this.release(conn);
      }
    } catch (e) {
      if (!(e instanceof HostCommandError)) log?.write(`--- #${id} failed: ${e instanceof Error ? e.message : String(e)}\n`);
      throw e;
    }
  }

  /**
   * A channel running `wire`. A pooled connection that died while idle (the
   * host rebooted, a keep-alive failed) is only found out here: the command
   * never started, so it is safe to drop that connection and try a fresh one.
   */
  private async openChannel(wire: string): Promise<{ conn: Conn; channel: ClientChannel; exit: ExitStatus }> {
    const timeoutMs = this.pool.opts.connectTimeoutMs ?? 20_000;
    for (let attempt = 1; ; attempt++) {
      const conn = await this.acquire();
      try {
        const { ch: channel, exit } = await new Promise<{ ch: ClientChannel; exit: ExitStatus }>((resolve, reject) => {
          // A connection whose peer vanished without a word (link down, power off) never answers: bounded.
          const timer = setTimeout(() => reject(new DeadConnection(`no answer to opening a channel within ${timeoutMs / 1000} s`)), timeoutMs);
          try {
            conn.client.exec(wire, (err, ch) => {
              clearTimeout(timer);
              if (!err) {
                // Now, not after an await: a quick command's exit status can arrive in the same read as the
                // reply that opened the channel, and an event emitted before anyone listens is gone.
                const exit: ExitStatus = {};
                ch.on('exit', (c: number | null, sig?: string) => {
                  if (typeof c === 'number') exit.code = c;
                  if (sig) exit.signal = sig;
                });
                return resolve({ ch, exit });
              }
              reject(/not connected|no response/i.test(err.message) ? new DeadConnection(err.message) : err);
            });
          } catch (e) {
            clearTimeout(timer);
            reject(new DeadConnection(e instanceof Error ? e.message : String(e))); // ssh2 throws "Not connected" synchronously
          }
        });
        return { conn, channel, exit };
      } catch (e) {
        this.release(conn);
        const dead = conn.closed || e instanceof DeadConnection;
        if (!dead || attempt >= 2) throw this.lost(e);
        this.drop(conn);
      }
    }
  }

  private drop(conn: Conn): void {
    conn.closed = true;
    const i = this.conns.indexOf(conn);
    if (i >= 0) this.conns.splice(i, 1);
    conn.client.end();
  }

  private collect(channel: ClientChannel, exit: ExitStatus, id: number, opts: ExecOptions, stdinPrefix?: Buffer, onInterrupt?: () => Promise<void>): Promise<ExecResult> {
    const limit = opts.maxOutputBytes ?? 1 << 20;
    const log = this.pool.log(this.name);
    const capture = (mark: string) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let partial = '';
      return {
        add(b: Buffer) {
          chunks.push(b);
          size += b.length;
          while (size - chunks[0].length >= limit) size -= chunks.shift()!.length;
          if (log) {
            // Whole lines with the command's number, so concurrent commands stay readable.
            const lines = (partial + b.toString('utf8')).split('\n');
            partial = lines.pop()!;
            for (const l of lines) log.write(`#${id}${mark} ${l}\n`);
          }
        },
        text(): string {
          if (partial && log) log.write(`#${id}${mark} ${partial}\n`);
          partial = '';
          const all = Buffer.concat(chunks);
          return all.subarray(Math.max(0, all.length - limit)).toString('utf8');
        },
      };
    };
    const out = capture(' |');
    const err = capture(' !');
    return new Promise<ExecResult>((resolve, reject) => {
      let stdinError: unknown;
      let failure: unknown;
      let settled = false;
      const closed = new Promise<void>((r) => channel.once('close', r));
      const fail = (e: unknown) => {
        if (failure) return;
        failure = e;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        // sshd kills the process group on a signal request, but only for non-root logins (root sessions run
        // without the privilege-separated child that handles it); the tagged kill covers every case.
        killChannel(channel);
        const stopped = onInterrupt ? onInterrupt().catch(() => undefined) : Promise.resolve();
        // A hung host may never answer: the caller waits a bounded time, not for the host.
        const bound = new Promise<void>((r) => setTimeout(r, 5000).unref());
        void Promise.race([Promise.all([stopped, closed]), bound]).then(() => {
          channel.close();
          settled = true;
          reject(failure);
        });
      };
      const timer = opts.timeoutMs
        ? setTimeout(() => fail(new SealimgError('HOST_STEP_FAILED', `${this.name}: ${opts.step ? `${opts.step}: ` : ''}command timed out after ${opts.timeoutMs! / 1000} s`)), opts.timeoutMs)
        : undefined;
      const onAbort = () => fail(new SealimgError('ABORTED', `${this.name}: aborted`));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.signal?.aborted) onAbort();
      channel.on('data', (b: Buffer) => {
        out.add(b);
        opts.onStdout?.(b);
      });
      channel.stderr.on('data', (b: Buffer) => err.add(b));
      channel.on('close', () => {
        if (settled || failure) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        const result: ExecResult = { code: exit.code ?? -1, stdout: out.text(), stderr: err.text() };
        if (exit.signal) result.signal = exit.signal;
        if (exit.code === undefined && !exit.signal) {
          return reject(new SealimgError('SSH_FAILED', `${this.name}: the connection was lost while a command ran`, { cause: stdinError }));
        }
        // A local read error while feeding stdin leaves the command with a truncated input: never a success.
        if (stdinError && result.code === 0) return reject(stdinError);
        resolve(result);
      });
      const stdin = opts.stdin;
      const source = stdin === undefined || typeof stdin === 'function' ? undefined : typeof stdin === 'string' || Buffer.isBuffer(stdin) ? Readable.from([Buffer.from(stdin)]) : stdin;
      if (stdinPrefix) channel.write(stdinPrefix);
      if (typeof stdin === 'function')
        stdin(channel).then(
          () => channel.end(),
          (e: unknown) => {
            stdinError = e;
            channel.end();
          },
        );
      else if (!source) channel.end();
      else
        pipeline(source, channel).catch((e) => {
          // The command may have exited early (its exit code tells why); a local error is kept for the result.
          stdinError = e;
          channel.end();
        });
    });
  }

  private lost(e: unknown): SealimgError {
    return new SealimgError('SSH_FAILED', `${this.name}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }

  /** A connection with a free channel: an open one, a new one (up to the limit), or the next one released. */
  private async acquire(): Promise<Conn> {
    const maxConns = this.pool.opts.maxConnectionsPerHost ?? 2;
    const perConn = this.pool.opts.channelsPerConnection ?? 8;
    for (let round = 0; ; round++) {
      const free = this.conns.find((c) => !c.closed && c.channels < perConn);
      if (free) {
        free.channels++;
        return free;
      }
      if (this.conns.length + this.connecting < maxConns) {
        this.connecting++;
        try {
          const conn = await this.connect();
          this.conns.push(conn);
          conn.channels++;
          return conn;
        } catch (e) {
          // With no live connection, whoever waits for this host fails the same way, instead of each trying (and timing out) in turn.
          if (this.conns.length === 0) for (const w of this.waiters.splice(0)) w.reject(e);
          throw e;
        } finally {
          this.connecting--;
          this.wake();
        }
      }
      await new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    }
  }

  private release(conn: Conn): void {
    conn.channels--;
    this.wake();
  }

  private wake(): void {
    this.waiters.shift()?.resolve();
  }

  private credentials(): Pick<ConnectConfig, 'password' | 'privateKey' | 'passphrase'> {
    const cfg: Pick<ConnectConfig, 'password' | 'privateKey' | 'passphrase'> = {};
    if (this.host.privateKey !== undefined) {
      if (this.parsedKey === undefined) {
        const parsed = ssh2utils.parseKey(this.host.privateKey, this.host.passphrase);
        if (parsed instanceof Error) {
          throw new SealimgError('AUTH_FAILED', `${this.name}: cannot use the private key: ${parsed.message}`, {
            hint: this.host.passphrase === undefined ? 'if the key is encrypted, give its passphrase' : 'check the key file and its passphrase',
          });
        }
        this.parsedKey = this.host.privateKey;
      }
      cfg.privateKey = this.parsedKey;
      if (this.host.passphrase !== undefined) cfg.passphrase = this.host.passphrase;
    }
    if (this.host.password !== undefined) cfg.password = this.host.password;
    if (cfg.password === undefined && cfg.privateKey === undefined) {
      throw new SealimgError('AUTH_FAILED', `${this.name}: no password or private key configured for user ${this.user}`);
    }
    return cfg;
  }

  private async connect(): Promise<Conn> {
    const o = this.pool.opts;
    const timeout = o.connectTimeoutMs ?? 20_000;
    const creds = this.credentials();
    let sock: Duplex;
    try {
      sock = await (o.dial ?? defaultDial)(this.host.address, this.port, timeout);
    } catch (e) {
      const code = (e as { code?: string }).code;
      const why = code === 'ECONNREFUSED' ? 'connection refused' : code === 'EHOSTUNREACH' || code === 'ENETUNREACH' ? 'no route to host' : e instanceof Error ? e.message : String(e);
      throw new SealimgError('SSH_FAILED', `${this.name}: cannot connect to port ${this.port}: ${why}`, { cause: e, hint: 'is the host up and is sshd listening on that port?' });
    }
    const client = new Client();
    let hostKeyProblem: string | undefined;
    return new Promise<Conn>((resolve, reject) => {
      const conn: Conn = { client, channels: 0, closed: false };
      let ready = false;
      client.once('ready', () => {
        ready = true;
        resolve(conn);
      });
      client.on('error', (e: Error & { level?: string }) => {
        if (ready) return; // a live connection's error ends in 'close', handled below
        if (hostKeyProblem) reject(new SealimgError('SSH_FAILED', `${this.name}: ${hostKeyProblem}`, { hint: `if the change is expected, remove the old key (ssh-keygen -R '${knownHostName(this.host.address, this.port)}' -f ${o.knownHostsFile}) or use --insecure-skip-host-key-check` }));
        else if (e.level === 'client-authentication') {
          const tried = [creds.privateKey !== undefined ? 'key' : '', creds.password !== undefined ? 'password' : ''].filter(Boolean).join(' and ');
          reject(new SealimgError('AUTH_FAILED', `${this.name}: user ${this.user} was rejected (tried ${tried})`, { hint: 'check the user, password or key for this host' }));
        } else if (e.level === 'client-timeout') reject(new SealimgError('SSH_FAILED', `${this.name}: no SSH handshake within ${timeout / 1000} s`));
        else reject(this.lost(e));
        client.end();
      });
      client.on('close', () => {
        conn.closed = true;
        const i = this.conns.indexOf(conn);
        if (i >= 0) this.conns.splice(i, 1);
        if (!ready) reject(new SealimgError('SSH_FAILED', `${this.name}: the connection closed during the SSH handshake`));
        this.wake();
      });
      client.connect({
        sock: sock as ConnectConfig['sock'],
        username: this.user,
        ...creds,
        readyTimeout: timeout,
        keepaliveInterval: o.keepaliveIntervalMs ?? 15_000,
        keepaliveCountMax: o.keepaliveCountMax ?? 3,
        hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
          this.pool.verifyHostKey(this.host.address, this.port, key).then(
            (problem) => {
              hostKeyProblem = problem;
              verify(problem === undefined);
            },
            (e) => {
              hostKeyProblem = `cannot check the host key against ${o.knownHostsFile}: ${e instanceof Error ? e.message : String(e)}`;
              verify(false);
            },
          );
        },
      } as ConnectConfig);
    });
  }
}

/** A random id for temp names on hosts. */
export function randomId(): string {
  return randomBytes(6).toString('hex');
}
