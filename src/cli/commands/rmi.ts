/** sealimg rmi: remove names from the local store, then the blobs no image uses. */
import { findImage, openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { mountsDir, sealimgHome } from '../../runner/cluster-dir.js';
import { pruneMounts } from '../../runner/mount.js';
import { needArgs, type Command } from '../command.js';

const command: Command = {
  summary: 'Remove images from the local store',
  usage: `Usage: sealimg rmi [FLAGS] IMAGE [IMAGE...]

IMAGE is a name, a digest or an ID. By name, that name is removed; by ID or
digest, every name of the image (with -f when it has several). Blobs that no
remaining image uses are deleted.

Flags:
  -f, --force   remove an image by ID even when it has several names`,
  options: { force: { type: 'boolean', short: 'f' } },
  async run(ctx, flags, args) {
    needArgs('rmi', args, 1, Infinity, 'at least one IMAGE');
    const store = await openLocalStore(ctx.root);
    // Find all first: a typo in the third name must not leave the first two removed.
    const found = [];
    for (const a of args) found.push(await findImage(store, a));
    const tags = await store.list();
    const plan = new Set<string>();
    for (const [i, f] of found.entries()) {
      if (f.ref !== undefined) {
        plan.add(f.ref);
        continue;
      }
      const names = tags.filter((t) => t.descriptor.digest === f.descriptor.digest).map((t) => t.ref);
      if (names.length > 1 && !flags.force) {
        throw new SealimgError('IMAGE_IN_USE', `${args[i]} has ${names.length} names: ${names.join(', ')}`, { hint: 'remove them by name, or use -f' });
      }
      for (const n of names) plan.add(n);
    }
    for (const ref of plan) {
      await store.untag(ref);
      ctx.stdout.write(`Untagged: ${ref}\n`);
    }
    const { removed } = await store.gc();
    for (const d of removed) ctx.stdout.write(`Deleted: ${d.digest}\n`);
    // The runner's unpacked copies of removed images go too.
    await pruneMounts(store, mountsDir(sealimgHome(ctx.env)));
  },
};
export default command;
