/**
 * Images the builder reads from the local store (FROM, COPY --from, merge):
 * found by name, the wanted platform picked out of an index, manifest and
 * config parsed; writing small JSON documents; and the platform helpers the
 * build commands share.
 */
import { arch as hostArch } from 'node:os';
import { Readable } from 'node:stream';
import { findImage } from '../content/local.js';
import type { OciLayoutStore } from '../content/oci-layout.js';
import { fetchAll } from '../content/store.js';
import { SealimgError, isSealimgError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { isIndex } from '../oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform } from '../oci/types.js';
import { parseImageConfig, parseManifest } from '../oci/validate.js';

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64' };

export function hostPlatform(): Platform {
  return { os: 'linux', architecture: GOARCH[hostArch()] ?? hostArch() };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

export function parsePlatformText(s: string, what = '--platform'): Platform {
  const [os, architecture, variant, extra] = s.split('/');
  if (!os || !architecture || extra !== undefined) throw new SealimgError('USAGE', `${what} "${s}" must be OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

export interface BaseImage {
  ref: string;
  manifestDesc: Descriptor;
  manifest: ImageManifest;
  config: ImageConfig;
}

/** An image from the local store, picking `platform` out of an index. */
export async function loadImage(store: OciLayoutStore, name: string, platform: Platform | undefined, where: string): Promise<BaseImage> {
  let found;
  try {
    found = await findImage(store, name);
  } catch (e) {
    if (isSealimgError(e, 'MANIFEST_UNKNOWN') || isSealimgError(e, 'INVALID_REFERENCE')) {
      throw new SealimgError(e.code, `${where}: ${e.message}`, { hint: e.hint });
    }
    throw e;
  }
  let desc = found.descriptor;
  let parsed = parseManifest(await fetchAll(store, desc), desc.mediaType, desc.digest);
  if (isIndex(parsed.mediaType)) {
    const index = parsed.manifest as ImageIndex;
    const want = platform ?? hostPlatform();
    const hit = index.manifests.find((m) => m.platform?.os === want.os && m.platform.architecture === want.architecture && (!want.variant || m.platform.variant === want.variant));
    if (!hit) {
      throw new SealimgError('MANIFEST_UNKNOWN', `${where}: ${name} has no image for ${formatPlatform(want)}`, {
        hint: `it has: ${index.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ')}`,
      });
    }
    desc = hit;
    parsed = parseManifest(await fetchAll(store, desc), desc.mediaType, desc.digest);
  }
  if (isIndex(parsed.mediaType)) throw new SealimgError('MANIFEST_INVALID', `${where}: ${name}: an index inside an index is not supported`);
  const manifest = parsed.manifest as ImageManifest;
  const config = parseImageConfig(await fetchAll(store, manifest.config), manifest.config.digest);
  return { ref: found.ref ?? name, manifestDesc: desc, manifest, config };
}

/** Stores a JSON document (config, manifest) unless it is there; what it adds is recorded in `added`. */
export async function pushJson(store: OciLayoutStore, mediaType: string, doc: unknown, added: Descriptor[]): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const desc: Descriptor = { mediaType, digest: digestOf(bytes), size: bytes.length };
  if (!(await store.exists(desc))) {
    await store.push(desc, Readable.from([bytes]));
    added.push(desc);
  }
  return desc;
}

