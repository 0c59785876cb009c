/** sealimg scp: copy a file or directory to the cluster's hosts. */
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { posix } from 'node:path';
import { SealimgError } from '../../errors.js';
import { shellQuote } from '../../runner/ssh.js';
import { uploadTree } from '../../runner/upload.js';
import { needArgs, type Command } from '../command.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, clusterDir, say } from '../cluster-flags.js';
import { selectHosts } from '../cluster-hosts.js';

const command: Command = {
  summary: 'Copy a file to cluster hosts',
  usage: `Usage: sealimg scp [--roles ROLES] SRC DST

Copies the local file or directory SRC to DST on every selected host (a
directory's contents go into DST). Files arrive whole and checked by sha256.

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
          // A single file travels as the one entry of its directory, renamed on arrival if DST names another file.
          const r = st.isDirectory()
            ? await uploadTree(session, src, dst, { step: 'scp', signal: ctx.signal })
            : await uploadTree(session, dirname(src), posix.dirname(dst), { filter: (rel) => rel === basename(src), step: 'scp', signal: ctx.signal });
          if (!st.isDirectory() && posix.basename(dst) !== basename(src)) {
            await session.exec(`mv -f -- ${shellQuote(posix.join(posix.dirname(dst), basename(src)))} ${shellQuote(dst)}`, { step: 'scp' });
          }
          ctx.stderr.write(`${host.name}: ${r.files.size} file${r.files.size === 1 ? '' : 's'} copied\n`);
        }),
      );
    } finally {
      await pool.close();
    }
  },
};
export default command;
