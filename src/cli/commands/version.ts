/** sealimg version */
import { readFile } from 'node:fs/promises';
import type { Command } from '../command.js';

const command: Command = {
  summary: 'Print the sealimg version',
  usage: 'Usage: sealimg version',
  options: {},
  async run(ctx) {
    // dist/src/cli/commands/version.js -> package.json at the package root.
    const pkg = JSON.parse(await readFile(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string };
    ctx.stdout.write(`sealimg ${pkg.version} (node ${process.version}, ${process.platform}/${process.arch})\n`);
  },
};
export default command;
