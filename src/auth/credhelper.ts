/**
 * docker credential helpers (`docker-credential-NAME get|store|erase`), the
 * protocol of docker/docker-credential-helpers: the server URL or a JSON
 * record on stdin, JSON on stdout. Secrets travel only through the pipes,
 * never the argument list, so they do not show in the process list.
 */
import { spawn } from 'node:child_process';
import { SealimgError } from '../errors.js';
import { TOKEN_USERNAME, type Credentials } from './credentials.js';

const TIMEOUT_MS = 30_000;

function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const bin = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [action], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new SealimgError('AUTH_FAILED', `credential helper ${bin}: ${(e as Error).message}`, {
        hint: `install ${bin}, or remove it from credHelpers/credsStore in your docker config`,
        cause: e,
      }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** The helper's credentials for `serverUrl`, or undefined when it has none. */
export async function helperGet(name: string, serverUrl: string): Promise<Credentials | undefined> {
  const r = await runHelper(name, 'get', serverUrl);
  if (r.code !== 0) {
    if (/credentials not found/i.test(r.stdout + r.stderr)) return undefined;
    throw new SealimgError('AUTH_FAILED', `credential helper docker-credential-${name} failed for ${serverUrl}: ${(r.stdout + r.stderr).trim().slice(0, 200)}`);
  }
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(r.stdout) as typeof doc;
  } catch {
    throw new SealimgError('AUTH_FAILED', `credential helper docker-credential-${name} printed something that is not JSON`);
  }
  if (typeof doc.Secret !== 'string' || doc.Secret === '') return undefined;
  const username = typeof doc.Username === 'string' ? doc.Username : '';
  return username === TOKEN_USERNAME ? { username: '', identityToken: doc.Secret } : { username, password: doc.Secret };
}

export async function helperStore(name: string, serverUrl: string, creds: Credentials): Promise<void> {
  const record = creds.identityToken !== undefined
    ? { ServerURL: serverUrl, Username: TOKEN_USERNAME, Secret: creds.identityToken }
    : { ServerURL: serverUrl, Username: creds.username, Secret: creds.password ?? '' };
  const r = await runHelper(name, 'store', JSON.stringify(record));
  if (r.code !== 0) throw new SealimgError('AUTH_FAILED', `credential helper docker-credential-${name} could not store credentials for ${serverUrl}: ${(r.stdout + r.stderr).trim().slice(0, 200)}`);
}

export async function helperErase(name: string, serverUrl: string): Promise<boolean> {
  const r = await runHelper(name, 'erase', serverUrl);
  if (r.code === 0) return true;
  if (/credentials not found/i.test(r.stdout + r.stderr)) return false;
  throw new SealimgError('AUTH_FAILED', `credential helper docker-credential-${name} could not erase credentials for ${serverUrl}: ${(r.stdout + r.stderr).trim().slice(0, 200)}`);
}
