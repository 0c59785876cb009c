/** Formatting for people: tables, sizes, ages. */

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n') + '\n';
}

/** Sizes as docker prints them: decimal units, three significant digits. */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toPrecision(3).replace(/\.0+$|(\.\d*?)0+$/, '$1')}${units[u]}`;
}

export function humanAge(iso: string | undefined, now = Date.now()): string {
  if (!iso) return 'N/A';
  const t = Date.parse(iso);
  // A reproducible build records the epoch (SOURCE_DATE_EPOCH unset): no time was recorded, so none is shown.
  if (Number.isNaN(t) || t === 0) return 'N/A';
  const s = Math.max(0, (now - t) / 1000);
  const steps: Array<[number, string]> = [[60, 'second'], [60, 'minute'], [24, 'hour'], [7, 'day'], [4.35, 'week'], [12, 'month'], [Infinity, 'year']];
  let v = s;
  for (const [n, name] of steps) {
    if (v < n) {
      const k = Math.floor(v);
      if (name === 'second' && k < 1) return 'Less than a second ago';
      return `${k} ${name}${k === 1 ? '' : 's'} ago`;
    }
    v /= n;
  }
  return 'N/A';
}

export function shortId(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13);
}
