/**
 * Sends a byte range of an open file as an HTTP response body, reading into a
 * few buffers that are reused once the socket has taken them. A read stream
 * allocates a fresh 1 MiB buffer per read, and the kernel has to fault in and
 * zero every page of it: for a 700 MB blob that is most of the server's work
 * besides the copies themselves (node has no sendfile).
 */
import type { ServerResponse } from 'node:http';
import type { FileHandle } from 'node:fs/promises';

const BUFFER_SIZE = 1 << 20;
const BUFFERS = 4;

export async function sendFile(fh: FileHandle, res: ServerResponse, start: number, end: number): Promise<void> {
  const free: Buffer[] = Array.from({ length: BUFFERS }, () => Buffer.allocUnsafeSlow(BUFFER_SIZE));
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  const closed = (): void => {
    failed ??= new Error('the client went away');
    wake?.();
  };
  res.once('close', closed);
  res.once('error', closed);
  try {
    for (let at = start; at <= end; ) {
      while (free.length === 0 && !failed) await new Promise<void>((r) => (wake = r));
      if (failed) throw failed;
      const buf = free.pop()!;
      const { bytesRead } = await fh.read(buf, 0, Math.min(BUFFER_SIZE, end - at + 1), at);
      if (bytesRead === 0) throw new Error(`the file ended at ${at}, before byte ${end}`);
      at += bytesRead;
      // The buffer is the socket's until the callback; only then is it read into again.
      res.write(buf.subarray(0, bytesRead), () => {
        free.push(buf);
        wake?.();
      });
    }
    while (free.length < BUFFERS && !failed) await new Promise<void>((r) => (wake = r));
    if (failed) throw failed;
    await new Promise<void>((resolve) => res.end(resolve));
  } finally {
    res.off('close', closed);
    res.off('error', closed);
  }
}
