/**
 * WWW-Authenticate challenges (RFC 9110 11.6.1) as registries send them:
 * `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`
 * (distribution token auth spec). Pure parsing; no I/O.
 */

export interface Challenge {
  /** Lowercased: 'basic', 'bearer', or whatever else a server names. */
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses one header value, which may hold several challenges
 * (`Basic realm="a", Bearer realm="b"`). Parameter names are lowercased.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipSpace();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const word = token();
    if (word === '') {
      i++; // a character no grammar allows here: skip it rather than loop
      continue;
    }
    skipSpace();
    if (header[i] === '=') {
      i++;
      skipSpace();
      let value: string;
      if (header[i] === '"') {
        i++;
        value = '';
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        value = token();
      }
      if (current) current.params[word.toLowerCase()] = value;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}
