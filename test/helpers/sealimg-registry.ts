/**
 * Runs `sealimg registry serve` as a user would (a child process), waits for
 * its start-up line and gives back the URL it printed. Stop it in `after`.
 */
import { spawn } from 'node:child_process';
import { SEALIMG } from './cli.js';

export interface ServedRegistry {
  url: string;
  /** host:port */
  addr: string;
  /** What the server wrote to stderr so far (the request log). */
  log(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function serveRegistry(root: string, flags: string[] = []): Promise<ServedRegistry> {
  const child = spawn(process.execPath, [SEALIMG, '--root', root, 'registry', 'serve', '--addr', '127.0.0.1:0', ...flags], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sealimg registry serve did not start in 15 s\n${stdout}${stderr}`));
    }, 15_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = / at (https?:\/\/\S+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sealimg registry serve exited ${code}\n${stdout}${stderr}`));
    });
  });
  return {
    url,
    addr: url.replace(/^https?:\/\//, ''),
    log: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
