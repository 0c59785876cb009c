/**
 * The local image store: an OCI layout whose tags are full normalized
 * references, so skopeo (`oci:ROOT:docker.io/library/nginx:latest`) and umoci
 * read it as is. This module owns where it is and how names find images in it.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SealimgError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { normalizeReference } from '../oci/reference.js';
import type { Descriptor } from '../oci/types.js';
import { OciLayoutStore } from './oci-layout.js';

/** `$SEALIMG_ROOT`, else /var/lib/sealimg for root, else ~/.local/share/sealimg. */
export function defaultRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SEALIMG_ROOT) return env.SEALIMG_ROOT;
  if (process.getuid?.() === 0) return '/var/lib/sealimg';
  return join(env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'sealimg');
}

export function openLocalStore(root: string): Promise<OciLayoutStore> {
  return OciLayoutStore.open(root, { create: true });
}

export interface FoundImage {
  /** The tag it was found by, when it was found by one. */
  ref?: string;
  descriptor: Descriptor;
}

/**
 * Finds an image by what a user types: a name (`nginx`, normalized), a full
 * digest, or an image ID prefix as `images` prints it (as docker accepts).
 */
export async function findImage(store: OciLayoutStore, name: string): Promise<FoundImage> {
  if (isDigest(name)) return { descriptor: await store.resolve(name) };
  const tags = await store.list();
  const idPrefix = /^(sha256:)?([a-f0-9]{4,64})$/.exec(name)?.[2];
  if (idPrefix) {
    const hits = new Map(tags.filter((t) => t.descriptor.digest.startsWith(`sha256:${idPrefix}`)).map((t) => [t.descriptor.digest, t]));
    if (hits.size === 1) return { descriptor: [...hits.values()][0]!.descriptor };
    if (hits.size > 1) throw new SealimgError('USAGE', `image ID ${name} is ambiguous: it matches ${hits.size} images`, { hint: 'give more characters' });
  }
  const ref = normalizeReference(name);
  const hit = tags.find((t) => t.ref === ref);
  if (!hit) {
    throw new SealimgError('MANIFEST_UNKNOWN', `${name}: no such image in the local store (${store.root})`, {
      hint: "'sealimg images' lists what is there; 'sealimg pull' fetches an image",
    });
  }
  return { ref, descriptor: hit.descriptor };
}
