/**
 * Runs inside the operator network namespace (started by hosts.ts through
 * nsenter) and opens TCP connections there on request, handing each connected
 * socket back to the parent over the IPC channel. A socket keeps the network
 * namespace it was made in, so the test process (in the root namespace, which
 * has no route to the test hosts on purpose) can speak SSH to the hosts
 * in-process without any 10.x address or route ever existing outside the
 * test namespaces.
 */
import { connect } from 'node:net';

interface DialRequest {
  id: number;
  host: string;
  port: number;
  timeoutMs: number;
}

if (!process.send) {
  process.stderr.write('netns-dialer: must be started with an IPC channel\n');
  process.exit(2);
}

process.on('message', (m: DialRequest) => {
  const sock = connect({ host: m.host, port: m.port });
  const timer = setTimeout(() => sock.destroy(new Error(`connect to ${m.host}:${m.port} timed out after ${m.timeoutMs} ms`)), m.timeoutMs);
  sock.once('connect', () => {
    clearTimeout(timer);
    // Stop reading here: bytes the server sends first (the SSH banner) must reach the parent's socket.
    sock.pause();
    process.send!({ id: m.id }, sock, { keepOpen: false }, (err: Error | null) => {
      if (err) process.send!({ id: m.id, error: String(err.message) });
      sock.destroy();
    });
  });
  sock.once('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    process.send!({ id: m.id, error: e.message, code: e.code });
  });
});

// The parent going away ends us: no dialer outlives its test run.
process.on('disconnect', () => process.exit(0));
