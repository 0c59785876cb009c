#!/usr/bin/env node
/**
 * The sealimg command line: global flags, the command table, and the one place
 * that turns an error into a line, a hint and an exit code. Commands load lazily.
 */
import { SealimgError, isSealimgError } from '../errors.js';
import { defaultRoot } from '../content/local.js';
import { parseFlags, type Command, type Context } from './command.js';

interface Entry {
  summary: string;
  load: () => Promise<{ default: Command }>;
}

/** Every command, in the order `sealimg --help` lists them. */
const COMMANDS: Record<string, Entry> = {
  build: { summary: 'Build a cluster image from a Sealfile/Kubefile', load: () => import('./commands/build.js') },
  merge: { summary: 'Merge several cluster images into one', load: () => import('./commands/merge.js') },
  images: { summary: 'List images in the local store', load: () => import('./commands/images.js') },
  inspect: { summary: 'Show an image\'s digest, manifest and config as JSON', load: () => import('./commands/inspect.js') },
  tag: { summary: 'Give an image in the local store another name', load: () => import('./commands/tag.js') },
  rmi: { summary: 'Remove images from the local store', load: () => import('./commands/rmi.js') },
  prune: { summary: 'Remove blobs and leftovers no image in the local store uses', load: () => import('./commands/prune.js') },
  pull: { summary: 'Copy an image into the local store', load: () => import('./commands/pull.js') },
  push: { summary: 'Copy an image from the local store to a registry or layout', load: () => import('./commands/push.js') },
  copy: { summary: 'Copy an image between any two locations', load: () => import('./commands/copy.js') },
  login: { summary: 'Save credentials for a registry', load: () => import('./commands/login.js') },
  logout: { summary: 'Remove saved credentials for a registry', load: () => import('./commands/logout.js') },
  save: { summary: 'Write images to a tarball for offline sites', load: () => import('./commands/save.js') },
  load: { summary: 'Read images from a tarball into the local store', load: () => import('./commands/load.js') },
  registry: { summary: 'Serve, sync and garbage-collect an OCI registry', load: () => import('./commands/registry.js') },
  run: { summary: 'Install cluster images onto hosts over SSH', load: () => import('./commands/run.js') },
  add: { summary: 'Add masters or nodes to a cluster', load: () => import('./commands/add.js') },
  delete: { summary: 'Remove masters or nodes from a cluster', load: () => import('./commands/delete.js') },
  reset: { summary: 'Undo a cluster installation on every host', load: () => import('./commands/reset.js') },
  cert: { summary: 'Add names to the apiserver certificate', load: () => import('./commands/cert.js') },
  exec: { summary: 'Run a command on cluster hosts', load: () => import('./commands/exec.js') },
  scp: { summary: 'Copy a file to cluster hosts', load: () => import('./commands/scp.js') },
  status: { summary: 'Show a cluster\'s hosts and state', load: () => import('./commands/status.js') },
  version: { summary: 'Print the sealimg version', load: () => import('./commands/version.js') },
};

const GLOBAL_HELP = `Usage: sealimg [--root DIR] [--debug] COMMAND [ARGS...]

sealimg builds, moves, serves and installs OCI cluster images.

Global flags:
  --root DIR   local image store (default $SEALIMG_ROOT, /var/lib/sealimg as root, ~/.local/share/sealimg)
  --debug      print stack traces and details on errors
  -h, --help   this help; 'sealimg COMMAND --help' for a command

Commands:
${Object.entries(COMMANDS)
  .map(([name, e]) => `  ${name.padEnd(9)} ${e.summary}`)
  .join('\n')}
`;

/** Splits the global flags (which may come before the command) from the rest. */
function splitGlobals(argv: string[]): { root?: string; debug: boolean; help: boolean; rest: string[] } {
  let root: string | undefined;
  let debug = false;
  let help = false;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (a === '--debug') debug = true;
    else if (a === '--root') {
      root = argv[++i];
      if (root === undefined) throw new SealimgError('USAGE', '--root needs a directory');
    } else if (a.startsWith('--root=')) root = a.slice('--root='.length);
    else if ((a === '--help' || a === '-h') && rest.length === 0) help = true;
    else rest.push(a);
  }
  return { root, debug, help, rest };
}

export async function main(argv: string[]): Promise<number> {
  const controller = new AbortController();
  const stop = () => controller.abort(new SealimgError('ABORTED', 'interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let debug = argv.includes('--debug');
  try {
    const g = splitGlobals(argv);
    debug = g.debug;
    const [name, ...args] = g.rest;
    if (g.help || name === undefined || name === 'help') {
      process.stdout.write(GLOBAL_HELP);
      return name === undefined && !g.help ? 2 : 0;
    }
    if (name === '--version') return main(['version']);
    const entry = COMMANDS[name];
    if (!entry) throw new SealimgError('USAGE', `unknown command "${name}"`, { hint: "see 'sealimg --help'" });
    const cmd = (await entry.load()).default;
    const { values, positionals } = parseFlags(cmd, name, args);
    if (values.help) {
      process.stdout.write(`${cmd.usage.trimEnd()}\n`);
      return 0;
    }
    const ctx: Context = {
      root: g.root ?? defaultRoot(),
      debug,
      stdout: process.stdout,
      stderr: process.stderr,
      stdin: process.stdin,
      env: process.env,
      signal: controller.signal,
    };
    return (await cmd.run(ctx, values, positionals)) ?? 0;
  } catch (e) {
    report(e, debug);
    return isSealimgError(e, 'USAGE') ? 2 : 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

function report(e: unknown, debug: boolean): void {
  if (isSealimgError(e)) {
    process.stderr.write(`Error: ${e.message} [${e.code}]\n`);
    if (e.hint) process.stderr.write(`Hint: ${e.hint}\n`);
  } else {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`Error: ${err?.message ?? String(e)}${err?.code ? ` [${err.code}]` : ''}\n`);
    if (!debug) process.stderr.write('Hint: run again with --debug for details\n');
  }
  if (debug && e instanceof Error) {
    process.stderr.write(`${e.stack}\n`);
    for (let c = e.cause; c instanceof Error; c = c.cause) process.stderr.write(`Caused by: ${c.stack}\n`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`Error: ${String(e)}\n`);
    process.exit(1);
  },
);
