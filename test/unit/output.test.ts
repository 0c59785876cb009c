/** What `sealimg images` shows in its CREATED column. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { humanAge } from '../../src/cli/output.js';

const test = suite('output');
const now = Date.parse('2026-11-25T12:00:00Z');

test('ages read as docker prints them; a reproducible build (epoch 0) and a missing time show N/A', () => {
  assert.is(humanAge('2026-11-25T11:59:30Z', now), '30 seconds ago');
  assert.is(humanAge('2026-11-25T09:00:00Z', now), '3 hours ago');
  assert.is(humanAge('2026-11-18T12:00:00Z', now), '1 week ago');
  assert.is(humanAge('1970-01-01T00:00:00Z', now), 'N/A');
  assert.is(humanAge(undefined, now), 'N/A');
});

test.run();
