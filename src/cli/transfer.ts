/**
 * The shared body of pull, push and copy: open both ends, find the source
 * image, run copy() with progress, close both ends. Flags are the same for all three.
 */
import { join } from 'node:path';
import { copy } from '../content/copy.js';
import { copyReferrers, type RefFor } from '../content/referrers.js';
import { findImage } from '../content/local.js';
import { openDestination, openSource, type Location } from '../content/locations.js';
import { OciLayoutStore } from '../content/oci-layout.js';
import { canClose, type ReadOnlyStore, type Store } from '../content/store.js';
import { SealimgError } from '../errors.js';
import type { RegistryOptions } from '../content/registry-client.js';
import { parseReference, referenceName } from '../oci/reference.js';
import type { Descriptor, Platform } from '../oci/types.js';
import type { Context, Options } from './command.js';
import { progressReporter } from './progress.js';
import { registryOptions } from './registry-flags.js';

/** Chunked uploads in progress, kept in the local store so a killed push resumes. */
const UPLOADS_DIR = '.uploads';

export const TRANSFER_OPTIONS: Options = {
  quiet: { type: 'boolean', short: 'q' },
  concurrency: { type: 'string' },
  platform: { type: 'string' },
  'plain-http': { type: 'boolean' },
  'tls-verify': { type: 'string' },
  'ca-file': { type: 'string' },
  authfile: { type: 'string' },
  'retry-times': { type: 'string' },
  'chunk-size': { type: 'string' },
  referrers: { type: 'boolean' },
};

export const TRANSFER_HELP = `  -q, --quiet            no progress output
      --concurrency N    blobs in flight at once (default 4)
      --platform OS/ARCH copy only this platform's image out of a multi-arch index
      --authfile FILE    registry credentials (default: $REGISTRY_AUTH_FILE, then the
                         containers auth.json, then docker's config.json)
      --plain-http       talk http, not https, to registries
      --tls-verify=false do not check registry certificates
      --ca-file FILE     also trust the CA certificates (PEM) in FILE
      --retry-times N    attempts after a failed request (default 5; 0 for none)
      --chunk-size SIZE  upload large blobs in chunks of SIZE (default 16MiB), e.g. 4MiB
      --referrers        also copy the image's referrers (signatures, SBOMs)`;

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

/** Where a location files a bare tag: the local store names tags in full (`host/repo:tag`). */
function refFor(loc: Location, ref: string): RefFor {
  if (loc.kind !== 'local') return (tag) => tag;
  let name: string;
  try {
    name = referenceName(parseReference(ref));
  } catch {
    return (tag) => tag; // an image ID: it has no name to file referrer tags under
  }
  return (tag) => `${name}:${tag}`;
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
    const octx = { root: ctx.root, registry: { ...registryOptions(flags, ctx.env), stateDir: join(ctx.root, UPLOADS_DIR) } };
    const src = await openSource(from, octx);
    open.push(src);
    let srcRef = from.ref;
    let srcName = from.ref;
    if (from.kind === 'local') {
      const found = await findImage(src as OciLayoutStore, from.ref);
      srcRef = found.descriptor.digest;
      srcName = found.ref ?? from.ref;
    }
    const dst = await openDestination(to, octx);
    open.push(dst);
    const root = await copy(src, srcRef, dst, toRef, opts);
    if (flags.referrers) await copyReferrers(src, refFor(from, srcName), dst, refFor(to, toRef), root, opts);
    return root;
  } finally {
    for (const s of open) if (canClose(s)) await s.close();
  }
}
