/** sealimg delete: remove masters or nodes from a cluster. */
import { openLocalStore } from '../../content/local.js';
import { deleteHosts } from '../../runner/membership.js';
import { needArgs, type Command } from '../command.js';
import { applyOptions } from '../cluster-apply.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS } from '../cluster-flags.js';
import { SealimgError } from '../../errors.js';

const list = (v: unknown) => (typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);

const command: Command = {
  summary: 'Remove masters or nodes from a cluster',
  usage: `Usage: sealimg delete [--masters IP,...] [--nodes IP,...] [--cluster NAME]

Drains each host with kubectl on master0, resets it (kubeadm reset; a master's
etcd member is removed), cleans its files and takes it out of the Clusterfile;
then every node's load balancer is updated. master0 cannot be deleted.

Flags:
      --masters IP[:PORT],...   control-plane hosts
      --nodes IP[:PORT],...     worker hosts
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, masters: { type: 'string' }, nodes: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('delete', args, 0, 0, 'no arguments');
    const hosts = { masters: list(flags.masters), nodes: list(flags.nodes) };
    if (hosts.masters.length + hosts.nodes.length === 0) throw new SealimgError('USAGE', 'delete needs --masters or --nodes');
    const store = await openLocalStore(ctx.root);
    try {
      await deleteHosts(await applyOptions(ctx, flags, store), hosts);
    } finally {
      await store.close();
    }
  },
};
export default command;
