/**
 * What a command is, and the context main.ts hands it. Commands parse their
 * own flags with node's parseArgs, call the library, print; no logic of their own.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SealimgError } from '../errors.js';

export interface Context {
  /** Root of the local store (--root, $SEALIMG_ROOT, or the default). */
  root: string;
  debug: boolean;
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM, so transfers stop cleanly. */
  signal: AbortSignal;
}

export type Options = NonNullable<ParseArgsConfig['options']>;

export interface Command {
  /** One line for `sealimg --help`. */
  summary: string;
  /** The usage line(s) and flag help for `sealimg CMD --help`. */
  usage: string;
  options: Options;
  /** Returns the exit code (0 when omitted). */
  run(ctx: Context, values: Record<string, unknown>, positionals: string[]): Promise<number | void>;
}

/** Parses a command's flags; unknown flags are a usage error naming the flag. */
export function parseFlags(cmd: Command, name: string, argv: string[]): { values: Record<string, unknown>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: { ...cmd.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    return { values, positionals };
  } catch (e) {
    throw new SealimgError('USAGE', `${name}: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`, {
      hint: `see 'sealimg ${name} --help'`,
    });
  }
}

export function needArgs(name: string, positionals: string[], min: number, max: number, what: string): void {
  if (positionals.length < min || positionals.length > max) {
    throw new SealimgError('USAGE', `${name} takes ${what}, got ${positionals.length} argument${positionals.length === 1 ? '' : 's'}`, {
      hint: `see 'sealimg ${name} --help'`,
    });
  }
}
