/**
 * Where saved registry logins live, and reading and writing them. The files
 * are docker's config.json and the containers auth.json (same `auths` shape):
 *   { "auths": { "HOST": { "auth": base64("user:pass"), "identitytoken"?: "..." } },
 *     "credHelpers": { "HOST": "NAME" }, "credsStore": "NAME" }
 * Looked up in the order podman and skopeo use, then docker's: --authfile,
 * $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
 * $DOCKER_CONFIG/config.json, ~/.docker/config.json. Files are written 0600.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SealimgError, errnoCode } from '../errors.js';
import { writeFileAtomic } from '../content/fsutil.js';
import { authKey, hostOfKey, type Credentials } from './credentials.js';
import { helperErase, helperGet, helperStore } from './credhelper.js';

export interface AuthFileOptions {
  /** --authfile: when given, the only file read or written. */
  authFile?: string;
  env: NodeJS.ProcessEnv;
}

interface AuthEntry {
  auth?: string;
  identitytoken?: string;
}

interface AuthFileDoc {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [other: string]: unknown;
}

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || homedir();
}

function dockerConfig(env: NodeJS.ProcessEnv): string {
  return env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(home(env), '.docker', 'config.json');
}

/** Every file credentials are read from, first match wins. */
export function readPaths(opts: AuthFileOptions): string[] {
  if (opts.authFile) return [opts.authFile];
  const { env } = opts;
  const paths: string[] = [];
  if (env.REGISTRY_AUTH_FILE) paths.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) paths.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  if (env.DOCKER_CONFIG) paths.push(join(env.DOCKER_CONFIG, 'config.json'));
  paths.push(join(home(env), '.docker', 'config.json'));
  return [...new Set(paths)];
}

/** The file `login` writes: the first of --authfile, $REGISTRY_AUTH_FILE, the containers file, docker's. */
export function writePath(opts: AuthFileOptions): string {
  if (opts.authFile) return opts.authFile;
  if (opts.env.REGISTRY_AUTH_FILE) return opts.env.REGISTRY_AUTH_FILE;
  if (opts.env.XDG_RUNTIME_DIR) return join(opts.env.XDG_RUNTIME_DIR, 'containers', 'auth.json');
  return dockerConfig(opts.env);
}

async function readDoc(path: string): Promise<AuthFileDoc | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw new SealimgError('AUTH_FAILED', `${path}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  if (text.trim() === '') return {};
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new SealimgError('AUTH_FAILED', `${path}: not valid JSON (${(e as Error).message})`, { hint: 'fix or remove the file' });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new SealimgError('AUTH_FAILED', `${path}: must be a JSON object`);
  return doc as AuthFileDoc;
}

function entryFor<T>(map: Record<string, T> | undefined, host: string): [string, T] | undefined {
  if (!map) return undefined;
  if (host in map) return [host, map[host]!];
  for (const [k, v] of Object.entries(map)) if (hostOfKey(k) === host) return [k, v];
  return undefined;
}

function decodeEntry(entry: AuthEntry, path: string, key: string): Credentials | undefined {
  if (entry.identitytoken) return { username: '', identityToken: entry.identitytoken };
  if (!entry.auth) return undefined;
  const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
  const colon = plain.indexOf(':');
  if (colon < 0) throw new SealimgError('AUTH_FAILED', `${path}: auths["${key}"].auth is not base64 of "user:password"`);
  return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
}

/** The saved credentials for `host`, or undefined for anonymous access. */
export async function findCredentials(host: string, opts: AuthFileOptions): Promise<Credentials | undefined> {
  for (const path of readPaths(opts)) {
    const doc = await readDoc(path);
    if (!doc) continue;
    const helper = entryFor(doc.credHelpers, host);
    if (helper) {
      const got = await helperGet(helper[1], authKey(host));
      if (got) return got;
    }
    const entry = entryFor(doc.auths, host);
    const creds = entry ? decodeEntry(entry[1], path, entry[0]) : undefined;
    if (creds) return creds;
    if (doc.credsStore && (entry || !helper)) {
      const got = await helperGet(doc.credsStore, authKey(host));
      if (got) return got;
    }
  }
  return undefined;
}

/** Saves a login; returns where it went (a file path or a helper name) for the message. */
export async function saveCredentials(host: string, creds: Credentials, opts: AuthFileOptions): Promise<string> {
  const path = writePath(opts);
  const doc = (await readDoc(path)) ?? {};
  const helper = entryFor(doc.credHelpers, host)?.[1] ?? doc.credsStore;
  const key = authKey(host);
  doc.auths ??= {};
  const existing = entryFor(doc.auths, host);
  if (existing) delete doc.auths[existing[0]];
  if (helper) {
    await helperStore(helper, key, creds);
    // docker keeps an empty entry so `docker logout` and listings know the host.
    doc.auths[key] = {};
  } else {
    doc.auths[key] = creds.identityToken !== undefined
      ? { auth: '', identitytoken: creds.identityToken }
      : { auth: Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64') };
  }
  await writeFileAtomic(path, `${JSON.stringify(doc, null, '\t')}\n`, 0o600);
  return helper ? `docker-credential-${helper}` : path;
}

/** Removes a login from the file `login` writes (and its helper); false when there was none. */
export async function removeCredentials(host: string, opts: AuthFileOptions): Promise<boolean> {
  const path = writePath(opts);
  const doc = await readDoc(path);
  if (!doc) return false;
  let removed = false;
  const helper = entryFor(doc.credHelpers, host)?.[1] ?? doc.credsStore;
  if (helper) removed = await helperErase(helper, authKey(host));
  const entry = entryFor(doc.auths, host);
  if (entry) {
    delete doc.auths![entry[0]];
    removed = true;
    await writeFileAtomic(path, `${JSON.stringify(doc, null, '\t')}\n`, 0o600);
  }
  return removed;
}
