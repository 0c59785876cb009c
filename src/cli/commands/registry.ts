/**
 * sealimg registry: run the embedded OCI registry (registry/), and the
 * maintenance around it. Parses flags and prints; the work is in registry/.
 */
import { defaultRoot } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import type { RequestLog } from '../../../registry/handler.js';
import { needArgs, type Command, type Context } from '../command.js';
import { registryOptions } from '../registry-flags.js';
import { TRANSFER_HELP, TRANSFER_OPTIONS, parseConcurrency } from '../transfer.js';

// sync mirrors images whole: picking one platform out of an index would retag it and never match again.
const { platform: _platform, ...SYNC_TRANSFER_OPTIONS } = TRANSFER_OPTIONS;
const SYNC_TRANSFER_HELP = TRANSFER_HELP.split('\n').filter((l) => !l.includes('--platform')).join('\n');

type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Level[] = ['debug', 'info', 'warn', 'error'];

/**
 * `--root` is a global flag (the local store); for the registry it names the
 * storage directory. Without it the registry keeps its own directory beside
 * the local store, never inside it.
 */
export function registryRoot(ctx: Context): string {
  const local = defaultRoot(ctx.env);
  return ctx.root !== local ? ctx.root : `${local.replace(/\/+$/, '')}-registry`;
}

/** One line per request; what is shown depends on the level. */
export function formatRequest(e: RequestLog, level: Level): string | undefined {
  const severity: Level = e.status >= 500 ? 'error' : e.status >= 400 ? 'warn' : 'info';
  if (LEVELS.indexOf(severity) < LEVELS.indexOf(level)) return undefined;
  const who = e.user ? ` user=${e.user}` : '';
  const why = e.error && (level === 'debug' || e.status >= 500) ? ` ${e.error}` : e.error ? ` ${e.error.split(':')[0]}` : '';
  return `${new Date().toISOString()} ${e.method} ${e.path} ${e.status} ${e.bytes}B ${e.ms}ms${who}${why}`;
}

const USAGE = `Usage: sealimg registry serve [FLAGS]
       sealimg registry gc [--dry-run] [--delete-untagged] [--grace DURATION]
       sealimg registry sync [FLAGS] SOURCE TARGET

Runs an OCI registry (distribution-spec v1.1) over a directory in the CNCF
registry's storage layout, so docker-registry can serve the same directory.

Flags:
      --addr HOST:PORT     where to listen (default :5000, every interface; port 0 picks one)
      --root DIR           (global flag) the storage directory
                           (default: the local store's path with -registry appended)
      --read-only          serve pulls only; pushes and deletes get 405
      --htpasswd FILE      require HTTP Basic auth; FILE from 'htpasswd -B'
      --token-realm URL    require bearer tokens from the token service at URL, checked
      --token-service S    for audience S, issuer I and signed by the key (PEM public key
      --token-issuer I     or certificate) in FILE; a token's access claim must grant
      --token-key FILE     pull/push/delete on the repository (as the CNCF registry's auth.token)
      --tls-cert FILE      serve HTTPS with this certificate (PEM) ...
      --tls-key FILE       ... and this key
      --log-level LEVEL    debug, info (a line per request, default), warn, error
      --proxy URL          pull-through mirror of the registry at URL; repeat as
      --proxy HOST=URL     to mirror several, by registry host (?ns=HOST or /v2/HOST/...)
      --proxy-tag-ttl D    re-check mirrored tags upstream after D (default 5m)

gc deletes blobs no manifest reaches (mark and sweep); safe beside a running
server: blobs younger than the grace period (default 1h) are spared.
      --dry-run            list what would go, delete nothing
      --delete-untagged    also remove manifests no tag (or kept subject) reaches
      --grace DURATION     spare unreferenced blobs younger than this (90s, 30m, 2h)

sync copies every repository and tag of SOURCE to TARGET, skipping what TARGET
has, going on past failures (listed at the end; exit code 1). SOURCE and TARGET
are a registry HOST[:PORT] (docker://HOST also) or distribution:DIR (a directory
in the CNCF layout, e.g. a cluster image's registry/).
      --include PATTERN    only repositories (or REPO:TAG with a colon) matching; repeatable;
                           * within a path component, ** across
      --exclude PATTERN    leave these out; repeatable
${SYNC_TRANSFER_HELP}`;

