/**
 * Progress for long transfers, as docker and skopeo show it: on a terminal a
 * line per blob redrawn in place with bytes and rate; otherwise one plain line
 * when a blob starts, is skipped or is done; nothing with --quiet.
 */
import type { CopyEvent } from '../content/copy.js';
import { humanSize, shortId } from './output.js';

type Out = NodeJS.WritableStream & { isTTY?: boolean };

export function progressReporter(out: Out, quiet: boolean): ((e: CopyEvent) => void) | undefined {
  if (quiet) return undefined;
  return out.isTTY ? ttyReporter(out) : plainReporter(out);
}

function kind(mediaType: string): string {
  if (mediaType.includes('manifest') || mediaType.includes('index')) return 'manifest';
  if (mediaType.includes('config')) return 'config';
  return 'blob';
}

function plainReporter(out: Out): (e: CopyEvent) => void {
  return (e) => {
    const what = `${kind(e.desc.mediaType)} ${shortId(e.desc.digest)}`;
    if (e.type === 'start') out.write(`Copying ${what} (${humanSize(e.desc.size)})\n`);
    else if (e.type === 'skip') out.write(`Skipped ${what}: already exists\n`);
    else if (e.type === 'done') out.write(`Copied ${what}\n`);
  };
}

function ttyReporter(out: Out): (e: CopyEvent) => void {
  const lines: string[] = [];
  const rows = new Map<string, { index: number; started: number }>();
  let drawn = 0;
  let last = 0;
  const redraw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    let s = drawn > 0 ? `\x1b[${drawn}A` : '';
    for (const l of lines) s += `\x1b[2K${l}\n`;
    drawn = lines.length;
    out.write(s);
  };
  const set = (e: CopyEvent, text: string) => {
    let row = rows.get(e.desc.digest);
    if (!row) {
      row = { index: lines.length, started: Date.now() };
      rows.set(e.desc.digest, row);
      lines.push('');
    }
    lines[row.index] = `${kind(e.desc.mediaType).padEnd(8)} ${shortId(e.desc.digest)}  ${text}`;
    return row;
  };
  return (e) => {
    if (e.type === 'start') set(e, `waiting   ${humanSize(e.desc.size)}`);
    else if (e.type === 'skip') set(e, 'already exists');
    else if (e.type === 'done') set(e, `done      ${humanSize(e.desc.size)}`);
    else {
      const row = set(e, '');
      const secs = Math.max(0.001, (Date.now() - row.started) / 1000);
      const pct = e.desc.size > 0 ? Math.floor((e.bytes / e.desc.size) * 100) : 100;
      const bar = '='.repeat(Math.floor(pct / 5)).padEnd(20);
      lines[row.index] += `[${bar}] ${humanSize(e.bytes)}/${humanSize(e.desc.size)} ${humanSize(e.bytes / secs)}/s`;
      redraw(false);
      return;
    }
    redraw(true);
  };
}
