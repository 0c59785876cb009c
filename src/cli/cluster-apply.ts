/** The Applier's options from a command's flags, shared by run, add and delete. */
import type { OciLayoutStore } from '../content/oci-layout.js';
import type { ApplyOptions } from '../runner/apply.js';
import { sealimgVersion } from '../version.js';
import type { Context } from './command.js';
import { clusterDir, say } from './cluster-flags.js';
import { registryOptions } from './transfer.js';

export async function applyOptions(ctx: Context, flags: Record<string, unknown>, store: OciLayoutStore): Promise<ApplyOptions> {
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
    version: await sealimgVersion(),
    lb: flags.lb as string | undefined,
  };
}
