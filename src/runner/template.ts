/**
 * Renders `*.tmpl` files the way sealos' images expect, for the subset of Go
 * templates those images use: `{{ .key }}`, `{{ if .key }}…{{ else }}…{{ end }}`,
 * `{{ .key | default "x" }}` / `{{ default "x" .key }}`, `{{ .key | quote }}`,
 * and the `{{-`/`-}}` whitespace trims. Anything else is an error naming the
 * file, line and action, never a silently wrong config file.
 */
import { SealimgError } from '../errors.js';

export type Vars = Record<string, string>;

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'value'; expr: Expr; line: number }
  | { kind: 'if'; cond: Expr; then: Node[]; else: Node[]; line: number };

type Expr = { key: string; fallback?: string; quote?: boolean; line: number; source: string };

interface Token {
  kind: 'text' | 'action';
  text: string;
  line: number;
}

function fail(file: string, line: number, why: string): SealimgError {
  return new SealimgError('TEMPLATE_INVALID', `${file}:${line}: ${why}`, {
    hint: 'sealimg renders {{ .key }}, {{ if .key }}/{{ else }}/{{ end }}, default and quote; simplify the template or pre-render it',
  });
}

function tokenize(src: string, file: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      out.push({ kind: 'text', text: src.slice(i), line });
      break;
    }
    out.push({ kind: 'text', text: src.slice(i, open), line });
    line += countLines(src.slice(i, open));
    const close = src.indexOf('}}', open + 2);
    if (close < 0) throw fail(file, line, 'unclosed {{');
    const raw = src.slice(open + 2, close);
    const trimLeft = raw.startsWith('-') && /^-\s/.test(raw);
    const trimRight = raw.endsWith('-') && /\s-$/.test(raw);
    if (trimLeft && out.length > 0) {
      const prev = out[out.length - 1]!;
      if (prev.kind === 'text') prev.text = prev.text.replace(/\s+$/, '');
    }
    out.push({ kind: 'action', text: raw.slice(trimLeft ? 1 : 0, trimRight ? -1 : undefined).trim(), line });
    line += countLines(raw);
    i = close + 2;
    if (trimRight) {
      const m = /^\s*/.exec(src.slice(i))![0];
      line += countLines(m);
      i += m.length;
    }
  }
  return out;
}

function countLines(s: string): number {
  let n = 0;
  for (const c of s) if (c === '\n') n++;
  return n;
}

const KEY = /^\.([A-Za-z_][A-Za-z0-9_]*)$/;
const STRING = /^"((?:[^"\\]|\\.)*)"$/;

function parseExpr(text: string, file: string, line: number): Expr {
  const stages = text.split('|').map((s) => s.trim());
  let expr: Expr | undefined;
  const first = stages.shift()!;
  const words = first.split(/\s+/);
  if (words.length === 1 && KEY.test(words[0]!)) expr = { key: KEY.exec(words[0]!)![1]!, line, source: text };
  else if (words[0] === 'default' && words.length === 3 && STRING.test(words[1]!) && KEY.test(words[2]!)) {
    expr = { key: KEY.exec(words[2]!)![1]!, fallback: JSON.parse(words[1]!), line, source: text };
  }
  if (!expr) throw fail(file, line, `unsupported template action {{ ${text} }}`);
  for (const stage of stages) {
    const w = stage.split(/\s+/);
    if (w[0] === 'default' && w.length === 2 && STRING.test(w[1]!)) expr.fallback = JSON.parse(w[1]!);
    else if (w[0] === 'quote' && w.length === 1) expr.quote = true;
    else throw fail(file, line, `unsupported template function "${stage}" in {{ ${text} }}`);
  }
  return expr;
}

function parse(tokens: Token[], file: string): Node[] {
  let pos = 0;
  const block = (inIf: boolean): { nodes: Node[]; end: 'else' | 'end' | 'eof' } => {
    const nodes: Node[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos++]!;
      if (t.kind === 'text') {
        if (t.text) nodes.push({ kind: 'text', text: t.text });
        continue;
      }
      if (t.text.startsWith('/*') && t.text.endsWith('*/')) continue;
      if (t.text === 'end' || t.text === 'else') {
        if (!inIf) throw fail(file, t.line, `{{ ${t.text} }} without {{ if }}`);
        return { nodes, end: t.text };
      }
      if (t.text.startsWith('if ')) {
        const cond = parseExpr(t.text.slice(3).trim(), file, t.line);
        const then = block(true);
        let otherwise: Node[] = [];
        if (then.end === 'else') {
          const e = block(true);
          if (e.end !== 'end') throw fail(file, t.line, '{{ if }} is not closed by {{ end }}');
          otherwise = e.nodes;
        } else if (then.end !== 'end') throw fail(file, t.line, '{{ if }} is not closed by {{ end }}');
        nodes.push({ kind: 'if', cond, then: then.nodes, else: otherwise, line: t.line });
        continue;
      }
      nodes.push({ kind: 'value', expr: parseExpr(t.text, file, t.line), line: t.line });
    }
    return { nodes, end: 'eof' };
  };
  return block(false).nodes;
}

function evaluate(expr: Expr, vars: Vars, file: string, required: boolean): string | undefined {
  let v = Object.prototype.hasOwnProperty.call(vars, expr.key) ? vars[expr.key] : undefined;
  if ((v === undefined || v === '') && expr.fallback !== undefined) v = expr.fallback;
  if (v === undefined && required) throw fail(file, expr.line, `{{ ${expr.source} }}: "${expr.key}" is not set (set it with -e ${expr.key}=VALUE or in the image's ENV)`);
  return expr.quote && v !== undefined ? JSON.stringify(v) : v;
}

/** Renders `src` (the text of `file`) with `vars`. */
export function render(src: string, vars: Vars, file = 'template'): string {
  const emit = (nodes: Node[]): string =>
    nodes
      .map((n) => {
        if (n.kind === 'text') return n.text;
        if (n.kind === 'value') return evaluate(n.expr, vars, file, true)!;
        const v = evaluate(n.cond, vars, file, false);
        return emit(v !== undefined && v !== '' && v !== 'false' && v !== '0' ? n.then : n.else);
      })
      .join('');
  return emit(parse(tokenize(src, file), file));
}
