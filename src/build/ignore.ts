/**
 * `.sealignore` (else `.dockerignore`) patterns with docker's meaning: one
 * pattern a line, `#` comments, `!` re-includes, `*` and `?` stay inside one
 * path component, `**` spans any number of them, a leading `/` is dropped, and
 * a path is ignored when it or one of its parent directories matches. The last
 * matching pattern decides.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';

interface Rule {
  re: RegExp;
  exclude: boolean;
}

function clean(p: string): string {
  const parts: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') parts.pop();
    else parts.push(c);
  }
  return parts.join('/');
}

/** Compiles one glob (docker/moby patternmatcher syntax) to an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let cls = glob.slice(i + 1, end);
        if (cls.startsWith('!')) cls = `^${cls.slice(1)}`;
        re += `[${cls.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else if (c === '\\' && i + 1 < glob.length) {
      re += glob[++i]!.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function hasGlob(p: string): boolean {
  return /[*?[]/.test(p);
}

export class IgnoreRules {
  private readonly rules: Rule[];
  /** The file the rules came from, for messages; undefined when there was none. */
  readonly file?: string;

  constructor(text: string, file?: string) {
    this.file = file;
    this.rules = [];
    for (let line of text.split(/\r?\n/)) {
      line = line.trim();
      if (line === '' || line.startsWith('#')) continue;
      const exclude = line.startsWith('!');
      if (exclude) line = line.slice(1).trim();
      const pattern = clean(line);
      if (pattern === '') continue;
      this.rules.push({ re: globToRegExp(pattern), exclude });
    }
  }

  get hasExceptions(): boolean {
    return this.rules.some((r) => r.exclude);
  }

  /** True when `rel` (context-relative, `/`-separated) is left out of the build. */
  ignores(rel: string): boolean {
    if (this.rules.length === 0) return false; // no ignore file: the walk of a big context asks for every path
    const path = clean(rel);
    if (path === '') return false;
    const prefixes: string[] = [];
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) prefixes.push(parts.slice(0, i).join('/'));
    let ignored = false;
    for (const r of this.rules) {
      if (prefixes.some((p) => r.re.test(p))) ignored = !r.exclude;
    }
    return ignored;
  }
}

/** Reads `.sealignore`, else `.dockerignore`, from the context; no file means nothing is ignored. */
export async function loadIgnore(contextDir: string): Promise<IgnoreRules> {
  for (const name of ['.sealignore', '.dockerignore']) {
    try {
      return new IgnoreRules(await readFile(join(contextDir, name), 'utf8'), name);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  return new IgnoreRules('');
}
