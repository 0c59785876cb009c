/** sealimg tag: another name for an image in the local store. */
import { findImage, openLocalStore } from '../../content/local.js';
import { normalizeReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';

const command: Command = {
  summary: 'Give an image in the local store another name',
  usage: `Usage: sealimg tag SOURCE TARGET [TARGET...]

SOURCE is a name or ID in the local store; each TARGET becomes a name for it.`,
  options: {},
  async run(ctx, _flags, args) {
    needArgs('tag', args, 2, Infinity, 'SOURCE and at least one TARGET');
    const targets = args.slice(1).map(normalizeReference); // all checked before anything changes
    const store = await openLocalStore(ctx.root);
    const { descriptor } = await findImage(store, args[0]!);
    for (const t of targets) await store.tag(descriptor, t);
  },
};
export default command;
