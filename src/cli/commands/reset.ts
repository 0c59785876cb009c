/** sealimg reset: undo a cluster on every host and archive its Clusterfile. */
import { resetCluster } from '../../runner/reset.js';
import { needArgs, type Command } from '../command.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, clusterDir, say } from '../cluster-flags.js';

const command: Command = {
  summary: 'Undo a cluster installation on every host',
  usage: `Usage: sealimg reset [--cluster NAME] [--force]

Runs the images' clean hooks on every host, removes the cluster's files and
/etc/hosts entries there, and renames the Clusterfile to Clusterfile.<time>.

Flags:
      --force   go on past hosts that cannot be reached, and name them
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, force: { type: 'boolean' } },
  async run(ctx, flags, args) {
    needArgs('reset', args, 0, 0, 'no arguments');
    const { archived, failed } = await resetCluster({ dir: clusterDir(ctx, flags), force: Boolean(flags.force), insecureSkipHostKeyCheck: Boolean(flags['insecure-skip-host-key-check']), say: say(ctx), signal: ctx.signal });
    ctx.stdout.write(`Cluster reset; its Clusterfile is kept as ${archived}\n`);
    if (failed.length > 0) {
      ctx.stderr.write(`Not reset (unreachable): ${failed.join(', ')}\n`);
      return 1;
    }
  },
};
export default command;
