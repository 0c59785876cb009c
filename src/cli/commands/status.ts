/** sealimg status: a cluster's hosts, images and the state of each step. */
import { readdir } from 'node:fs/promises';
import { loadClusterfile } from '../../runner/apply.js';
import { ClusterDir, sealimgHome } from '../../runner/cluster-dir.js';
import { hostsOf } from '../../runner/hosts.js';
import { needArgs, type Command } from '../command.js';
import { clusterDir } from '../cluster-flags.js';
import { table } from '../output.js';

const command: Command = {
  summary: "Show a cluster's hosts and state",
  usage: `Usage: sealimg status [--cluster NAME] [--format table|json]

Without --cluster, lists every cluster this machine knows.`,
  options: { cluster: { type: 'string' }, format: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('status', args, 0, 0, 'no arguments');
    const json = flags.format === 'json';
    if (flags.cluster === undefined) {
      const home = sealimgHome(ctx.env);
      const rows: string[][] = [];
      const all = [];
      for (const name of (await readdir(home).catch(() => [] as string[])).sort()) {
        if (!/^[a-z0-9-]+$/.test(name)) continue;
        const cf = await loadClusterfile(new ClusterDir(home, name)).catch(() => undefined);
        if (!cf) continue;
        const spec = cf.spec();
        all.push({ name, phase: cf.phase ?? 'Unknown', hosts: hostsOf(spec).length, images: spec.image });
        rows.push([name, cf.phase ?? 'Unknown', String(hostsOf(spec).length), spec.image.join(', ')]);
      }
      ctx.stdout.write(json ? `${JSON.stringify(all, null, 2)}\n` : table([['CLUSTER', 'PHASE', 'HOSTS', 'IMAGES'], ...rows]));
      return;
    }
    const dir = clusterDir(ctx, flags);
    const cf = await loadClusterfile(dir);
    if (!cf) {
      ctx.stderr.write(`No cluster named ${dir.name}\n`);
      return 1;
    }
    const spec = cf.spec();
    if (json) {
      ctx.stdout.write(`${JSON.stringify({ name: dir.name, phase: cf.phase, hosts: hostsOf(spec).map((h) => ({ name: h.name, roles: h.roles })), images: spec.image, conditions: cf.conditions() }, null, 2)}\n`);
      return;
    }
    ctx.stdout.write(`Cluster ${dir.name}: ${cf.phase ?? 'Unknown'}\nImages: ${spec.image.join(', ')}\n\n`);
    ctx.stdout.write(table([['HOST', 'ROLES'], ...hostsOf(spec).map((h) => [h.name, h.roles.join(',')])]));
    ctx.stdout.write(`\n${table([['STEP', 'STATUS', 'MESSAGE'], ...cf.conditions().map((c) => [c.type, c.status, c.message ?? ''])])}`);
  },
};
export default command;
