/** sealimg prune: reclaim space no image in the local store uses. */
import { openLocalStore } from '../../content/local.js';
import { needArgs, type Command } from '../command.js';
import { humanSize } from '../output.js';

const command: Command = {
  summary: 'Remove blobs and leftovers no image in the local store uses',
  usage: `Usage: sealimg prune [--dry-run]

Deletes blobs that no named image reaches and leftovers of interrupted pulls.

Flags:
      --dry-run   list what would be removed, remove nothing`,
  options: { 'dry-run': { type: 'boolean' } },
  async run(ctx, flags, args) {
    needArgs('prune', args, 0, 0, 'no arguments');
    const store = await openLocalStore(ctx.root);
    const dryRun = Boolean(flags['dry-run']);
    const { removed, bytes } = await store.gc({ dryRun });
    for (const d of removed) ctx.stdout.write(`${dryRun ? 'Would delete' : 'Deleted'}: ${d.digest}\n`);
    ctx.stdout.write(`${dryRun ? 'Would reclaim' : 'Total reclaimed space'}: ${humanSize(bytes)}\n`);
  },
};
export default command;
