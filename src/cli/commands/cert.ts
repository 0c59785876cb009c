/** sealimg cert: add names to the apiserver certificate on every master. */
import { openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { addAltNames } from '../../runner/membership.js';
import { needArgs, type Command } from '../command.js';
import { applyOptions } from '../cluster-apply.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS } from '../cluster-flags.js';

const command: Command = {
  summary: 'Add names to the apiserver certificate',
  usage: `Usage: sealimg cert --alt-names NAME,... [--cluster NAME]

Makes a new apiserver certificate (99 years, from the cluster CA) with these
extra DNS names or IPs on every master, restarts the apiserver, and keeps the
names in the Clusterfile (and kubeadm-config) for masters added later.

Flags:
      --alt-names NAME,...   DNS names or IP addresses to add
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, 'alt-names': { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('cert', args, 0, 0, 'no arguments');
    const names = typeof flags['alt-names'] === 'string' ? flags['alt-names'].split(',').map((x) => x.trim()).filter(Boolean) : [];
    if (names.length === 0) throw new SealimgError('USAGE', 'cert needs --alt-names NAME,...');
    const store = await openLocalStore(ctx.root);
    try {
      await addAltNames(await applyOptions(ctx, flags, store), names);
    } finally {
      await store.close();
    }
  },
};
export default command;
