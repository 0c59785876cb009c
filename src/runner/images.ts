/**
 * The images a run names, made ready in the local store: a name already there
 * is used as is, a tarball path is loaded, anything else is pulled. A path is
 * a path only when it exists as a file, so `run ./k8s.tar` never goes to a
 * registry (sealos' issue #5396), and an image name is never read as a file.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadArchive } from '../content/archive-load.js';
import { copy } from '../content/copy.js';
import { describeImage } from '../content/describe.js';
import { findImage } from '../content/local.js';
import { openSource, parseLocation } from '../content/locations.js';
import type { OciLayoutStore } from '../content/oci-layout.js';
import type { RegistryOptions } from '../content/registry-client.js';
import { canClose } from '../content/store.js';
import { SealimgError, isSealimgError } from '../errors.js';
import type { Descriptor, ImageConfig } from '../oci/types.js';

export type ImageType = 'rootfs' | 'patch' | 'application';

export interface RunImage {
  /** As the user wrote it (the Clusterfile keeps this form). */
  spec: string;
  /** The name it has in the local store. */
  name: string;
  descriptor: Descriptor;
  config: ImageConfig;
  type: ImageType;
  labels: Record<string, string>;
}

/** sealos' label: rootfs, patch, or application (the default). */
export function imageType(labels: Record<string, string>): ImageType {
  const t = labels['sealos.io.type'];
  return t === 'rootfs' || t === 'patch' ? t : 'application';
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

export interface ResolveImagesOptions {
  root: string;
  registry?: RegistryOptions;
  signal?: AbortSignal;
  say?: (line: string) => void;
}

export async function resolveImages(store: OciLayoutStore, specs: string[], opts: ResolveImagesOptions): Promise<RunImage[]> {
  const out: RunImage[] = [];
  for (const spec of specs) {
    let name = spec;
    let descriptor: Descriptor;
    if (spec.includes('/') || spec.endsWith('.tar') || spec.endsWith('.tar.gz') || spec.endsWith('.tgz') ? await isFile(spec) : false) {
      opts.say?.(`Loading ${spec}`);
      const loaded = await loadArchive(spec, store, { signal: opts.signal, spoolDir: join(store.root, '.ingest') });
      const first = loaded.find((l) => l.names.length > 0);
      if (!first || loaded.length !== 1) {
        throw new SealimgError('USAGE', `${spec} holds ${loaded.length} images; run takes a tarball of one named image`, { hint: "'sealimg load' it, then run the images by name" });
      }
      name = first.names[0]!;
      descriptor = first.descriptor;
    } else {
      try {
        const found = await findImage(store, spec);
        descriptor = found.descriptor;
        name = found.ref ?? spec;
      } catch (e) {
        if (!isSealimgError(e, 'MANIFEST_UNKNOWN')) throw e;
        const loc = parseLocation(spec, 'registry');
        opts.say?.(`Pulling ${loc.ref}`);
        const src = await openSource(loc, { root: opts.root, registry: opts.registry });
        try {
          descriptor = await copy(src, loc.ref, store, loc.ref, { signal: opts.signal, rollback: true });
        } finally {
          if (canClose(src)) await src.close();
        }
        name = loc.ref;
      }
    }
    const info = await describeImage(store, descriptor, opts.signal);
    if (!info.config) throw new SealimgError('UNSUPPORTED', `${spec} has no image config (is it an artifact?)`);
    const labels = info.config.config?.Labels ?? {};
    out.push({ spec, name, descriptor, config: info.config, type: imageType(labels), labels });
  }
  return out;
}
