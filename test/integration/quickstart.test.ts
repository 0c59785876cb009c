/** The README's first command runs examples/quickstart.sh: it must work on a machine with no way out. */
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { run } from '../helpers/cli.js';

const test = suite('quickstart');
const script = fileURLToPath(new URL('../../../examples/quickstart.sh', import.meta.url));

test('examples/quickstart.sh builds, saves, loads and has skopeo read the result, offline', async () => {
  const r = await run('bash', [script], { timeoutMs: 120_000 });
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /quickstart: ok\n$/);
  // The same digest from the tarball and from the store it was loaded into.
  const digests = [...r.stdout.matchAll(/"Digest": "(sha256:[0-9a-f]{64})"/g)].map((m) => m[1]);
  assert.is(digests.length, 2, r.stdout);
  assert.is(digests[0], digests[1]);
});

test.run();
