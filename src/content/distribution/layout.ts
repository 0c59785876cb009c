/**
 * Where things live in the CNCF distribution filesystem layout (the one the
 * `docker-registry` binary keeps under its rootdirectory), and the grammar of
 * the names that become path components. Pure: no I/O here.
 *
 *   docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data
 *   docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
 *   docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
 *   docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
 *   docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
 *   docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
 *
 * sealimg adds two things the CNCF registry never reads: `_referrers/` beside
 * `_manifests/` (it skips every `_`-directory it does not know) and `_sealimg/`
 * under v2/ for blob ingest temp files.
 */
import { join } from 'node:path';
import { SealimgError } from '../../errors.js';
import { parseDigest } from '../../oci/digest.js';

/** distribution-spec v1.1.0, "Pulling manifests": the name and tag grammars. */
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** The CNCF registry refuses longer names; so do we, so either can serve the directory. */
export const MAX_NAME_LENGTH = 255;
const UPLOAD_ID = /^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/;

export function isRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

export function checkRepositoryName(name: string): void {
  if (!isRepositoryName(name)) {
    throw new SealimgError('NAME_INVALID', `invalid repository name "${name.slice(0, 300)}"`, {
      hint: 'lowercase path components of [a-z0-9] joined by . _ __ or -, separated by /, at most 255 characters',
    });
  }
}

export function isTag(ref: string): boolean {
  return TAG.test(ref);
}

export function checkTag(tag: string): void {
  if (!TAG.test(tag)) {
    throw new SealimgError('INVALID_REFERENCE', `invalid tag "${tag.slice(0, 200)}": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`);
  }
}

export function checkUploadId(id: string): void {
  if (!UPLOAD_ID.test(id)) throw new SealimgError('BLOB_UPLOAD_UNKNOWN', `upload "${id.slice(0, 100)}" is unknown`);
}

/** Paths under one storage root. Every method checks its inputs, so no caller can escape the root. */
export class Layout {
  readonly v2: string;
  constructor(readonly root: string) {
    this.v2 = join(root, 'docker', 'registry', 'v2');
  }

  get blobsDir(): string {
    return join(this.v2, 'blobs');
  }
  get repositoriesDir(): string {
    return join(this.v2, 'repositories');
  }
  /** Temp files for blobs stored without an upload session (Store.push). */
  get ingestDir(): string {
    return join(this.v2, '_sealimg', 'ingest');
  }

  blobDir(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.blobsDir, algorithm, hex.slice(0, 2), hex);
  }
  blobData(digest: string): string {
    return join(this.blobDir(digest), 'data');
  }

  repository(name: string): string {
    checkRepositoryName(name);
    return join(this.repositoriesDir, name);
  }
  layerLink(name: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.repository(name), '_layers', algorithm, hex, 'link');
  }
  revisionLink(name: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.repository(name), '_manifests', 'revisions', algorithm, hex, 'link');
  }
  tagsDir(name: string): string {
    return join(this.repository(name), '_manifests', 'tags');
  }
  tagDir(name: string, tag: string): string {
    checkTag(tag);
    return join(this.tagsDir(name), tag);
  }
  tagCurrentLink(name: string, tag: string): string {
    return join(this.tagDir(name, tag), 'current', 'link');
  }
  tagIndexLink(name: string, tag: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.tagDir(name, tag), 'index', algorithm, hex, 'link');
  }
  /** The referrers of `subject`: one link per referring manifest. */
  referrersDir(name: string, subject: string): string {
    const { algorithm, hex } = parseDigest(subject);
    return join(this.repository(name), '_referrers', algorithm, hex);
  }
  referrerLink(name: string, subject: string, digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.referrersDir(name, subject), algorithm, hex, 'link');
  }
  uploadsDir(name: string): string {
    return join(this.repository(name), '_uploads');
  }
  uploadDir(name: string, id: string): string {
    checkUploadId(id);
    return join(this.uploadsDir(name), id);
  }
}
