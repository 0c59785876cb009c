/** LayerQueue: layers written a few at a time, reported and returned in step order, a failure stopping the rest. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerQueue } from '../../src/build/layer-queue.js';

const test = suite('layer queue');

const delay = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

test('at most `limit` writes run at once; results and reports come in the order added, not the order finished', async () => {
  const reported: number[] = [];
  const q = new LayerQueue<number>(2, (n) => reported.push(n));
  let running = 0;
  let most = 0;
  const took = [60, 10, 30, 5, 20];
  for (const [i, ms] of took.entries()) {
    await q.add(async (signal) => {
      most = Math.max(most, ++running);
      await delay(ms, signal);
      running--;
      return i;
    });
  }
  assert.equal(await q.drain(), [0, 1, 2, 3, 4]);
  assert.equal(reported, [0, 1, 2, 3, 4]);
  assert.is(most, 2);
});

test('the first failure stops the writes still running, is what drain() throws, and later adds refuse to start', async () => {
  const q = new LayerQueue<string>(3, () => undefined);
  const stopped: string[] = [];
  const slow = (name: string) => async (signal: AbortSignal): Promise<string> => {
    try {
      await delay(5_000, signal);
    } catch (e) {
      stopped.push(name);
      throw e;
    }
    return name;
  };
  const started = Date.now();
  await q.add(slow('a'));
  await q.add(async () => {
    await delay(10);
    throw new Error('layer b: disk full');
  });
  await q.add(slow('c'));
  const err = await q.drain().catch((e: unknown) => e);
  assert.instance(err, Error);
  assert.is((err as Error).message, 'layer b: disk full');
  assert.equal(stopped.sort(), ['a', 'c']);
  assert.ok(Date.now() - started < 2_000, 'the slow writes were stopped, not waited out');
  let ran = false;
  const refused = await q.add(async () => {
    ran = true;
    return 'd';
  }).catch((e: unknown) => e);
  assert.is((refused as Error).message, 'layer b: disk full');
  assert.not.ok(ran);
});

test('stop() aborts the running writes and returns only once none is running', async () => {
  const q = new LayerQueue<number>(2, () => undefined);
  let running = 0;
  for (let i = 0; i < 2; i++) {
    await q.add(async (signal) => {
      running++;
      try {
        await delay(5_000, signal);
      } finally {
        await delay(20); // cleanup after the abort, such as killing a compressor
        running--;
      }
      return i;
    });
  }
  await q.stop(new Error('a later step failed'));
  assert.is(running, 0);
});

test('the build being cancelled stops the writes with its reason', async () => {
  const outer = new AbortController();
  const q = new LayerQueue<number>(2, () => undefined, outer.signal);
  await q.add((signal) => delay(5_000, signal).then(() => 1));
  outer.abort(new Error('interrupted'));
  const err = await q.drain().catch((e: unknown) => e);
  assert.is((err as Error).message, 'interrupted');
});

test.run();
