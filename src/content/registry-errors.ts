/**
 * Turns a registry's error response into a SealimgError. The body is the
 * distribution error envelope (`{"errors":[{"code","message","detail"}]}`,
 * distribution-spec v1.1.0 "Error Codes"); the status decides when it is absent.
 */
import { SealimgError, type ErrorCode } from '../errors.js';
import { readText, type Response } from './registry-client.js';

const BY_REGISTRY_CODE: Record<string, ErrorCode> = {
  MANIFEST_UNKNOWN: 'MANIFEST_UNKNOWN',
  BLOB_UNKNOWN: 'BLOB_UNKNOWN',
  NAME_UNKNOWN: 'NAME_UNKNOWN',
  NAME_INVALID: 'INVALID_REFERENCE',
  TAG_INVALID: 'INVALID_REFERENCE',
  DIGEST_INVALID: 'DIGEST_MISMATCH',
  SIZE_INVALID: 'SIZE_MISMATCH',
  MANIFEST_INVALID: 'MANIFEST_INVALID',
  MANIFEST_BLOB_UNKNOWN: 'MANIFEST_INVALID',
  UNAUTHORIZED: 'AUTH_FAILED',
  DENIED: 'DENIED',
  UNSUPPORTED: 'UNSUPPORTED',
  TOOMANYREQUESTS: 'REGISTRY_ERROR',
};

/** `what` names the object for the message: "manifest host/repo:tag", "blob sha256:...". */
export async function responseError(res: Response, what: string, fallback404: ErrorCode = 'NAME_UNKNOWN'): Promise<SealimgError> {
  let text = '';
  try {
    text = res.statusCode === 204 ? '' : await readText(res, 64 * 1024);
  } catch {
    // A body we cannot read says no more than the status.
  }
  let regCode: string | undefined;
  let message: string | undefined;
  try {
    const first = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors?.[0];
    regCode = first?.code;
    message = first?.message;
  } catch {
    // Not the envelope (a proxy's HTML page, or nothing).
  }
  const status = res.statusCode;
  let code: ErrorCode = (regCode && BY_REGISTRY_CODE[regCode]) || 'REGISTRY_ERROR';
  if (!regCode || !BY_REGISTRY_CODE[regCode]) {
    if (status === 404) code = fallback404;
    else if (status === 401) code = 'AUTH_FAILED';
    else if (status === 403) code = 'DENIED';
  }
  const plain: Record<number, string> = { 401: 'not authorized', 403: 'access denied', 404: 'not found' };
  const detail = message ?? (text.trim().slice(0, 200) || plain[status] || 'failed');
  let hint: string | undefined;
  if (code === 'AUTH_FAILED') hint = "run 'sealimg login HOST' with an account that may access it";
  else if (code === 'DENIED') hint = 'the account has no permission for this repository';
  return new SealimgError(code, `${what}: ${detail} (HTTP ${status}${regCode ? ` ${regCode}` : ''})`, { hint });
}
