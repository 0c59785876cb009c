/**
 * Sealfile/Kubefile text -> instructions with their file:line:col. dockerfile-ast
 * finds instructions, continuation lines, comments and the escape directive;
 * this module checks keywords and splits off `--flags`, and nothing else: what
 * an instruction means is plan.ts's business. Pure: no files, no I/O.
 */
import { DockerfileParser, type Instruction as AstInstruction } from 'dockerfile-ast';
import { SealimgError } from '../errors.js';
import { rawWords } from './words.js';

/** Docker's instructions and sealer's Kubefile ones, upper case. */
export const DOCKER_KEYWORDS = [
  'FROM', 'ARG', 'ENV', 'LABEL', 'CMD', 'ENTRYPOINT', 'WORKDIR', 'COPY', 'ADD', 'RUN', 'USER', 'EXPOSE', 'VOLUME',
  'STOPSIGNAL', 'SHELL', 'MAINTAINER', 'HEALTHCHECK', 'ONBUILD',
] as const;
export const KUBEFILE_KEYWORDS = ['KUBEVERSION', 'APP', 'APPCMDS', 'APPENV', 'LAUNCH', 'CMDS', 'CNI', 'CSI'] as const;
const KNOWN = new Set<string>([...DOCKER_KEYWORDS, ...KUBEFILE_KEYWORDS]);
/** Instructions whose leading `--name=value` words are flags. */
const TAKES_FLAGS = new Set(['FROM', 'COPY', 'ADD', 'RUN']);

export interface Flag {
  name: string;
  /** null for a bare `--flag`. */
  value: string | null;
  /** `file:line:col` of the flag. */
  where: string;
}

export interface Instruction {
  /** Upper case: `COPY`. */
  keyword: string;
  /** The arguments after any flags, continuation lines joined, quotes and `$` as written. */
  args: string;
  flags: Flag[];
  /** 1-based line and column of the keyword. */
  line: number;
  col: number;
  /** `file:line:col`, the prefix of every message about this instruction. */
  where: string;
}

export interface ParsedFile {
  file: string;
  /** The escape character (`\` unless `# escape=` says otherwise). */
  escape: string;
  instructions: Instruction[];
}

export function at(file: string, line: number, col: number): string {
  return `${file}:${line}:${col}`;
}

export function syntaxError(where: string, message: string, hint?: string): SealimgError {
  return new SealimgError('SEALFILE_SYNTAX', `${where}: ${message}`, { hint });
}

/** Parses the text of a build file; `file` names it in every error. */
export function parseSealfile(text: string, file = 'Sealfile'): ParsedFile {
  const doc = DockerfileParser.parse(text);
  const escape = doc.getEscapeCharacter();
  const instructions: Instruction[] = [];
  for (const ins of doc.getInstructions()) {
    const start = ins.getInstructionRange().start;
    const line = start.line + 1;
    const col = start.character + 1;
    const where = at(file, line, col);
    const keyword = ins.getInstruction();
    const upper = keyword.toUpperCase();
    if (!/^[A-Za-z]+$/.test(keyword) || !KNOWN.has(upper)) {
      throw syntaxError(where, `unknown instruction "${keyword}"`, `sealimg reads docker's instructions and sealer's ${KUBEFILE_KEYWORDS.join(', ')}`);
    }
    let args = (ins.getArgumentsContent() ?? '').trim();
    const flags: Flag[] = [];
    if (TAKES_FLAGS.has(upper)) {
      // dockerfile-ast already takes the flags of COPY/ADD/RUN/FROM out of the argument text.
      for (const f of astFlags(ins)) flags.push({ ...f, where: at(file, f.line, f.col) });
      const split = splitFlags(args, escape);
      args = split.rest;
      for (const f of split.flags) flags.push({ ...f, where });
    }
    if (/^<<-?["']?[A-Za-z_]/.test(args) && (upper === 'RUN' || upper === 'COPY' || upper === 'ADD')) {
      throw new SealimgError('UNSUPPORTED', `${where}: here-documents (<<EOF) are not supported in ${upper}`, {
        hint: 'put the text in a file in the context and COPY it, or write RUN on one line',
      });
    }
    instructions.push({ keyword: upper, args, flags, line, col, where });
  }
  return { file, escape, instructions };
}

/** Takes leading `--name[=value]` words off the argument text. */
function splitFlags(args: string, escape: string): { flags: Array<{ name: string; value: string | null }>; rest: string } {
  const flags: Array<{ name: string; value: string | null }> = [];
  let rest = args;
  for (;;) {
    const first = rawWords(rest, escape)[0];
    if (first === undefined || !first.startsWith('--') || first === '--') break;
    const eq = first.indexOf('=');
    const name = first.slice(2, eq < 0 ? undefined : eq);
    flags.push({ name, value: unquote(eq < 0 ? null : first.slice(eq + 1)) });
    rest = rest.slice(rest.indexOf(first) + first.length).trimStart();
  }
  return { flags, rest };
}

function astFlags(ins: AstInstruction): Array<{ name: string; value: string | null; line: number; col: number }> {
  type AstFlag = { getName(): string; getValue(): string | null; getRange(): { start: { line: number; character: number } } };
  const withFlags = ins as AstInstruction & { getFlags?: () => AstFlag[] };
  if (typeof withFlags.getFlags !== 'function') return [];
  return withFlags.getFlags().map((f) => ({
    name: f.getName(),
    value: unquote(f.getValue()),
    line: f.getRange().start.line + 1,
    col: f.getRange().start.character + 1,
  }));
}

function unquote(v: string | null): string | null {
  if (v !== null && v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0]!)) return v.slice(1, -1);
  return v;
}
