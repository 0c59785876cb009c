/**
 * The shared body of pull, push and copy: open both ends, find the source
 * image, run copy() with progress, close both ends. Flags are the same for all three.
 */
import { copy } from '../content/copy.js';
import { findImage } from '../content/local.js';
import { openDestination, openSource, type Location } from '../content/locations.js';
import { OciLayoutStore } from '../content/oci-layout.js';
import { canClose, type ReadOnlyStore, type Store } from '../content/store.js';
import { SealimgError } from '../errors.js';
import type { Descriptor, Platform } from '../oci/types.js';
import type { Context, Options } from './command.js';
import { progressReporter } from './progress.js';

export const TRANSFER_OPTIONS: Options = {
  quiet: { type: 'boolean', short: 'q' },
  concurrency: { type: 'string' },
  platform: { type: 'string' },
};

export const TRANSFER_HELP = `  -q, --quiet            no progress output
      --concurrency N    blobs in flight at once (default 4)
      --platform OS/ARCH copy only this platform's image out of a multi-arch index`;

export function parsePlatform(s: string | undefined): Platform | undefined {
  if (s === undefined) return undefined;
  const [os, architecture, variant, extra] = s.split('/');
  if (!os || !architecture || extra !== undefined) {
    throw new SealimgError('USAGE', `--platform "${s}" must be OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64`);
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function parseConcurrency(s: string | undefined): number {
  if (s === undefined) return 4;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new SealimgError('USAGE', `--concurrency "${s}" must be a whole number from 1 to 64`);
  return n;
}

export async function transfer(ctx: Context, from: Location, to: Location, toRef: string, flags: Record<string, unknown>): Promise<Descriptor> {
  const opts = {
    concurrency: parseConcurrency(flags.concurrency as string | undefined),
    platform: parsePlatform(flags.platform as string | undefined),
    signal: ctx.signal,
    onEvent: progressReporter(ctx.stderr, Boolean(flags.quiet)),
    // Local stores and layouts go back to what they were; registries keep finished blobs for a re-run.
    rollback: to.kind === 'local' || to.kind === 'oci',
  };
  const open: Array<ReadOnlyStore | Store> = [];
  try {
    const src = await openSource(from, ctx);
    open.push(src);
    let srcRef = from.ref;
    if (from.kind === 'local') srcRef = (await findImage(src as OciLayoutStore, from.ref)).descriptor.digest;
    const dst = await openDestination(to, ctx);
    open.push(dst);
    return await copy(src, srcRef, dst, toRef, opts);
  } finally {
    for (const s of open) if (canClose(s)) await s.close();
  }
}