/** --token-realm, --token-service, --token-issuer, --token-key: all four or none. */
function tokenOptions(flags: Record<string, unknown>): { realm: string; service: string; issuer: string; keyFile: string } | undefined {
  const names = ['token-realm', 'token-service', 'token-issuer', 'token-key'] as const;
  const given = names.filter((n) => flags[n] !== undefined);
  if (given.length === 0) return undefined;
  if (given.length !== names.length) {
    throw new SealimgError('USAGE', `token auth needs ${names.map((n) => `--${n}`).join(', ')}; missing ${names.filter((n) => !given.includes(n)).map((n) => `--${n}`).join(', ')}`);
  }
  return { realm: flags['token-realm'] as string, service: flags['token-service'] as string, issuer: flags['token-issuer'] as string, keyFile: flags['token-key'] as string };
}

async function serve(ctx: Context, flags: Record<string, unknown>): Promise<number> {
  const level = (flags['log-level'] as string | undefined) ?? 'info';
  if (!LEVELS.includes(level as Level)) throw new SealimgError('USAGE', `--log-level "${level}" must be one of ${LEVELS.join(', ')}`);
  const { startRegistry } = await import('../../../registry/server.js');
  const root = registryRoot(ctx);
  const server = await startRegistry({
    addr: (flags.addr as string | undefined) ?? ':5000',
    root,
    readOnly: Boolean(flags['read-only']),
    htpasswd: flags.htpasswd as string | undefined,
    tlsCert: flags['tls-cert'] as string | undefined,
    tlsKey: flags['tls-key'] as string | undefined,
    token: tokenOptions(flags),
    proxy: flags.proxy as string[] | undefined,
    proxyTagTtlMs: flags['proxy-tag-ttl'] === undefined ? undefined : parseDuration(flags['proxy-tag-ttl'] as string, '--proxy-tag-ttl'),
    warn: (m) => ctx.stderr.write(`${new Date().toISOString()} warning: ${m}\n`),
    log: (e) => {
      const line = formatRequest(e, level as Level);
      if (line) ctx.stderr.write(`${line}\n`);
    },
  });
  const proxies = (flags.proxy as string[] | undefined) ?? [];
  const extras = [flags['read-only'] ? 'read-only' : '', flags.htpasswd ? 'htpasswd auth' : '', flags['token-realm'] ? 'token auth' : '', proxies.length ? `mirror of ${proxies.join(', ')}` : ''].filter(Boolean);
  ctx.stdout.write(`sealimg registry serving ${root} at ${server.url}${extras.length ? ` (${extras.join(', ')})` : ''}\n`);
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  await server.close();
  ctx.stderr.write('sealimg registry stopped\n');
  return 0;
}

/** `90`, `90s`, `30m`, `2h` to milliseconds. */
export function parseDuration(s: string, flag: string): number {
  const m = /^(\d+)(s|m|h)?$/.exec(s.trim());
  if (!m) throw new SealimgError('USAGE', `${flag} "${s}" must be a number of seconds, or end in s, m or h (e.g. 30m)`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 's' | 'm' | 'h'];
}

