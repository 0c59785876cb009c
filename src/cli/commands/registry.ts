/**
 * sealimg registry: run the embedded OCI registry (registry/), and the
 * maintenance around it. Parses flags and prints; the work is in registry/.
 */
import { defaultRoot } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import type { RequestLog } from '../../../registry/handler.js';
import { needArgs, type Command, type Context } from '../command.js';

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

Runs an OCI registry (distribution-spec v1.1) over a directory in the CNCF
registry's storage layout, so docker-registry can serve the same directory.

Flags:
      --addr HOST:PORT     where to listen (default :5000, every interface; port 0 picks one)
      --root DIR           (global flag) the storage directory
                           (default: the local store's path with -registry appended)
      --read-only          serve pulls only; pushes and deletes get 405
      --htpasswd FILE      require HTTP Basic auth; FILE from 'htpasswd -B'
      --tls-cert FILE      serve HTTPS with this certificate (PEM) ...
      --tls-key FILE       ... and this key
      --log-level LEVEL    debug, info (a line per request, default), warn, error`;

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
    log: (e) => {
      const line = formatRequest(e, level as Level);
      if (line) ctx.stderr.write(`${line}\n`);
    },
  });
  const extras = [flags['read-only'] ? 'read-only' : '', flags.htpasswd ? 'htpasswd auth' : ''].filter(Boolean);
  ctx.stdout.write(`sealimg registry serving ${root} at ${server.url}${extras.length ? ` (${extras.join(', ')})` : ''}\n`);
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  await server.close();
  ctx.stderr.write('sealimg registry stopped\n');
  return 0;
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
  },
  async run(ctx, flags, args) {
    const sub = args[0];
    if (sub === 'serve') {
      needArgs('registry serve', args.slice(1), 0, 0, 'no arguments');
      return serve(ctx, flags);
    }
    throw new SealimgError('USAGE', sub === undefined ? 'registry needs a subcommand' : `unknown registry subcommand "${sub}"`, {
      hint: "see 'sealimg registry --help'",
    });
  },
};
export default command;

