/**
 * What images an archive holds, whatever wrote it: an OCI layout in a tar
 * (sealimg, skopeo oci-archive, docker save since 25, regctl) is read from
 * index.json; a docker-archive (skopeo docker-archive, docker save before 25)
 * from manifest.json, for which an OCI manifest is synthesized from the config
 * and the layer files (OCI rather than Docker schema2 because OCI-layout
 * readers such as skopeo 1.9 list only OCI manifests in index.json). The synthesized manifest is a pure function
 * of the archive's bytes, so loading the same tar twice gives the same digest.
 * This module reads through a small interface, so a seekable file and a
 * one-pass stream share it.
 */
import { SealimgError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST } from '../oci/mediatypes.js';
import { normalizeReference } from '../oci/reference.js';
import { REF_NAME_ANNOTATION, type Descriptor, type ImageIndex } from '../oci/types.js';
import { MAX_MANIFEST_SIZE, parseImageConfig, parseManifest } from '../oci/validate.js';
import { safeName } from './tar.js';

/** The name docker (25+) and containerd put on index.json entries; ref.name then holds only the tag. */
const CONTAINERD_NAME = 'io.containerd.image.name';

export type Compression = 'none' | 'gzip' | 'zstd';

/** Reads the compression from the first bytes of a blob. */
export function sniffCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** `blobs/<alg>/<hex>` to its digest, or undefined for any other name. */
export function digestFromBlobName(name: string): string | undefined {
  const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(name);
  if (!m) return undefined;
  const digest = `${m[1]}:${m[2]}`;
  return (m[1] === 'sha256' ? 64 : 128) === m[2]!.length ? digest : undefined;
}

/** What the catalog needs from an archive. */
export interface ArchiveAccess {
  /** The archive, for messages. */
  where: string;
  has(name: string): boolean;
  /** A small file's bytes (index.json, manifest.json, a config), at most MAX_MANIFEST_SIZE. */
  readSmall(name: string): Promise<Buffer>;
  /** A layer file's digest, size and compression; `diffId` is its uncompressed digest per the config. */
  layer(name: string, diffId: string): Promise<{ digest: string; size: number; compression: Compression }>;
}

export interface ArchiveImage {
  descriptor: Descriptor;
  /** Names as the archive spells them (ref.name, containerd name, RepoTags). */
  rawNames: string[];
  /** The same names as full references, the way the local store keys tags; unparsable ones left out. */
  names: string[];
}

export interface Catalog {
  kind: 'oci' | 'docker';
  images: ArchiveImage[];
  /** Manifests sealimg made up for docker-archive images, by digest. */
  synthesized: Map<string, Buffer>;
  /** Files that are not named blobs/<alg>/<hex>, by the digest they hold (docker-archive configs and layers). */
  paths: Map<string, { name: string; desc: Descriptor }>;
}

function invalid(where: string, what: string): SealimgError {
  return new SealimgError('ARCHIVE_INVALID', `${where}: ${what}`, { hint: 'the archive is not an image archive sealimg can read, or it is damaged' });
}

function normalized(names: string[]): string[] {
  const out: string[] = [];
  for (const n of names) {
    try {
      const full = normalizeReference(n);
      if (!out.includes(full)) out.push(full);
    } catch {
      // Not an image name (e.g. a bare tag some tools write); resolve still matches it raw.
    }
  }
  return out;
}

export async function readCatalog(a: ArchiveAccess): Promise<Catalog> {
  if (a.has('index.json')) return readOciCatalog(a);
  if (a.has('manifest.json')) return readDockerCatalog(a);
  throw invalid(a.where, 'has neither index.json nor manifest.json (not an image archive, or truncated)');
}

