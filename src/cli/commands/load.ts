/** sealimg load: read images from a tarball into the local store, all or nothing. */
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { loadArchive } from '../../content/archive-load.js';
import { openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { needArgs, type Command } from '../command.js';
import { progressReporter } from '../progress.js';
import { parseConcurrency } from '../transfer.js';

const command: Command = {
  summary: 'Read images from a tarball into the local store',
  usage: `Usage: sealimg load [-i FILE] [FLAGS]

Reads a tarball made by 'sealimg save', 'skopeo copy ... oci-archive:' or
'docker-archive:', or 'docker save', gzipped or not, from FILE or standard
input. Every blob is checked against its digest and size while it is read;
the images are named only once all of them are complete, so a damaged or
cut-short tarball adds nothing to the store: a load that fails or is
interrupted deletes the blobs it wrote itself (never one the store already
had). A load killed outright (SIGKILL, power loss) leaves no names, only
unnamed blobs, which 'sealimg prune' removes.

Flags:
  -i, --input FILE       the tarball (default standard input)
      --concurrency N    blobs in flight at once when reading a file (default 4)
  -q, --quiet            no progress output`,
  options: {
    input: { type: 'string', short: 'i' },
    concurrency: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  },
  async run(ctx, flags, args) {
    needArgs('load', args, 0, 0, 'no arguments (the tarball is given with -i)');
    const input = flags.input as string | undefined;
    if ((input === undefined || input === '-') && (ctx.stdin as { isTTY?: boolean }).isTTY) {
      throw new SealimgError('USAGE', 'load reads a tarball from standard input, which is a terminal', { hint: 'use -i FILE, or redirect a file in' });
    }
    const store = await openLocalStore(ctx.root);
    try {
      const loaded = await loadArchive(input === undefined || input === '-' ? (ctx.stdin as unknown as Readable) : input, store, {
        signal: ctx.signal,
        onEvent: progressReporter(ctx.stderr, Boolean(flags.quiet)),
        concurrency: parseConcurrency(flags.concurrency as string | undefined),
        spoolDir: join(store.root, '.ingest'),
      });
      for (const image of loaded) {
        if (image.names.length === 0) ctx.stderr.write(`Warning: image ${image.descriptor.digest} has no name in the archive; it was not kept ('sealimg prune' removes its blobs)\n`);
        for (const name of image.names) ctx.stdout.write(`Loaded image: ${name}\n`);
        if (image.names.length > 0) ctx.stdout.write(`Digest: ${image.descriptor.digest}\n`);
      }
    } finally {
      await store.close();
    }
  },
};
export default command;
