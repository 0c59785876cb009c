/**
 * --referrers: a signature that refers to an image travels with it, through
 * the tag-schema fallback (distribution 2.8 has no referrers API), registry ->
 * local store -> another registry; skopeo reads the fallback index sealimg wrote.
 */
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { fallbackTag } from '../../src/content/referrers.js';
import { RemoteStore } from '../../src/content/remote.js';
import { digestOf } from '../../src/oci/digest.js';
import { OCI_EMPTY, OCI_INDEX, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import type { Descriptor } from '../../src/oci/types.js';
import { makeImage, pushBytes } from '../helpers/images.js';
import { ok, sealimg } from '../helpers/cli.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('registry: --referrers');
let reg: TestRegistry;
let other: TestRegistry;
const env = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
const SIG_TYPE = 'application/vnd.example.signature.v1';

test.before(async () => {
  reg = await startRegistry();
  other = await startRegistry();
});
test.after(async () => {
  await reg?.stop();
  await other?.stop();
  await cleanupTmp();
});

test('pull --referrers and push --referrers carry a signature along', async () => {
  // An image and a signature artifact for it, filed the way a referrers-aware client does on distribution.
  const src = await RemoteStore.open(`${reg.host}/signed/app`, { plainHttp: true, env }, 'push');
  let sig: Descriptor;
  let img: Awaited<ReturnType<typeof makeImage>>;
  try {
    img = await makeImage(src, { tag: 'v1' });
    const empty = await pushBytes(src, OCI_EMPTY, Buffer.from('{}'));
    const payload = await pushBytes(src, 'application/octet-stream', Buffer.from('signed by the test'));
    const m = { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: SIG_TYPE, config: empty, layers: [payload], subject: img.manifest };
    sig = await pushBytes(src, OCI_MANIFEST, Buffer.from(JSON.stringify(m)));
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...sig, artifactType: SIG_TYPE }] }));
    const indexDesc = { mediaType: OCI_INDEX, digest: digestOf(index), size: index.length };
    await src.push(indexDesc, Readable.from([index]));
    await src.tag(indexDesc, fallbackTag(img.manifest.digest));
  } finally {
    await src.close();
  }

  const root = await tmpDir();
  const pulled = await sealimg(root, ['pull', '--plain-http', '--referrers', `${reg.host}/signed/app:v1`], { env });
  assert.is(pulled.code, 0, pulled.stderr);
  const local = await OciLayoutStore.open(root);
  assert.ok(await local.exists(sig), 'the signature manifest came along');
  const localIndex = await local.resolve(`${reg.host}/signed/app:${fallbackTag(img.manifest.digest)}`);
  assert.is(localIndex.mediaType, OCI_INDEX);

  const pushed = await sealimg(root, ['push', '--plain-http', '--referrers', `${reg.host}/signed/app:v1`, `${other.host}/copied/app:v1`], { env });
  assert.is(pushed.code, 0, pushed.stderr);
  const raw = await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${other.host}/copied/app:${fallbackTag(img.manifest.digest)}`], { env });
  const listed = (JSON.parse(raw) as { manifests: Descriptor[] }).manifests;
  assert.equal(listed.map((d) => [d.digest, d.artifactType]), [[sig.digest, SIG_TYPE]]);
  const sigRaw = await ok('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${other.host}/copied/app@${sig.digest}`], { env });
  assert.is((JSON.parse(sigRaw) as { subject: Descriptor }).subject.digest, img.manifest.digest);

  // Without the flag, nothing but the image moves.
  const root2 = await tmpDir();
  const plain = await sealimg(root2, ['pull', '--plain-http', `${reg.host}/signed/app:v1`], { env });
  assert.is(plain.code, 0, plain.stderr);
  assert.is(await (await OciLayoutStore.open(root2)).exists(sig), false);
});

test("sealimg's own registry: the referrers API is used both ways, no fallback tag is written", async () => {
  const { serveRegistry } = await import('../helpers/sealimg-registry.js');
  const own = await serveRegistry(await tmpDir());
  try {
    const src = await RemoteStore.open(`${reg.host}/signed/app`, { plainHttp: true, env }, 'pull');
    const subject = await src.resolve('v1');
    await src.close();
    const root = await tmpDir();
    const pulled = await sealimg(root, ['pull', '--plain-http', '--referrers', `${reg.host}/signed/app:v1`], { env });
    assert.is(pulled.code, 0, pulled.stderr);
    const pushed = await sealimg(root, ['push', '--plain-http', '--referrers', `${reg.host}/signed/app:v1`, `${own.addr}/api/app:v1`], { env });
    assert.is(pushed.code, 0, pushed.stderr);
    const dst = await RemoteStore.open(`${own.addr}/api/app`, { plainHttp: true, env }, 'pull');
    try {
      const listed = await dst.referrers(subject);
      assert.equal(listed?.map((d) => d.artifactType), [SIG_TYPE]);
      try {
        await dst.resolve(fallbackTag(subject.digest));
        assert.unreachable('a fallback tag was written to a registry with the referrers API');
      } catch (e) {
        assert.match(String(e), /MANIFEST_UNKNOWN|not found/);
      }
    } finally {
      await dst.close();
    }
    const root2 = await tmpDir();
    const back = await sealimg(root2, ['pull', '--plain-http', '--referrers', `${own.addr}/api/app:v1`], { env });
    assert.is(back.code, 0, back.stderr);
    const local = await OciLayoutStore.open(root2);
    const sigs = await local.resolve(`${own.addr}/api/app:${fallbackTag(subject.digest)}`);
    assert.is(sigs.mediaType, OCI_INDEX, 'the local store keeps the list under the fallback tag');
  } finally {
    await own.stop();
  }
});

test.run();
