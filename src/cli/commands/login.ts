/**
 * sealimg login: check a user and password against a registry, then save them
 * (an auth file written 0600, or the credential helper the file names).
 * The password is read from stdin or a prompt; `-p` works but warns, since
 * the process list shows it (as docker warns).
 */
import { hostOfKey } from '../../auth/credentials.js';
import { saveCredentials } from '../../auth/authfile.js';
import { RegistryClient } from '../../content/registry-client.js';
import { SealimgError } from '../../errors.js';
import { needArgs, type Command, type Context } from '../command.js';
import { registryOptions } from '../registry-flags.js';
import { readPassword, readStdin } from '../prompt.js';

const command: Command = {
  summary: 'Save credentials for a registry',
  usage: `Usage: sealimg login [FLAGS] REGISTRY

Checks the credentials against REGISTRY (host[:port]) and saves them.

Flags:
  -u, --username USER   user name (asked for on a terminal when absent)
  -p, --password PASS   password (insecure: other users can see it; prefer --password-stdin)
      --password-stdin  read the password from stdin
      --authfile FILE   where to save (default: $REGISTRY_AUTH_FILE, else
                        $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json)
      --plain-http      talk http, not https
      --tls-verify=false  do not check the registry's certificate
      --ca-file FILE    also trust the CA certificates (PEM) in FILE`,
  options: {
    username: { type: 'string', short: 'u' },
    password: { type: 'string', short: 'p' },
    'password-stdin': { type: 'boolean' },
    authfile: { type: 'string' },
    'plain-http': { type: 'boolean' },
    'tls-verify': { type: 'string' },
    'ca-file': { type: 'string' },
  },
  async run(ctx, flags, args) {
    needArgs('login', args, 1, 1, 'one REGISTRY');
    const host = hostOfKey(args[0]!);
    const username = (flags.username as string | undefined) ?? (await askUser(ctx));
    const password = await passwordFrom(ctx, flags);
    if (password === '') throw new SealimgError('USAGE', 'login: the password is empty');
    const creds = { username, password };
    const opts = { ...registryOptions(flags, ctx.env), credentials: creds };
    const client = await RegistryClient.open(host, opts);
    try {
      await client.ping(ctx.signal);
    } finally {
      await client.close();
    }
    const where = await saveCredentials(host, creds, { authFile: opts.authFile, env: ctx.env });
    ctx.stdout.write(`Login Succeeded (saved in ${where})\n`);
  },
};
export default command;

async function askUser(ctx: Context): Promise<string> {
  const stdin = ctx.stdin as NodeJS.ReadStream;
  if (!stdin.isTTY) throw new SealimgError('USAGE', 'login: give the user name with -u USER');
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: stdin, output: ctx.stderr });
  try {
    const name = (await rl.question('Username: ')).trim();
    if (name === '') throw new SealimgError('USAGE', 'login: the user name is empty');
    return name;
  } finally {
    rl.close();
  }
}

async function passwordFrom(ctx: Context, flags: Record<string, unknown>): Promise<string> {
  const given = flags.password as string | undefined;
  if (given !== undefined && flags['password-stdin']) throw new SealimgError('USAGE', 'login: use --password or --password-stdin, not both');
  if (given !== undefined) {
    ctx.stderr.write('WARNING! Using --password via the command line is insecure. Use --password-stdin.\n');
    return given;
  }
  if (flags['password-stdin']) return (await readStdin(ctx.stdin)).replace(/\r?\n$/, '');
  return readPassword(ctx.stdin as NodeJS.ReadStream, ctx.stderr);
}
