/**
 * One validator for every backend (as go-containerregistry's validate): what
 * comes from a store, a registry or a tarball is checked here before it is
 * trusted, and errors name the field that is wrong.
 */
import { SealimgError } from '../errors.js';
import { parseDigest } from './digest.js';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, isImageManifest, isIndex } from './mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Manifest } from './types.js';

/** Manifests larger than this are refused, as the CNCF registry and containerd do. */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

function invalid(where: string, field: string, why: string): SealimgError {
  return new SealimgError('MANIFEST_INVALID', `${where}: ${field} ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkAnnotations(v: unknown, where: string, field: string): void {
  if (v === undefined) return;
  if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw invalid(where, field, 'must be a map of strings');
  }
}

/** Checks one descriptor; `field` is its path in the document, e.g. `layers[2]`. */
export function validateDescriptor(v: unknown, where: string, field: string): Descriptor {
  if (!isObject(v)) throw invalid(where, field, 'must be an object');
  if (typeof v.mediaType !== 'string' || v.mediaType === '') throw invalid(where, `${field}.mediaType`, 'must be a non-empty string');
  try {
    parseDigest(v.digest, `${where}: ${field}.digest`);
  } catch (e) {
    throw new SealimgError('MANIFEST_INVALID', (e as Error).message);
  }
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw invalid(where, `${field}.size`, `must be a non-negative integer, got ${JSON.stringify(v.size)}`);
  }
  checkAnnotations(v.annotations, where, `${field}.annotations`);
  if (v.urls !== undefined && (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string'))) {
    throw invalid(where, `${field}.urls`, 'must be an array of strings');
  }
  if (v.platform !== undefined) {
    const p = v.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string') {
      throw invalid(where, `${field}.platform`, 'must have string os and architecture');
    }
  }
  return v as unknown as Descriptor;
}

export interface ParsedManifest {
  mediaType: string;
  manifest: Manifest;
}

/**
 * Parses manifest bytes. `declared` is the media type the descriptor or the
 * server claimed; when the document carries its own, the two must agree.
 */
export function parseManifest(bytes: Uint8Array, declared: string | undefined, where = 'manifest'): ParsedManifest {
  if (bytes.length > MAX_MANIFEST_SIZE) throw invalid(where, 'document', `is ${bytes.length} bytes, over the ${MAX_MANIFEST_SIZE}-byte limit`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw invalid(where, 'document', `is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(doc)) throw invalid(where, 'document', 'must be a JSON object');
  if (doc.schemaVersion !== 2) throw invalid(where, 'schemaVersion', `must be 2, got ${JSON.stringify(doc.schemaVersion)}`);
  const own = doc.mediaType;
  if (own !== undefined && typeof own !== 'string') throw invalid(where, 'mediaType', 'must be a string');
  if (own !== undefined && declared !== undefined && own !== declared && isManifestLike(declared)) {
    throw invalid(where, 'mediaType', `is "${own}" but it was served as "${declared}"`);
  }
  let mediaType = (own as string | undefined) ?? (isManifestLike(declared) ? declared : undefined);
  if (mediaType === undefined) mediaType = Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST;
  checkAnnotations(doc.annotations, where, 'annotations');
  if (doc.subject !== undefined) validateDescriptor(doc.subject, where, 'subject');

  if (isImageManifest(mediaType)) {
    validateDescriptor(doc.config, where, 'config');
    if (!Array.isArray(doc.layers)) throw invalid(where, 'layers', 'must be an array');
    doc.layers.forEach((l, i) => validateDescriptor(l, where, `layers[${i}]`));
    if (doc.manifests !== undefined) throw invalid(where, 'manifests', 'is not allowed in an image manifest');
    return { mediaType, manifest: doc as unknown as ImageManifest };
  }
  if (isIndex(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid(where, 'manifests', 'must be an array');
    doc.manifests.forEach((m, i) => validateDescriptor(m, where, `manifests[${i}]`));
    if (doc.layers !== undefined || doc.config !== undefined) throw invalid(where, 'layers', 'is not allowed in an index');
    return { mediaType, manifest: doc as unknown as ImageIndex };
  }
  throw new SealimgError('UNSUPPORTED', `${where}: media type "${mediaType}" is not a manifest sealimg knows`, {
    hint: `supported: ${[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(', ')}`,
  });
}

function isManifestLike(t: string | undefined): t is string {
  return isImageManifest(t) || isIndex(t);
}

/** The blobs and manifests a manifest points to, in the order they must exist before it. */
export function childrenOf(parsed: ParsedManifest): Descriptor[] {
  const m = parsed.manifest;
  if ('manifests' in m) return m.manifests;
  return [m.config, ...m.layers];
}

/** Parses an image config, checking only what sealimg relies on. */
export function parseImageConfig(bytes: Uint8Array, where = 'config'): ImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new SealimgError('MANIFEST_INVALID', `${where}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(doc)) throw new SealimgError('MANIFEST_INVALID', `${where}: must be a JSON object`);
  if (doc.config !== undefined && doc.config !== null && !isObject(doc.config)) {
    throw new SealimgError('MANIFEST_INVALID', `${where}: config must be an object`);
  }
  return doc as unknown as ImageConfig;
}
