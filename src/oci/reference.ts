/**
 * Image references in the docker grammar (distribution/reference v2.8, the one
 * docker, skopeo and sealos accept), with docker's defaults:
 * `nginx` -> `docker.io/library/nginx:latest`.
 */
import { SealimgError } from '../errors.js';
import { parseDigest } from './digest.js';

export const DEFAULT_REGISTRY = 'docker.io';
export const DEFAULT_TAG = 'latest';

export interface Reference {
  /** Registry host, with port if any: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string;
  /** Repository path inside the registry: `library/nginx`. */
  repository: string;
  tag?: string;
  digest?: string;
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const PORT = /^[0-9]+$/;
const MAX_NAME = 255;

function bad(input: string, why: string): SealimgError {
  return new SealimgError('INVALID_REFERENCE', `invalid reference "${input}": ${why}`, {
    hint: 'a reference looks like [registry[:port]/]repository[:tag][@sha256:digest], lowercase repository',
  });
}

function isDomain(s: string): boolean {
  let host = s;
  let port: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return false;
    host = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest !== '' && !(rest.startsWith(':') && PORT.test(rest.slice(1)))) return false;
    return /^[0-9a-fA-F:.]+$/.test(host);
  }
  const colon = s.lastIndexOf(':');
  if (colon >= 0) {
    port = s.slice(colon + 1);
    host = s.slice(0, colon);
    if (!PORT.test(port)) return false;
  }
  return host.split('.').every((c) => DOMAIN_COMPONENT.test(c));
}

/** Parses a reference and fills in docker's defaults (registry, library/, latest). */
export function parseReference(input: string): Reference {
  if (typeof input !== 'string' || input === '') throw bad(String(input), 'empty');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch (e) {
      throw bad(input, (e as Error).message);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `tag "${tag}" must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }
  if (rest === '') throw bad(input, 'no repository name');

  let registry = DEFAULT_REGISTRY;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase()) {
      if (!isDomain(first)) throw bad(input, `"${first}" is not a valid registry host`);
      registry = first;
      path = rest.slice(slash + 1);
    }
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DEFAULT_REGISTRY;
  if (registry === DEFAULT_REGISTRY && !path.includes('/')) path = `library/${path}`;

  const components = path.split('/');
  for (const c of components) {
    if (!PATH_COMPONENT.test(c)) {
      throw bad(input, c === '' ? 'empty path component' : `"${c}" must be lowercase letters, digits and separators (. _ __ -)`);
    }
  }
  if (/^[a-f0-9]{64}$/.test(rest)) throw bad(input, 'a 64-character hex string is an image ID, not a repository name');
  if (registry.length + 1 + path.length > MAX_NAME) throw bad(input, `name longer than ${MAX_NAME} characters`);
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return { registry, repository: path, tag, digest };
}

/** `registry/repository` */
export function referenceName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The full normalized form: `docker.io/library/nginx:latest`, `host/repo:tag@sha256:...`. */
export function formatReference(ref: Reference): string {
  return `${referenceName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

export function normalizeReference(input: string): string {
  return formatReference(parseReference(input));
}

/** The short form docker prints: `nginx:latest` for `docker.io/library/nginx:latest`. */
export function familiarName(ref: Reference): string {
  let name = referenceName(ref);
  if (ref.registry === DEFAULT_REGISTRY) {
    name = ref.repository.startsWith('library/') ? ref.repository.slice('library/'.length) : ref.repository;
  }
  return name;
}