async function gc(ctx: Context, flags: Record<string, unknown>): Promise<number> {
  const { DistributionStorage } = await import('../../content/distribution/storage.js');
  const { collectGarbage } = await import('../../../registry/gc.js');
  const root = registryRoot(ctx);
  const storage = await DistributionStorage.open(root);
  const dryRun = Boolean(flags['dry-run']);
  const report = await collectGarbage(storage, {
    dryRun,
    deleteUntagged: Boolean(flags['delete-untagged']),
    graceMs: flags.grace === undefined ? undefined : parseDuration(flags.grace as string, '--grace'),
    signal: ctx.signal,
  });
  const verb = dryRun ? 'would delete' : 'deleted';
  for (const m of report.manifests) ctx.stdout.write(`${verb} manifest ${m.repository}@${m.digest}\n`);
  for (const b of report.blobs) ctx.stdout.write(`${verb} blob ${b.digest} (${b.size} bytes)\n`);
  ctx.stdout.write(
    `${root}: ${verb} ${report.blobs.length} blob(s), ${report.bytes} bytes, ${report.manifests.length} manifest(s)` +
      `${report.uploads ? `, ${report.uploads} abandoned upload(s)` : ''}` +
      `${report.spared ? `; spared ${report.spared} unreferenced blob(s) younger than the grace period` : ''}\n`,
  );
  return 0;
}

async function syncCommand(ctx: Context, flags: Record<string, unknown>, from: string, to: string): Promise<number> {
  const { openEndpoint, sync } = await import('../../../registry/sync.js');
  const opts = registryOptions(flags, ctx.env);
  const src = await openEndpoint(from, 'source', opts);
  try {
    const dst = await openEndpoint(to, 'target', opts);
    try {
      const quiet = Boolean(flags.quiet);
      const report = await sync(src, dst, {
        include: flags.include as string[] | undefined,
        exclude: flags.exclude as string[] | undefined,
        concurrency: parseConcurrency(flags.concurrency as string | undefined),
        signal: ctx.signal,
        onImage: (e) => {
          if (e.result === 'failed') ctx.stderr.write(`failed  ${e.repo}${e.tag ? `:${e.tag}` : ''}: ${e.error}\n`);
          else if (!quiet) ctx.stderr.write(`${e.result.padEnd(7)} ${e.repo}:${e.tag} ${e.digest}\n`);
        },
      });
      ctx.stdout.write(`${from} -> ${to}: ${report.copied} copied, ${report.skipped} already there, ${report.failed.length} failed\n`);
      for (const f of report.failed) ctx.stdout.write(`  failed: ${f.ref}: ${f.error}\n`);
      return report.failed.length > 0 ? 1 : 0;
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

const command: Command = {
  summary: 'Serve, sync and garbage-collect an OCI registry',
  usage: USAGE,
  options: {
    addr: { type: 'string' },
    'read-only': { type: 'boolean' },
    htpasswd: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'log-level': { type: 'string' },
    proxy: { type: 'string', multiple: true },
    'token-realm': { type: 'string' },
    'token-service': { type: 'string' },
    'token-issuer': { type: 'string' },
    'token-key': { type: 'string' },
    'proxy-tag-ttl': { type: 'string' },
    'dry-run': { type: 'boolean' },
    'delete-untagged': { type: 'boolean' },
    grace: { type: 'string' },
    include: { type: 'string', multiple: true },
    exclude: { type: 'string', multiple: true },
    ...SYNC_TRANSFER_OPTIONS,
  },
  async run(ctx, flags, args) {
    const sub = args[0];
    if (sub === 'serve') {
      needArgs('registry serve', args.slice(1), 0, 0, 'no arguments');
      return serve(ctx, flags);
    }
    if (sub === 'sync') {
      needArgs('registry sync', args.slice(1), 2, 2, 'SOURCE and TARGET');
      return syncCommand(ctx, flags, args[1]!, args[2]!);
    }
    if (sub === 'gc') {
      needArgs('registry gc', args.slice(1), 0, 0, 'no arguments');
      return gc(ctx, flags);
    }
    throw new SealimgError('USAGE', sub === undefined ? 'registry needs a subcommand' : `unknown registry subcommand "${sub}"`, {
      hint: "see 'sealimg registry --help'",
    });
  },
};
export default command;

