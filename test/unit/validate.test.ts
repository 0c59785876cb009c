import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { childrenOf, parseManifest } from '../../src/oci/validate.js';
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { digestOf } from '../../src/oci/digest.js';

const test = suite('validate');
const d = (s: string, size = 1) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digestOf(s), size });
const manifest = (over: object) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...d('c'), mediaType: 'application/vnd.oci.image.config.v1+json' }, layers: [d('a'), d('b')], ...over }));

function fails(bytes: Buffer, declared: string | undefined, field: string): void {
  try {
    parseManifest(bytes, declared, 'm.json');
    assert.unreachable('accepted');
  } catch (e) {
    assert.match((e as Error).message, new RegExp(field));
    assert.match((e as Error).message, 'm.json');
  }
}

test('a good manifest lists config then layers', () => {
  const p = parseManifest(manifest({}), OCI_MANIFEST);
  assert.is(p.mediaType, OCI_MANIFEST);
  assert.equal(childrenOf(p).map((x) => x.digest), [digestOf('c'), digestOf('a'), digestOf('b')]);
});

test('an index lists its manifests; a missing mediaType is inferred', () => {
  const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ ...d('m'), mediaType: OCI_MANIFEST }] }));
  const p = parseManifest(idx, undefined);
  assert.is(p.mediaType, OCI_INDEX);
  assert.is(childrenOf(p).length, 1);
});

test('errors name the field', () => {
  fails(manifest({ schemaVersion: 1 }), OCI_MANIFEST, 'schemaVersion');
  fails(manifest({ layers: [d('a'), { ...d('b'), size: -1 }] }), OCI_MANIFEST, 'layers\\[1\\]\\.size');
  fails(manifest({ layers: [{ ...d('a'), digest: 'sha256:zz' }] }), OCI_MANIFEST, 'layers\\[0\\]\\.digest');
  fails(manifest({ config: undefined }), OCI_MANIFEST, 'config');
  fails(manifest({}), DOCKER_MANIFEST, 'mediaType');
  fails(Buffer.from('{nope'), OCI_MANIFEST, 'not valid JSON');
  fails(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: digestOf('x'), size: 1.5 }] })), OCI_INDEX, 'manifests\\[0\\]\\.size');
});

test.run();
