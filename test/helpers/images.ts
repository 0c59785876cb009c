/**
 * Builds small images straight into a store, for tests that need an image
 * before `sealimg build` exists or without running it. Layers are real tars.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { Store } from '../../src/content/store.js';
import { digestOf } from '../../src/oci/digest.js';
import { OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from '../../src/oci/types.js';

/** A tar entry that is not a plain file. */
export type TarSpecial = { type: 'dir' | 'symlink' | 'link'; target?: string; mode?: number };

/** A ustar archive, built by hand so tests need no tar tool and can hold hostile entries. */
export function tarOf(files: Record<string, string | Buffer | TarSpecial>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const special = typeof content === 'object' && !Buffer.isBuffer(content) ? content : undefined;
    const data = special ? Buffer.alloc(0) : Buffer.isBuffer(content) ? content : Buffer.from(content as string);
    const h = Buffer.alloc(512);
    h.write(name, 0, 100);
    const mode = special?.mode ?? (special?.type === 'dir' ? 0o755 : 0o644);
    h.write(`${mode.toString(8).padStart(7, '0')}\0`, 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write({ dir: '5', symlink: '2', link: '1' }[special?.type ?? 'file' as 'dir'] ?? '0', 156);
    if (special?.target) h.write(special.target, 157, 100);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export async function pushBytes(store: Store, mediaType: string, bytes: Buffer): Promise<Descriptor> {
  const desc = { mediaType, digest: digestOf(bytes), size: bytes.length };
  if (!(await store.exists(desc))) await store.push(desc, Readable.from([bytes]));
  return desc;
}

export interface TestImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * An image whose layers each hold one file. `layers` gives file contents;
 * shared contents give shared layers (same digest), as real images do.
 */
export async function makeImage(
  store: Store,
  opts: { layers?: Array<string | Buffer>; tag?: string; platform?: Platform; labels?: Record<string, string> } = {},
): Promise<TestImage> {
  const contents = opts.layers ?? [randomBytes(64)];
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const [i, c] of contents.entries()) {
    const tar = tarOf({ [`file${i}`]: c });
    diffIds.push(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    layers.push(await pushBytes(store, OCI_LAYER_GZIP, gzipSync(tar)));
  }
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const cfg: ImageConfig = {
    created: '2026-01-01T00:00:00Z',
    architecture: platform.architecture,
    os: platform.os,
    config: { Labels: opts.labels ?? {} },
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
  const config = await pushBytes(store, OCI_CONFIG, Buffer.from(JSON.stringify(cfg)));
  const m: ImageManifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers };
  const manifest = await pushBytes(store, OCI_MANIFEST, Buffer.from(JSON.stringify(m)));
  if (opts.tag) await store.tag(manifest, opts.tag);
  return { manifest, config, layers };
}

/** A multi-arch index over one image per platform. */
export async function makeIndex(store: Store, platforms: Platform[], tag?: string): Promise<{ index: Descriptor; images: TestImage[] }> {
  const images: TestImage[] = [];
  for (const p of platforms) images.push(await makeImage(store, { platform: p }));
  const doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: images.map((im, i) => ({ ...im.manifest, platform: platforms[i] })) };
  const index = await pushBytes(store, OCI_INDEX, Buffer.from(JSON.stringify(doc)));
  if (tag) await store.tag(index, tag);
  return { index, images };
}
