/** sealimg version */
import { sealimgVersion } from '../../version.js';
import type { Command } from '../command.js';

const command: Command = {
  summary: 'Print the sealimg version',
  usage: 'Usage: sealimg version',
  options: {},
  async run(ctx) {
    ctx.stdout.write(`sealimg ${await sealimgVersion()} (node ${process.version}, ${process.platform}/${process.arch})\n`);
  },
};
export default command;
