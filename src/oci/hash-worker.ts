/**
 * The hashing thread behind hash-pool.ts: holds one running hash at a time,
 * named by the lease id the main thread gave it. Batches for another id are
 * stale (their stream was destroyed) and are only handed back, not hashed.
 * Every batch's buffer goes back to the main thread, which reuses it.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { ToWorker } from './hash-pool.js';

const port = parentPort!;
let hash: Hash | undefined;
let current = -1;

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'start':
      hash = createHash(m.algorithm);
      current = m.id;
      break;
    case 'data':
      if (m.id === current && hash) hash.update(new Uint8Array(m.buf, 0, m.len));
      port.postMessage({ t: 'ack', id: m.id, buf: m.buf }, [m.buf]);
      break;
    case 'end':
      if (m.id === current && hash) {
        port.postMessage({ t: 'digest', id: m.id, hex: hash.digest('hex') });
        hash = undefined;
      }
      break;
  }
});
