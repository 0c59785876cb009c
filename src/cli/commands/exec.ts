/** sealimg exec: run a shell command on the cluster's hosts. */
import { needArgs, type Command } from '../command.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, clusterDir, say } from '../cluster-flags.js';
import { selectHosts } from '../cluster-hosts.js';

const command: Command = {
  summary: 'Run a command on cluster hosts',
  usage: `Usage: sealimg exec [--roles master|node|registry,...] CMD

Runs CMD with sh on every selected host at once, as root (sudo for other
users); output lines are prefixed with the host. Exits 1 if it failed anywhere.

Flags:
      --roles ROLES   only hosts with one of these roles (default: all)
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, roles: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('exec', args, 1, Infinity, 'a CMD');
    const cmd = args.join(' ');
    const { pool, targets } = await selectHosts(clusterDir(ctx, flags), flags.roles as string | undefined, { insecureSkipHostKeyCheck: Boolean(flags['insecure-skip-host-key-check']), say: say(ctx) });
    let failed = 0;
    try {
      await Promise.all(
        targets.map(async ({ host, session }) => {
          try {
            const r = await session.exec(cmd, { step: 'exec', allowFailure: true, signal: ctx.signal });
            for (const l of r.stdout.split('\n').filter((x, i, a) => x !== '' || i < a.length - 1)) ctx.stdout.write(`${host.name}: ${l}\n`);
            for (const l of r.stderr.split('\n').filter(Boolean)) ctx.stderr.write(`${host.name}: ${l}\n`);
            if (r.code !== 0) {
              failed++;
              ctx.stderr.write(`${host.name}: exit code ${r.code}\n`);
            }
          } catch (e) {
            failed++;
            ctx.stderr.write(`${host.name}: ${(e as Error).message}\n`);
          }
        }),
      );
    } finally {
      await pool.close();
    }
    return failed > 0 ? 1 : 0;
  },
};
export default command;
