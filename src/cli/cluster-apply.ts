/** The Applier's options from a command's flags, shared by run, add and delete. */
import { readFile } from 'node:fs/promises';
import type { OciLayoutStore } from '../content/oci-layout.js';
import type { ApplyOptions } from '../runner/apply.js';
import type { Context } from './command.js';
import { clusterDir, say } from './cluster-flags.js';
import { registryOptions } from './transfer.js';

export async function applyOptions(ctx: Context, flags: Record<string, unknown>, store: OciLayoutStore): Promise<ApplyOptions> {
  const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return {
    store,
    dir: clusterDir(ctx, flags),
    root: ctx.root,
    registry: registryOptions(flags, ctx.env),
    env: (flags.env as string[] | undefined) ?? [],
    cmd: flags.cmd as string[] | undefined,
    insecureSkipHostKeyCheck: Boolean(flags['insecure-skip-host-key-check']),
    say: say(ctx),
    signal: ctx.signal,
    version: pkg.version,
    lb: flags.lb as string | undefined,
  };
}
