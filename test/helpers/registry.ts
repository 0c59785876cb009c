/**
 * The real CNCF registry (`docker-registry`, distribution) for tests: started
 * on 127.0.0.1 on a free port with a config in a temp dir, optionally with
 * htpasswd users, TLS from a CA made here with openssl, or token auth against
 * a token server the test runs; stopped by `stop()` (call it in an after hook).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ok } from './cli.js';
import { tmpDir } from './tmp.js';

export interface RegistryOpts {
  /** htpasswd users (bcrypt, the only hash distribution accepts). */
  users?: Record<string, string>;
  /** Serve https with a certificate from a fresh test CA. */
  tls?: boolean;
  /** Serve this storage directory (e.g. one sealimg also serves) instead of a fresh one. */
  root?: string;
  /** Token auth: the realm URL, the service name and the PEM cert the tokens are signed with. */
  token?: { realm: string; service: string; issuer: string; rootCertFile: string };
}

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  /** `http://...` or `https://...` */
  url: string;
  /** Storage root (distribution's layout). */
  dataDir: string;
  /** The test CA, PEM, when tls. */
  caFile?: string;
  /** A directory with ca.crt in it, for skopeo --cert-dir. */
  certDir?: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A CA and a server certificate for 127.0.0.1, localhost and registry.test (a name only a test proxy resolves). */
export async function makeTestCa(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string; caKeyFile: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const caFile = join(dir, 'ca.crt');
  const caKeyFile = join(dir, 'ca.key');
  await ok('openssl', ['req', '-x509', ...ec, '-keyout', caKeyFile, '-out', caFile, '-days', '2', '-subj', '/CN=sealimg test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const keyFile = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  await ok('openssl', ['req', ...ec, '-keyout', keyFile, '-out', csr, '-subj', '/CN=127.0.0.1']);
  const ext = join(dir, 'ext.cnf');
  await writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\nextendedKeyUsage=serverAuth\n');
  const certFile = join(dir, 'server.crt');
  await ok('openssl', ['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKeyFile, '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', ext]);
  return { caFile, certFile, keyFile, caKeyFile };
}

async function waitReady(url: string, child: ChildProcess, log: () => string, caFile?: string): Promise<void> {
  const { get } = await import(url.startsWith('https:') ? 'node:https' : 'node:http');
  const ca = caFile ? await readFile(caFile, 'utf8') : undefined;
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const req = get(`${url}/v2/`, { ca, agent: false }, (res: import('node:http').IncomingMessage) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
    });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${log()}`);
    if (await answers()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not answer on ${url} within 10 s:\n${log()}`);
}

export async function startRegistry(opts: RegistryOpts = {}): Promise<TestRegistry> {
  const dir = await tmpDir('sealimg-registry-');
  const dataDir = opts.root ?? join(dir, 'data');
  await mkdir(dataDir, { recursive: true });
  const port = await freePort();
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${dataDir}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: sealimg-test-secret',
  ];
  let caFile: string | undefined;
  let certDir: string | undefined;
  if (opts.tls) {
    const pki = join(dir, 'pki');
    await mkdir(pki);
    const ca = await makeTestCa(pki);
    caFile = ca.caFile;
    // skopeo reads every *.key in a cert dir as a client key: give it the CA alone.
    certDir = join(dir, 'certs');
    await mkdir(certDir);
    await copyFile(ca.caFile, join(certDir, 'ca.crt'));
    lines.push('  tls:', `    certificate: ${ca.certFile}`, `    key: ${ca.keyFile}`);
  }
  if (opts.users) {
    const file = join(dir, 'htpasswd');
    let text = '';
    for (const [user, password] of Object.entries(opts.users)) text += await ok('htpasswd', ['-Bbn', user, password]);
    await writeFile(file, text);
    lines.push('auth:', '  htpasswd:', '    realm: sealimg-test', `    path: ${file}`);
  } else if (opts.token) {
    lines.push('auth:', '  token:', `    realm: ${opts.token.realm}`, `    service: ${opts.token.service}`, `    issuer: ${opts.token.issuer}`, `    rootcertbundle: ${opts.token.rootCertFile}`);
  }
  const config = join(dir, 'config.yml');
  await writeFile(config, `${lines.join('\n')}\n`);
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log = (log + d).slice(-20_000)));
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitReady(url, child, () => log, caFile);
  } catch (e) {
    await stop();
    throw e;
  }
  return { host: `127.0.0.1:${port}`, port, url, dataDir, caFile, certDir, stop };
}
