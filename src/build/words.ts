/**
 * Words and variables in a Sealfile line, as docker reads them: quotes group
 * words and are removed, the escape character makes the next character
 * literal, and `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` (and the
 * forms without the colon, and `?`) are replaced from the build's variables.
 * Single quotes stop expansion; an expansion is never split into more words.
 */
import { SealimgError } from '../errors.js';

export type Vars = ReadonlyMap<string, string>;

export interface LexOptions {
  /** Variables for `$` expansion; without it `$` is kept as written. */
  vars?: Vars;
  /** `\` by default; the `# escape=` directive may make it a backtick. */
  escape?: string;
  /** Where the text is, for errors: `Sealfile:3:7`. */
  where?: string;
}

const NAME_START = /[A-Za-z_]/;
const NAME_CHAR = /[A-Za-z0-9_]/;

function syntax(where: string | undefined, msg: string): SealimgError {
  return new SealimgError('SEALFILE_SYNTAX', `${where ? `${where}: ` : ''}${msg}`);
}

class Lexer {
  private i = 0;
  private readonly esc: string;
  constructor(
    private readonly s: string,
    private readonly opts: LexOptions,
  ) {
    this.esc = opts.escape ?? '\\';
  }

  /** Splits into words; with `whole`, returns the text as one word (spaces kept). */
  words(whole: boolean): string[] {
    const out: string[] = [];
    let word = '';
    let inWord = false;
    const s = this.s;
    while (this.i < s.length) {
      const c = s[this.i]!;
      if (!whole && /\s/.test(c)) {
        if (inWord) out.push(word);
        word = '';
        inWord = false;
        this.i++;
        continue;
      }
      inWord = true;
      if (c === "'") {
        const end = s.indexOf("'", this.i + 1);
        if (end < 0) throw syntax(this.opts.where, `unterminated single quote in: ${s}`);
        word += s.slice(this.i + 1, end);
        this.i = end + 1;
      } else if (c === '"') {
        word += this.doubleQuoted();
      } else if (c === this.esc) {
        this.i++;
        if (this.i < s.length) word += s[this.i++];
      } else if (c === '$' && this.opts.vars) {
        word += this.dollar();
      } else {
        word += c;
        this.i++;
      }
    }
    if (inWord) out.push(word);
    return out;
  }

  private doubleQuoted(): string {
    const s = this.s;
    let out = '';
    this.i++;
    while (this.i < s.length) {
      const c = s[this.i]!;
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c === this.esc) {
        const n = s[this.i + 1];
        // Inside double quotes the escape only protects a quote, a dollar or itself, as in sh.
        if (n === '"' || n === '$' || n === this.esc) {
          out += n;
          this.i += 2;
        } else {
          out += c;
          this.i++;
        }
      } else if (c === '$' && this.opts.vars) {
        out += this.dollar();
      } else {
        out += c;
        this.i++;
      }
    }
    throw syntax(this.opts.where, `unterminated double quote in: ${s}`);
  }

  private dollar(): string {
    const s = this.s;
    const vars = this.opts.vars!;
    this.i++;
    const c = s[this.i];
    if (c === '{') {
      this.i++;
      let name = '';
      while (this.i < s.length && NAME_CHAR.test(s[this.i]!)) name += s[this.i++];
      if (name === '' || !NAME_START.test(name[0]!)) throw syntax(this.opts.where, `bad variable name in \${...}: ${s}`);
      if (s[this.i] === '}') {
        this.i++;
        return vars.get(name) ?? '';
      }
      let op = s[this.i] ?? '';
      if (op === ':') {
        op += s[this.i + 1] ?? '';
        this.i += 2;
      } else this.i++;
      if (![':-', ':+', ':?', '-', '+', '?'].includes(op)) throw syntax(this.opts.where, `unsupported modifier "${op}" in \${${name}...}: ${s}`);
      const word = this.until('}');
      const set = vars.has(name);
      const nonEmpty = set && vars.get(name) !== '';
      const present = op.startsWith(':') ? nonEmpty : set;
      switch (op.replace(':', '')) {
        case '-':
          return present ? vars.get(name)! : word;
        case '+':
          return present ? word : '';
        default:
          if (!present) throw new SealimgError('SEALFILE_SYNTAX', `${this.opts.where ? `${this.opts.where}: ` : ''}${name}: ${word || 'is not set'}`);
          return vars.get(name)!;
      }
    }
    if (c !== undefined && NAME_START.test(c)) {
      let name = '';
      while (this.i < s.length && NAME_CHAR.test(s[this.i]!)) name += s[this.i++];
      return vars.get(name) ?? '';
    }
    return '$';
  }

  /** Reads a nested word up to the closing brace, expanding inside it. */
  private until(close: string): string {
    const s = this.s;
    let out = '';
    while (this.i < s.length && s[this.i] !== close) {
      const c = s[this.i]!;
      if (c === this.esc && this.i + 1 < s.length) {
        out += s[this.i + 1];
        this.i += 2;
      } else if (c === '$') out += this.dollar();
      else if (c === "'" || c === '"') {
        // Quotes in a default value group as elsewhere.
        const q = c;
        const end = s.indexOf(q, this.i + 1);
        if (end < 0) throw syntax(this.opts.where, `unterminated quote in: ${s}`);
        out += s.slice(this.i + 1, end);
        this.i = end + 1;
      } else {
        out += c;
        this.i++;
      }
    }
    if (s[this.i] !== close) throw syntax(this.opts.where, `missing "${close}" in: ${s}`);
    this.i++;
    return out;
  }
}

/** Splits `text` into words, removing quotes and expanding variables when `vars` is given. */
export function splitWords(text: string, opts: LexOptions = {}): string[] {
  return new Lexer(text, opts).words(false);
}

/** Processes `text` as one word: quotes removed, variables expanded, spaces kept. */
export function processWord(text: string, opts: LexOptions = {}): string {
  return new Lexer(text, opts).words(true).join('');
}

/**
 * Splits words without touching quotes or escapes, for `k=v` lists whose
 * parts are then processed one by one (so `A="x y"` stays one word).
 */
export function rawWords(text: string, escape = '\\'): string[] {
  const out: string[] = [];
  let word = '';
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      word += c;
      if (c === escape && quote === '"' && i + 1 < text.length) word += text[++i];
      else if (c === quote) quote = undefined;
    } else if (/\s/.test(c)) {
      if (word !== '') out.push(word);
      word = '';
    } else {
      word += c;
      if (c === "'" || c === '"') quote = c;
      else if (c === escape && i + 1 < text.length) word += text[++i];
    }
  }
  if (word !== '') out.push(word);
  return out;
}
