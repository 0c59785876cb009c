/** Reading secrets from a person or a pipe, never echoing them. */
import { SealimgError } from '../errors.js';

/** All of stdin, bounded: a password pipe, not a data stream. */
export async function readStdin(stdin: NodeJS.ReadableStream, max = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stdin) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > max) throw new SealimgError('USAGE', `stdin holds more than ${max} bytes; expected a password`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Asks for a password on the terminal with echo off. */
export async function readPassword(stdin: NodeJS.ReadStream, out: NodeJS.WritableStream): Promise<string> {
  if (!stdin.isTTY || typeof stdin.setRawMode !== 'function') {
    throw new SealimgError('USAGE', 'no terminal to ask for the password', { hint: 'pipe it in with --password-stdin' });
  }
  out.write('Password: ');
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer) => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            return resolve(text);
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            return reject(new SealimgError('ABORTED', 'interrupted'));
          }
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
          else text += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    out.write('\n');
  }
}