async function readOciCatalog(a: ArchiveAccess): Promise<Catalog> {
  if (a.has('oci-layout')) {
    let version: unknown;
    try {
      version = (JSON.parse((await a.readSmall('oci-layout')).toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      throw invalid(a.where, 'oci-layout is not valid JSON');
    }
    if (version !== '1.0.0') throw invalid(a.where, `oci-layout has imageLayoutVersion ${JSON.stringify(version)}, expected "1.0.0"`);
  }
  const bytes = await a.readSmall('index.json');
  const index = parseManifest(bytes, OCI_INDEX, `${a.where}: index.json`).manifest as ImageIndex;
  if (!('manifests' in index)) throw invalid(a.where, 'index.json is not an image index');
  const images: ArchiveImage[] = index.manifests.map((d) => {
    const raw = [d.annotations?.[CONTAINERD_NAME], d.annotations?.[REF_NAME_ANNOTATION]].filter((n): n is string => n !== undefined && n !== '');
    const descriptor: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    if (d.platform) descriptor.platform = d.platform;
    // With a containerd name, ref.name is only its tag: the full name is the one to keep.
    const names = normalized(d.annotations?.[CONTAINERD_NAME] ? [d.annotations[CONTAINERD_NAME]] : raw);
    return { descriptor, rawNames: raw, names };
  });
  return { kind: 'oci', images, synthesized: new Map(), paths: new Map() };
}

interface DockerItem {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

async function readDockerCatalog(a: ArchiveAccess): Promise<Catalog> {
  let items: unknown;
  try {
    items = JSON.parse((await a.readSmall('manifest.json')).toString('utf8'));
  } catch (e) {
    if (e instanceof SealimgError) throw e;
    throw invalid(a.where, `manifest.json is not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(items)) throw invalid(a.where, 'manifest.json must be an array of images');
  const catalog: Catalog = { kind: 'docker', images: [], synthesized: new Map(), paths: new Map() };
  for (const [i, raw] of items.entries()) {
    const field = `manifest.json[${i}]`;
    const item = raw as DockerItem;
    if (typeof item !== 'object' || item === null || typeof item.Config !== 'string' || !Array.isArray(item.Layers) || item.Layers.some((l) => typeof l !== 'string')) {
      throw invalid(a.where, `${field} needs a Config string and a Layers array of strings`);
    }
    if (item.RepoTags != null && (!Array.isArray(item.RepoTags) || item.RepoTags.some((t) => typeof t !== 'string'))) {
      throw invalid(a.where, `${field}.RepoTags must be an array of strings`);
    }
    const configName = safeName(item.Config, a.where);
    if (!a.has(configName)) throw invalid(a.where, `${field}.Config names "${item.Config}", which the archive does not contain`);
    const configBytes = await a.readSmall(configName);
    const config = { mediaType: OCI_CONFIG, digest: digestOf(configBytes), size: configBytes.length };
    const parsed = parseImageConfig(configBytes, `${a.where}: ${item.Config}`);
    const diffIds = parsed.rootfs?.diff_ids;
    if (!Array.isArray(diffIds) || diffIds.length !== item.Layers.length) {
      throw invalid(a.where, `${field} lists ${item.Layers.length} layers but its config has ${Array.isArray(diffIds) ? diffIds.length : 'no'} rootfs.diff_ids`);
    }
    catalog.paths.set(config.digest, { name: configName, desc: config });
    const layers: Descriptor[] = [];
    for (const [j, l] of item.Layers.entries()) {
      const name = safeName(l, a.where);
      if (!a.has(name)) throw invalid(a.where, `${field}.Layers[${j}] names "${l}", which the archive does not contain`);
      const info = await a.layer(name, diffIds[j]!);
      const mediaType = info.compression === 'gzip' ? OCI_LAYER_GZIP : info.compression === 'zstd' ? OCI_LAYER_ZSTD : OCI_LAYER;
      const desc = { mediaType, digest: info.digest, size: info.size };
      layers.push(desc);
      if (digestFromBlobName(name) !== info.digest) catalog.paths.set(info.digest, { name, desc });
    }
    // Field order fixed, no timestamps: the same archive always gives the same manifest digest.
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
    if (manifest.length > MAX_MANIFEST_SIZE) throw invalid(a.where, `${field} has too many layers`);
    const descriptor = { mediaType: OCI_MANIFEST, digest: digestOf(manifest), size: manifest.length };
    catalog.synthesized.set(descriptor.digest, manifest);
    const rawNames = item.RepoTags ?? [];
    catalog.images.push({ descriptor, rawNames, names: normalized(rawNames) });
  }
  return catalog;
}

/** Finds the image `ref` names: '' for the only one, a digest, a name as written or normalized. */
export function findInCatalog(c: Catalog, ref: string, where: string): ArchiveImage | undefined {
  if (ref === '') {
    if (c.images.length === 1) return c.images[0];
    throw new SealimgError('MANIFEST_UNKNOWN', `${where} holds ${c.images.length} images; name one`, { hint: 'add :NAME to the location' });
  }
  const byDigest = c.images.find((i) => i.descriptor.digest === ref);
  if (byDigest) return byDigest;
  const exact = c.images.filter((i) => i.rawNames.includes(ref));
  if (exact.length > 0) return exact[exact.length - 1];
  let full: string | undefined;
  try {
    full = normalizeReference(ref);
  } catch {
    return undefined;
  }
  return c.images.find((i) => i.names.includes(full!));
}
