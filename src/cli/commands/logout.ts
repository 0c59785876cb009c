/** sealimg logout: forget the saved credentials for a registry. */
import { hostOfKey } from '../../auth/credentials.js';
import { removeCredentials, writePath } from '../../auth/authfile.js';
import { SealimgError } from '../../errors.js';
import { needArgs, type Command } from '../command.js';

const command: Command = {
  summary: 'Remove saved credentials for a registry',
  usage: `Usage: sealimg logout [--authfile FILE] REGISTRY

Removes REGISTRY's credentials from the file 'sealimg login' writes (and from
the credential helper it names).`,
  options: { authfile: { type: 'string' } },
  async run(ctx, flags, args) {
    needArgs('logout', args, 1, 1, 'one REGISTRY');
    const host = hostOfKey(args[0]!);
    const opts = { authFile: flags.authfile as string | undefined, env: ctx.env };
    if (!(await removeCredentials(host, opts))) {
      throw new SealimgError('USAGE', `not logged in to ${host} (no entry in ${writePath(opts)})`);
    }
    ctx.stdout.write(`Removed login credentials for ${host}\n`);
  },
};
export default command;
