/** sealimg add: add masters or nodes to a running cluster. */
import { openLocalStore } from '../../content/local.js';
import { addHosts } from '../../runner/membership.js';
import { needArgs, type Command } from '../command.js';
import { applyOptions } from '../cluster-apply.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS } from '../cluster-flags.js';
import { SealimgError } from '../../errors.js';

const list = (v: unknown) => (typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);

const command: Command = {
  summary: 'Add masters or nodes to a cluster',
  usage: `Usage: sealimg add [--masters IP,...] [--nodes IP,...] [--cluster NAME]

Installs the cluster's images on the new hosts and joins them (masters one at a
time, as control plane); every node's load balancer is updated when masters
are added. Hosts already in the cluster are skipped, so a failed add is run again.

Flags:
      --masters IP[:PORT],...   control-plane hosts
      --nodes IP[:PORT],...     worker hosts
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, masters: { type: 'string' }, nodes: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('add', args, 0, 0, 'no arguments');
    const hosts = { masters: list(flags.masters), nodes: list(flags.nodes) };
    if (hosts.masters.length + hosts.nodes.length === 0) throw new SealimgError('USAGE', 'add needs --masters or --nodes');
    const store = await openLocalStore(ctx.root);
    try {
      await addHosts(await applyOptions(ctx, flags, store), hosts);
    } finally {
      await store.close();
    }
  },
};
export default command;
