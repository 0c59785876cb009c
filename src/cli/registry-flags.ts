/**
 * The registry flags every command that talks to registries shares, turned
 * into transport settings. Apart from transfer.ts so that a command which only
 * needs these (build) does not load the copy machinery at start-up.
 */
import type { RegistryOptions } from '../content/registry-client.js';
import { SealimgError } from '../errors.js';

/** Registry transport settings from the shared flags. */
export function registryOptions(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): RegistryOptions {
  const tls = flags['tls-verify'] as string | undefined;
  if (tls !== undefined && tls !== 'true' && tls !== 'false') throw new SealimgError('USAGE', `--tls-verify "${tls}" must be true or false`);
  const retry = flags['retry-times'] as string | undefined;
  const retryTimes = retry === undefined ? undefined : Number(retry);
  if (retryTimes !== undefined && (!Number.isInteger(retryTimes) || retryTimes < 0 || retryTimes > 100)) {
    throw new SealimgError('USAGE', `--retry-times "${retry}" must be a whole number from 0 to 100`);
  }
  const chunk = flags['chunk-size'] as string | undefined;
  return {
    plainHttp: Boolean(flags['plain-http']),
    tlsVerify: tls !== 'false',
    caFile: flags['ca-file'] as string | undefined,
    authFile: flags.authfile as string | undefined,
    retryTimes,
    chunkSize: chunk === undefined ? undefined : parseSize(chunk, '--chunk-size'),
    env,
  };
}

/** `4194304`, `4MiB`, `4M`, `512KiB`: binary units, as chunk caps are stated. */
export function parseSize(s: string, flag: string): number {
  const m = /^(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)$/i.exec(s.trim());
  const unit = m?.[2]?.toLowerCase().charAt(0) ?? '';
  const n = m ? Number(m[1]) * ({ '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[unit]! : NaN;
  if (!Number.isSafeInteger(n) || n < 1024) throw new SealimgError('USAGE', `${flag} "${s}" must be a size of at least 1KiB, like 4MiB`);
  return n;
}
