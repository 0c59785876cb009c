/**
 * The one error type sealimg throws on purpose. `code` is stable, so scripts
 * and tests match on it; `hint` tells a user what to try next.
 */

/** Every error kind, in one flat list (as regclient's types/errs). */
export type ErrorCode =
  | 'USAGE'
  | 'INVALID_REFERENCE'
  | 'INVALID_DIGEST'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'BLOB_UNKNOWN'
  | 'NAME_UNKNOWN'
  | 'NAME_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'RANGE_NOT_SATISFIABLE'
  | 'UNSUPPORTED'
  | 'STORE_CORRUPT'
  | 'STORE_LOCKED'
  | 'IMAGE_IN_USE'
  | 'AUTH_FAILED'
  | 'DENIED'
  | 'NETWORK'
  | 'REGISTRY_ERROR'
  | 'ARCHIVE_INVALID'
  | 'SEALFILE_SYNTAX'
  | 'BUILD_FAILED'
  | 'CLUSTERFILE_INVALID'
  | 'TEMPLATE_INVALID'
  | 'SSH_FAILED'
  | 'HOST_STEP_FAILED'
  | 'NOT_IMPLEMENTED'
  | 'ABORTED'
  | 'IO';

export class SealimgError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SealimgError';
    this.code = code;
    this.hint = opts.hint;
  }
}

export function isSealimgError(e: unknown, code?: ErrorCode): e is SealimgError {
  return e instanceof SealimgError && (code === undefined || e.code === code);
}

/** Node's fs errors carry a string `code`; this reads it without casts at every call site. */
export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string'
    ? (e as { code: string }).code
    : undefined;
}
