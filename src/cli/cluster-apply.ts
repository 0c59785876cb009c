/** The Applier's options from a command's flags, shared by run, add and delete; and add/delete themselves. */
import { openLocalStore } from '../content/local.js';
import type { OciLayoutStore } from '../content/oci-layout.js';
import { SealimgError } from '../errors.js';
import type { ApplyOptions } from '../runner/apply.js';
import { sealimgVersion } from '../version.js';
import { needArgs, type Command, type Context } from './command.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, clusterDir, say } from './cluster-flags.js';
import { registryOptions } from './registry-flags.js';

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

export type HostChange = { masters: string[]; nodes: string[] };

const list = (v: unknown) => (typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);

/** add and delete: the same flags and shape, a different change to the cluster. */
export function membershipCommand(name: 'add' | 'delete', summary: string, description: string, change: (opts: ApplyOptions, hosts: HostChange) => Promise<unknown>): Command {
  return {
    summary,
    usage: `Usage: sealimg ${name} [--masters IP,...] [--nodes IP,...] [--cluster NAME]

${description.trim()}

Flags:
      --masters IP[:PORT],...   control-plane hosts
      --nodes IP[:PORT],...     worker hosts
${CLUSTER_HELP}`,
    options: { ...CLUSTER_OPTIONS, masters: { type: 'string' }, nodes: { type: 'string' } },
    async run(ctx, flags, args) {
      needArgs(name, args, 0, 0, 'no arguments');
      const hosts = { masters: list(flags.masters), nodes: list(flags.nodes) };
      if (hosts.masters.length + hosts.nodes.length === 0) throw new SealimgError('USAGE', `${name} needs --masters or --nodes`);
      const store = await openLocalStore(ctx.root);
      try {
        await change(await applyOptions(ctx, flags, store), hosts);
      } finally {
        await store.close();
      }
    },
  };
}
