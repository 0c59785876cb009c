/**
 * The build context of examples/cluster-tiny, ready to build: a copy of the
 * example with the Debian docker-registry binary as its bin/registry (the
 * embedded registry server its init-registry hook starts).
 */
import { copyFile, cp } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from './tmp.js';

export const EXAMPLES = new URL('../../../examples/', import.meta.url).pathname;

export async function clusterTinyContext(): Promise<string> {
  const context = join(await tmpDir(), 'cluster-tiny');
  await cp(join(EXAMPLES, 'cluster-tiny'), context, { recursive: true });
  await copyFile('/usr/bin/docker-registry', join(context, 'bin', 'registry'));
  return context;
}
