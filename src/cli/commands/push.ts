/** sealimg push: copy an image from the local store to a registry or a layout. */
import { parseLocation } from '../../content/locations.js';
import { needArgs, type Command } from '../command.js';
import { TRANSFER_HELP, TRANSFER_OPTIONS, transfer } from '../transfer.js';

const command: Command = {
  summary: 'Copy an image from the local store to a registry or layout',
  usage: `Usage: sealimg push [FLAGS] IMAGE [DESTINATION]

IMAGE is a name or ID in the local store. DESTINATION defaults to IMAGE's own
registry reference; it may also be oci:DIR[:TAG] (TAG defaults to IMAGE's name).

Flags:
${TRANSFER_HELP}`,
  options: TRANSFER_OPTIONS,
  async run(ctx, flags, args) {
    needArgs('push', args, 1, 2, 'IMAGE and an optional DESTINATION');
    const from = parseLocation(args[0]!, 'local');
    const to = parseLocation(args[1] ?? args[0]!, 'registry');
    const toRef = to.ref === '' ? args[0]! : to.ref;
    const desc = await transfer(ctx, from, to, toRef, flags);
    ctx.stdout.write(`${to.spec}\nDigest: ${desc.digest}\n`);
  },
};
export default command;
