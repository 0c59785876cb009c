/** The registry's pure parts: routes, ranges, addresses, proxy specs, htpasswd lines, access per request. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHtpasswd } from '../../registry/auth.js';
import { accessFor, parseRange } from '../../registry/handler.js';
import { parseProxySpec, PullThrough } from '../../registry/proxy.js';
import { route, splitUrl } from '../../registry/routes.js';
import { parseAddr } from '../../registry/server.js';
import { isRepositoryName } from '../../src/content/distribution/layout.js';
import type { DistributionStorage } from '../../src/content/distribution/storage.js';

const test = suite('registry parts');

test('routes: names with slashes, uploads before blobs, raw paths kept', () => {
  assert.equal(route('/v2/'), { kind: 'base' });
  assert.equal(route('/v2/a/b/c/manifests/v1'), { kind: 'manifest', name: 'a/b/c', reference: 'v1' });
  assert.equal(route('/v2/a/blobs/uploads/'), { kind: 'uploads', name: 'a' });
  assert.equal(route('/v2/a/blobs/uploads/123'), { kind: 'upload', name: 'a', id: '123' });
  assert.equal(route('/v2/a/blobs/sha256:00'), { kind: 'blob', name: 'a', digest: 'sha256:00' });
  assert.equal(route('/v2/a/../b/tags/list'), { kind: 'tags', name: 'a/../b' });
  assert.is(route('/v1/x'), undefined);
  assert.is(splitUrl('/v2/a/tags/list?n=2&last=b').query.get('last'), 'b');
});

test('repository names: the spec grammar, 255 characters at most', () => {
  for (const ok of ['a', 'a/b', 'a.b-c__d/e', 'library/nginx', 'a--b']) assert.ok(isRepositoryName(ok), ok);
  for (const bad of ['', 'A', 'a/', '/a', 'a//b', 'a/../b', '..', 'a_', '-a', 'a.', `a/${'b'.repeat(254)}`]) assert.not.ok(isRepositoryName(bad), bad);
});

test('ranges: A-B, A-, -N; unsatisfiable ones are undefined', () => {
  assert.equal(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.equal(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.equal(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.equal(parseRange('bytes=50-500', 100), { start: 50, end: 99 });
  for (const bad of ['bytes=100-', 'bytes=5-1', 'items=0-1', 'bytes=-0', 'bytes=-', 'bytes=0-1,3-4']) assert.is(parseRange(bad, 100), undefined, bad);
});

test('addresses and proxy specs', () => {
  assert.equal(parseAddr(':5000'), { host: '0.0.0.0', port: 5000 });
  assert.equal(parseAddr('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.equal(parseAddr('[::1]:5000'), { host: '::1', port: 5000 });
  for (const bad of ['5000', 'host', 'h:99999', '[::1]']) assert.throws(() => parseAddr(bad), /--addr/);
  assert.is(parseProxySpec('http://up:5000').key, '');
  assert.is(parseProxySpec('docker.io=https://mirror.example').key, 'docker.io');
  assert.throws(() => parseProxySpec('ftp://x'), /http or https/);
  assert.throws(() => parseProxySpec('docker.io=not a url'), /not a URL/);
  const storage = {} as DistributionStorage;
  assert.throws(() => new PullThrough(storage, [parseProxySpec('http://a'), parseProxySpec('http://b')]), /twice/);
  const p = new PullThrough(storage, [parseProxySpec('docker.io=http://a'), parseProxySpec('quay.io=http://b')]);
  assert.equal(p.target('docker.io/library/nginx', null)?.remote, 'library/nginx');
  assert.equal(p.target('library/nginx', 'docker.io')?.local, 'docker.io/library/nginx');
  assert.is(p.target('library/nginx', null), undefined);
});

test('htpasswd: bcrypt lines only, with the line number of a bad one', () => {
  const users = parseHtpasswd('# comment\nalice:$2y$05$mOlyAavs86/sQAElKhmQ8eIZw2peJmmiBytbCO3NDS36ynLD/WtKy\n\n', 'f');
  assert.equal([...users.keys()], ['alice']);
  assert.throws(() => parseHtpasswd('bob:{SHA}abc=\n', 'file'), /file:1: not a "user:bcrypt-hash" line/);
});

test('access a request needs', () => {
  assert.equal(accessFor(route('/v2/a/manifests/v1'), 'GET'), [{ type: 'repository', name: 'a', actions: ['pull'] }]);
  assert.equal(accessFor(route('/v2/a/blobs/uploads/'), 'POST'), [{ type: 'repository', name: 'a', actions: ['pull', 'push'] }], 'a mount source is checked when mounting');
  assert.equal(accessFor(route('/v2/a/manifests/v1'), 'DELETE')[0]!.actions, ['delete']);
  assert.equal(accessFor(route('/v2/_catalog'), 'GET'), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
  assert.equal(accessFor(route('/v2/'), 'GET'), []);
});

test.run();
