import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { familiarName, normalizeReference, parseReference } from '../../src/oci/reference.js';
import { isSealimgError } from '../../src/errors.js';

const test = suite('reference');
const D = `sha256:${'a'.repeat(64)}`;

test('docker defaults', () => {
  assert.is(normalizeReference('nginx'), 'docker.io/library/nginx:latest');
  assert.is(normalizeReference('nginx:1.25'), 'docker.io/library/nginx:1.25');
  assert.is(normalizeReference('bitnami/redis'), 'docker.io/bitnami/redis:latest');
  assert.is(normalizeReference('docker.io/nginx'), 'docker.io/library/nginx:latest');
  assert.is(normalizeReference('index.docker.io/library/nginx:x'), 'docker.io/library/nginx:x');
});

test('registries with ports, localhost, IPv6', () => {
  assert.equal(parseReference('localhost/app'), { registry: 'localhost', repository: 'app', tag: 'latest', digest: undefined });
  assert.equal(parseReference('localhost:5000/a/b:v1'), { registry: 'localhost:5000', repository: 'a/b', tag: 'v1', digest: undefined });
  assert.equal(parseReference('127.0.0.1:5000/x'), { registry: '127.0.0.1:5000', repository: 'x', tag: 'latest', digest: undefined });
  assert.equal(parseReference('[::1]:5000/x:t').registry, '[::1]:5000');
  assert.equal(parseReference('sealos.hub:5000/labring/kubernetes:v1.28.14').repository, 'labring/kubernetes');
});

test('digest, and tag with digest', () => {
  assert.equal(parseReference(`nginx@${D}`), { registry: 'docker.io', repository: 'library/nginx', tag: undefined, digest: D });
  assert.is(normalizeReference(`quay.io/a/b:v2@${D}`), `quay.io/a/b:v2@${D}`);
});

test('familiar names', () => {
  assert.is(familiarName(parseReference('nginx')), 'nginx');
  assert.is(familiarName(parseReference('bitnami/redis')), 'bitnami/redis');
  assert.is(familiarName(parseReference('quay.io/a/b')), 'quay.io/a/b');
});

for (const bad of ['', 'Nginx', 'nginx:', 'nginx:-x', 'a//b', 'a/', '-a', 'a--b_', `nginx@sha256:abc`, 'host:port/x', `x:${'t'.repeat(129)}`, 'a'.repeat(64), 'UPPER.io/x/Y']) {
  test(`rejects ${JSON.stringify(bad).slice(0, 40)}`, () => {
    try {
      parseReference(bad);
      assert.unreachable(`accepted ${bad}`);
    } catch (e) {
      assert.ok(isSealimgError(e, 'INVALID_REFERENCE'), String(e));
      assert.match((e as Error).message, 'invalid reference');
    }
  });
}

test.run();
