/** sealimg pull: copy an image from a registry or a layout into the local store. */
import { parseLocation } from '../../content/locations.js';
import { SealimgError } from '../../errors.js';
import { normalizeReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';
import { TRANSFER_HELP, TRANSFER_OPTIONS, transfer } from '../transfer.js';

const command: Command = {
  summary: 'Copy an image into the local store',
  usage: `Usage: sealimg pull [FLAGS] SOURCE

SOURCE is a registry reference (nginx, host:5000/repo:tag, docker://...) or an
OCI layout, oci:DIR:NAME, which is stored under NAME.

Flags:
${TRANSFER_HELP}`,
  options: TRANSFER_OPTIONS,
  async run(ctx, flags, args) {
    needArgs('pull', args, 1, 1, 'one SOURCE');
    const from = parseLocation(args[0]!, 'registry');
    if (from.kind === 'local') throw new SealimgError('USAGE', `pull: ${args[0]} is already the local store`);
    if (from.ref === '' && from.kind !== 'registry') {
      throw new SealimgError('USAGE', `pull: ${args[0]} names no image`, { hint: `add the name to store it under: ${args[0]}:NAME` });
    }
    const name = from.kind === 'registry' ? from.ref : normalizeReference(from.ref);
    const desc = await transfer(ctx, from, { kind: 'local', ref: name, spec: name }, name, flags);
    ctx.stdout.write(`${name}\nDigest: ${desc.digest}\n`);
  },
};
export default command;
