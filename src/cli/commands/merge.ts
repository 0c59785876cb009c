/** sealimg merge: one cluster image from several, as sealos merge makes it. */
import { parsePlatformText } from '../../build/images.js';
import { merge } from '../../build/merge.js';
import { openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { normalizeReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';

const command: Command = {
  summary: 'Merge several cluster images into one',
  usage: `Usage: sealimg merge -t NAME [--platform OS/ARCH] IMAGE IMAGE...

Stacks the images' layers in the order given (a layer they share appears once),
merges labels and env (a later image wins), concatenates CMD and ENTRYPOINT, and
makes sealos.io.type rootfs when any input is a rootfs image. Nothing is
recompressed: the merged image shares every layer with its inputs.

Flags:
  -t, --tag NAME          name of the merged image (repeatable)
      --platform OS/ARCH  which image to take out of multi-arch inputs`,
  options: {
    tag: { type: 'string', short: 't', multiple: true },
    platform: { type: 'string' },
  },
  async run(ctx, flags, args) {
    needArgs('merge', args, 2, Infinity, 'at least two IMAGEs');
    const tags = ((flags.tag as string[] | undefined) ?? []).map(normalizeReference);
    if (tags.length === 0) throw new SealimgError('USAGE', 'merge needs a name: -t NAME', { hint: "see 'sealimg merge --help'" });
    const epoch = ctx.env.SOURCE_DATE_EPOCH;
    const store = await openLocalStore(ctx.root);
    try {
      const desc = await merge(store, args, {
        tags,
        platform: flags.platform === undefined ? undefined : parsePlatformText(flags.platform as string),
        sourceDateEpoch: epoch && /^\d+$/.test(epoch) ? Number(epoch) : 0,
      });
      ctx.stdout.write(`${desc.digest}\n`);
    } finally {
      await store.close();
    }
  },
};
export default command;
