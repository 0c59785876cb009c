/** Temporary directories that are removed after the test, also when it fails. */
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

export async function tmpDir(prefix = 'sealimg-test-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

export async function cleanupTmp(): Promise<void> {
  for (const d of made.splice(0)) await rm(d, { recursive: true, force: true });
}

process.on('exit', () => {
  // Best effort for suites that did not call cleanupTmp: nothing may pile up on CI machines.
  for (const d of made) {
    rmSync(d, { recursive: true, force: true });
  }
});
