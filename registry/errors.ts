/**
 * sealimg errors as distribution-spec v1.1.0 error responses: the JSON body
 * `{"errors":[{code,message,detail}]}` with the code and HTTP status the spec
 * (and the CNCF registry, where the spec leaves it open) uses.
 */
import type { ServerResponse } from 'node:http';
import { SealimgError, isSealimgError, type ErrorCode } from '../src/errors.js';

export interface ApiError {
  status: number;
  code: string;
  message: string;
}

const MAP: Partial<Record<ErrorCode, { status: number; code: string }>> = {
  BLOB_UNKNOWN: { status: 404, code: 'BLOB_UNKNOWN' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
  BLOB_UPLOAD_INVALID: { status: 400, code: 'BLOB_UPLOAD_INVALID' },
  RANGE_NOT_SATISFIABLE: { status: 416, code: 'BLOB_UPLOAD_INVALID' },
  INVALID_DIGEST: { status: 400, code: 'DIGEST_INVALID' },
  DIGEST_MISMATCH: { status: 400, code: 'DIGEST_INVALID' },
  SIZE_MISMATCH: { status: 400, code: 'SIZE_INVALID' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' },
  MANIFEST_INVALID: { status: 400, code: 'MANIFEST_INVALID' },
  UNSUPPORTED: { status: 400, code: 'MANIFEST_INVALID' },
  MANIFEST_UNKNOWN: { status: 404, code: 'MANIFEST_UNKNOWN' },
  NAME_INVALID: { status: 400, code: 'NAME_INVALID' },
  NAME_UNKNOWN: { status: 404, code: 'NAME_UNKNOWN' },
  INVALID_REFERENCE: { status: 400, code: 'TAG_INVALID' },
  AUTH_FAILED: { status: 401, code: 'UNAUTHORIZED' },
  DENIED: { status: 403, code: 'DENIED' },
  NOT_IMPLEMENTED: { status: 405, code: 'UNSUPPORTED' },
  NETWORK: { status: 502, code: 'UNKNOWN' },
  REGISTRY_ERROR: { status: 502, code: 'UNKNOWN' },
};

/** What a thrown error becomes on the wire; anything unexpected is a 500 that names no internals. */
export function toApiError(e: unknown): ApiError {
  if (isSealimgError(e)) {
    const m = MAP[e.code];
    if (m) return { ...m, message: e.message };
  }
  return { status: 500, code: 'UNKNOWN', message: 'internal error; see the server log' };
}

export function apiError(status: number, code: string, message: string): SealimgError & { api: ApiError } {
  const err = new SealimgError('REGISTRY_ERROR', message) as SealimgError & { api: ApiError };
  err.api = { status, code, message };
  return err;
}

export function writeError(res: ServerResponse, err: ApiError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ errors: [{ code: err.code, message: err.message, detail: null }] });
  res.writeHead(err.status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
