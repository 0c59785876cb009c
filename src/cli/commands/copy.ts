/** sealimg copy: copy an image between any two locations. */
import { parseLocation } from '../../content/locations.js';
import { SealimgError } from '../../errors.js';
import { normalizeReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';
import { TRANSFER_HELP, TRANSFER_OPTIONS, transfer } from '../transfer.js';

const command: Command = {
  summary: 'Copy an image between any two locations',
  usage: `Usage: sealimg copy [FLAGS] SOURCE DESTINATION

Locations:
  HOST/REPO:TAG, docker://HOST/REPO:TAG   a registry
  oci:DIR[:TAG]                           an OCI image layout directory
  oci-archive:FILE[:NAME]                 an OCI layout in a tar (read: any image tarball)
  docker-archive:FILE[:NAME]              a docker save tarball
  local:NAME                              the local store

Flags:
${TRANSFER_HELP}`,
  options: TRANSFER_OPTIONS,
  async run(ctx, flags, args) {
    needArgs('copy', args, 2, 2, 'SOURCE and DESTINATION');
    const from = parseLocation(args[0]!, 'registry');
    const to = parseLocation(args[1]!, 'registry');
    let toRef = to.ref;
    if (to.kind === 'local') toRef = normalizeReference(to.ref || from.ref);
    if (toRef === '') throw new SealimgError('USAGE', `copy: ${args[1]} names no tag`, { hint: `write ${args[1]}:TAG` });
    const desc = await transfer(ctx, from, to, toRef, flags);
    ctx.stdout.write(`${desc.digest}\n`);
  },
};
export default command;
