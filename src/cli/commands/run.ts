/** sealimg run: install cluster images onto hosts over SSH. */
import { openLocalStore } from '../../content/local.js';
import { Applier, loadClusterfile } from '../../runner/apply.js';
import type { Command } from '../command.js';
import { applyOptions } from '../cluster-apply.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, HOST_HELP, HOST_OPTIONS, clusterDir, desiredClusterfile } from '../cluster-flags.js';

const command: Command = {
  summary: 'Install cluster images onto hosts over SSH',
  usage: `Usage: sealimg run IMAGE... --masters IP,... [--nodes IP,...] [FLAGS]
       sealimg run -f Clusterfile [IMAGE...]

IMAGE is a name in the local store, a registry reference (pulled), or a
tarball path (loaded). Running the same command again does nothing; adding an
image installs just that image; a run that failed is picked up where it stopped.

Flags:
${HOST_HELP}
  -f, --file FILE               a Clusterfile (apps.sealos.io/v1beta1 Cluster)
  -e, --env K=V                 environment for templates and hooks (repeatable)
      --cmd CMD                 replaces the first image's CMD (repeatable)
      --lb lvscare|haproxy      the nodes' apiserver load balancer (default lvscare: ipvs;
                                haproxy for kernels without ipvs); kept for later runs
${CLUSTER_HELP}
      --plain-http, --tls-verify=false, --ca-file, --authfile   for images pulled from registries`,
  options: {
    ...HOST_OPTIONS,
    ...CLUSTER_OPTIONS,
    file: { type: 'string', short: 'f' },
    env: { type: 'string', short: 'e', multiple: true },
    cmd: { type: 'string', multiple: true },
    lb: { type: 'string' },
    'plain-http': { type: 'boolean' },
    'tls-verify': { type: 'string' },
    'ca-file': { type: 'string' },
    authfile: { type: 'string' },
  },
  async run(ctx, flags, images) {
    const dir = clusterDir(ctx, flags);
    const current = flags.masters === undefined && flags.file === undefined ? await loadClusterfile(dir) : undefined;
    let desired;
    if (current) {
      // `run NEWIMAGE` on an existing cluster: its hosts, plus the new images.
      desired = current;
      desired.setImages([...current.spec().image, ...images.filter((i) => !current.spec().image.includes(i))]);
    } else desired = await desiredClusterfile(ctx, flags, images, dir.name);
    const store = await openLocalStore(ctx.root);
    try {
      await new Applier(await applyOptions(ctx, flags, store)).apply(desired);
    } finally {
      await store.close();
    }
  },
};
export default command;
