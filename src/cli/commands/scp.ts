/** sealimg scp: copy a file or directory to the cluster's hosts. */
import { stat } from 'node:fs/promises';
import { SealimgError } from '../../errors.js';
import { uploadFile, uploadTree } from '../../runner/upload.js';
import { needArgs, type Command } from '../command.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, clusterDir, say } from '../cluster-flags.js';
import { selectHosts } from '../cluster-hosts.js';

const command: Command = {
  summary: 'Copy a file to cluster hosts',
  usage: `Usage: sealimg scp [--roles ROLES] SRC DST

Copies the local file or directory SRC to DST on every selected host (a
directory's contents go into DST; a file becomes the file DST). Files arrive whole and checked by sha256.

Flags:
      --roles ROLES   only hosts with one of these roles (default: all)
${CLUSTER_HELP}`,
  options: { ...CLUSTER_OPTIONS, roles: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('scp', args, 2, 2, 'SRC and DST');
    const [src, dst] = args as [string, string];
    const st = await stat(src).catch(() => {
      throw new SealimgError('USAGE', `scp: ${src} does not exist`);
    });
    const { pool, targets } = await selectHosts(clusterDir(ctx, flags), flags.roles as string | undefined, { insecureSkipHostKeyCheck: Boolean(flags['insecure-skip-host-key-check']), say: say(ctx) });
    try {
      await Promise.all(
        targets.map(async ({ host, session }) => {
          const r = st.isDirectory() ? await uploadTree(session, src, dst, { step: 'scp', signal: ctx.signal }) : await uploadFile(session, src, dst, { step: 'scp', signal: ctx.signal });
          ctx.stderr.write(`${host.name}: ${r.files.size} file${r.files.size === 1 ? '' : 's'} copied\n`);
        }),
      );
    } finally {
      await pool.close();
    }
  },
};
export default command;
