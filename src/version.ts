/** sealimg's own version, read once from package.json (dist/src/version.js -> the package root). */
import { readFile } from 'node:fs/promises';

let cached: Promise<string> | undefined;

export function sealimgVersion(): Promise<string> {
  cached ??= readFile(new URL('../../package.json', import.meta.url), 'utf8').then((t) => (JSON.parse(t) as { version: string }).version);
  return cached;
}
