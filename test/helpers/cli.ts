/** Runs the built sealimg CLI as a user would, in a child process. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const SEALIMG = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input);
  });
}

/** `sealimg --root ROOT ARGS...` */
export function sealimg(root: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer; cwd?: string } = {}): Promise<RunResult> {
  return run(process.execPath, [SEALIMG, '--root', root, ...args], opts);
}

/** Runs a command and fails the test with its output when it exits non-zero. */
export async function ok(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * `sealimg --root ROOT ARGS...` in the background, for a test that kills it
 * part-way: `kill()` sends SIGKILL and waits for the exit. It is killed
 * anyway after `limitMs`, so a test that never gets to kill it cannot hang.
 */
export function sealimgToKill(root: string, args: string[], env: NodeJS.ProcessEnv, limitMs = 120_000): { exited: Promise<void>; kill(): Promise<void> } {
  const child = spawn(process.execPath, [SEALIMG, '--root', root, ...args], { env: { ...process.env, ...env }, stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const limit = setTimeout(() => child.kill('SIGKILL'), limitMs);
  return {
    exited,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
      clearTimeout(limit);
    },
  };
}
