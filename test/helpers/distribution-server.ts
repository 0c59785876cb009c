/**
 * Starts the real CNCF registry (`docker-registry`) on 127.0.0.1 over a given
 * storage directory, for tests that check sealimg against it. Always stop it
 * in an `after` hook.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `url` until it answers (any status), at most `ms`. */
export async function waitForHttp(url: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${url} did not answer within ${ms} ms: ${String(e)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export interface RunningRegistry {
  /** host:port */
  addr: string;
  stop(): Promise<void>;
}

/**
 * Runs docker-registry with storage at `root` (and htpasswd auth when given).
 * No blob descriptor cache, so it sees what another writer puts in the directory.
 */
export async function startDistribution(root: string, confDir: string, opts: { htpasswd?: string } = {}): Promise<RunningRegistry> {
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  const auth = opts.htpasswd ? `auth:\n  htpasswd:\n    realm: test\n    path: ${opts.htpasswd}\n` : '';
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: ${addr}
${auth}`;
  const file = join(confDir, `registry-${port}.yml`);
  await writeFile(file, config);
  const child: ChildProcess = spawn('/usr/bin/docker-registry', ['serve', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    await waitForHttp(`http://${addr}/v2/`);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${String(e)}\n${stderr}`);
  }
  return {
    addr,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}
