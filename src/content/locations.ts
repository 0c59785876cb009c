/**
 * Where an image lives, from the string a user types: one table of schemes,
 * each a factory for a store. `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`,
 * `docker-archive:FILE[:REF]`, `distribution:DIR[:REPO:TAG]`, `docker://HOST/REPO:TAG`, `local:NAME`, and a
 * bare name, which means the local store or a registry depending on the command.
 */
import { SealimgError } from '../errors.js';
import { normalizeReference } from '../oci/reference.js';
import { ArchiveReader } from './archive-reader.js';
import { ArchiveWriter } from './archive-writer.js';
import { OciLayoutStore } from './oci-layout.js';
import type { RegistryOptions } from './registry-client.js';
import type { ReadOnlyStore, Store } from './store.js';

export type LocationKind = 'local' | 'oci' | 'oci-archive' | 'docker-archive' | 'registry' | 'distribution';

export interface Location {
  kind: LocationKind;
  /** The reference inside the store: a tag, a normalized name, or '' for "the only one". */
  ref: string;
  /** What the user typed, for messages. */
  spec: string;
  /** Path of a layout or archive; undefined for the local store and registries. */
  path?: string;
}

/** What opening a location needs from the command line. */
export interface OpenContext {
  /** Root of the local store. */
  root: string;
  /** Transport and credential settings for registries (--plain-http, --authfile, ...). */
  registry?: RegistryOptions;
}

export interface StoreFactory {
  /** Opens the store as a source. */
  source(loc: Location, ctx: OpenContext): Promise<ReadOnlyStore>;
  /** Opens (creating if needed) the store as a destination. */
  destination(loc: Location, ctx: OpenContext): Promise<Store>;
}

function splitPathRef(rest: string): { path: string; ref: string } {
  const colon = rest.indexOf(':');
  return colon < 0 ? { path: rest, ref: '' } : { path: rest.slice(0, colon), ref: rest.slice(colon + 1) };
}

/** The one table of factories: a new place to keep images is one new entry. */
export const factories: Record<LocationKind, StoreFactory> = {
  local: {
    source: (_loc, ctx) => OciLayoutStore.open(ctx.root, { create: true }),
    destination: (_loc, ctx) => OciLayoutStore.open(ctx.root, { create: true }),
  },
  oci: {
    source: (loc) => OciLayoutStore.open(loc.path!),
    destination: (loc) => OciLayoutStore.open(loc.path!, { create: true }),
  },
  'oci-archive': {
    source: (loc) => ArchiveReader.open(loc.path!),
    destination: (loc) => ArchiveWriter.create(loc.path!, { format: 'oci-archive' }),
  },
  'docker-archive': {
    source: (loc) => ArchiveReader.open(loc.path!),
    destination: (loc) => ArchiveWriter.create(loc.path!, { format: 'docker-archive' }),
  },
  // A CNCF registry storage directory (`distribution:DIR:REPO:TAG`); the store lives with the registry server.
  distribution: {
    source: async (loc) => (await import('./distribution/store.js')).DistributionStore.open(loc.path!),
    destination: async (loc) => (await import('./distribution/store.js')).DistributionStore.open(loc.path!, { create: true }),
  },
  // Loaded on demand: only commands that reach a registry pay for the HTTP stack.
  registry: {
    source: async (loc, ctx) => (await import('./remote.js')).RemoteStore.open(loc.ref, ctx.registry ?? {}, 'pull'),
    destination: async (loc, ctx) => (await import('./remote.js')).RemoteStore.open(loc.ref, ctx.registry ?? {}, 'push'),
  },
};

/**
 * Parses a location. `bare` says what a name without a scheme means for this
 * command: the local store (tag, rmi, push's source) or a registry (pull's source).
 */
export function parseLocation(spec: string, bare: 'local' | 'registry'): Location {
  for (const kind of ['oci-archive', 'docker-archive', 'oci', 'distribution'] as const) {
    if (spec.startsWith(`${kind}:`)) {
      const { path, ref } = splitPathRef(spec.slice(kind.length + 1));
      if (path === '') throw new SealimgError('USAGE', `${spec}: missing the path after "${kind}:"`);
      return { kind, path, ref, spec };
    }
  }
  if (spec.startsWith('docker://')) return { kind: 'registry', ref: normalizeReference(spec.slice('docker://'.length)), spec };
  if (spec.startsWith('local:')) return { kind: 'local', ref: spec.slice('local:'.length), spec };
  return { kind: bare, ref: bare === 'registry' ? normalizeReference(spec) : spec, spec };
}

export function openSource(loc: Location, ctx: OpenContext): Promise<ReadOnlyStore> {
  return factories[loc.kind].source(loc, ctx);
}

export function openDestination(loc: Location, ctx: OpenContext): Promise<Store> {
  return factories[loc.kind].destination(loc, ctx);
}
