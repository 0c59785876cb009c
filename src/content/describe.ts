/**
 * Reads what people ask about an image (its config, created time, size,
 * platforms) from any store, without knowing which store it is.
 */
import { isImageManifest, isIndex } from '../oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Manifest } from '../oci/types.js';
import { parseImageConfig, parseManifest } from '../oci/validate.js';
import { fetchAll, type ReadOnlyStore } from './store.js';

export interface ImageSummary {
  descriptor: Descriptor;
  manifest: Manifest;
  /** The config of an image manifest; for an index, of its first image. */
  config?: ImageConfig;
  /** Bytes of every distinct blob and manifest the image reaches. */
  size: number;
  platforms: string[];
}

export async function describeImage(store: ReadOnlyStore, desc: Descriptor, signal?: AbortSignal): Promise<ImageSummary> {
  const seen = new Map<string, number>();
  let config: ImageConfig | undefined;
  const platforms: string[] = [];
  let top: Manifest | undefined;
  const visit = async (d: Descriptor): Promise<void> => {
    if (seen.has(d.digest)) return;
    seen.set(d.digest, d.size);
    if (!isImageManifest(d.mediaType) && !isIndex(d.mediaType)) return;
    const parsed = parseManifest(await fetchAll(store, d, signal), d.mediaType, d.digest);
    top ??= parsed.manifest;
    if ('manifests' in parsed.manifest) {
      for (const m of (parsed.manifest as ImageIndex).manifests) {
        if (m.platform) platforms.push(`${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}`);
        await visit(m);
      }
      return;
    }
    const image = parsed.manifest as ImageManifest;
    seen.set(image.config.digest, image.config.size);
    for (const l of image.layers) seen.set(l.digest, l.size);
    if (!config) {
      config = parseImageConfig(await fetchAll(store, image.config, signal), image.config.digest);
      if (isImageManifest(desc.mediaType)) platforms.push(`${config.os}/${config.architecture}`);
    }
  };
  await visit(desc);
  let size = 0;
  for (const s of seen.values()) size += s;
  return { descriptor: desc, manifest: top!, config, size, platforms };
}
