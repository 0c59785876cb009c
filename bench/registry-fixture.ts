/**
 * Makes the bench inputs for bench/registry.sh: an OCI layout with a small
 * image (`small`, for manifest GETs) and one with a large uncompressed layer
 * (`big`, for push/pull throughput; random bytes, so nothing compresses).
 * Usage: node dist/bench/registry-fixture.js DIR SIZE_MB
 */
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { OciLayoutStore } from '../src/content/oci-layout.js';
import { OCI_CONFIG, OCI_LAYER, OCI_MANIFEST } from '../src/oci/mediatypes.js';
import { makeImage, pushBytes } from '../test/helpers/images.js';

async function bigLayer(dir: string, mb: number): Promise<{ path: string; digest: string; size: number }> {
  // A tar with one file of random bytes, written in 1 MiB steps: memory stays flat.
  const path = join(dir, 'big-layer.tar');
  const out = createWriteStream(path);
  const hash = createHash('sha256');
  const size = mb * 1024 * 1024;
  const header = Buffer.alloc(512);
  header.write('big.bin', 0);
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const write = async (b: Buffer) => {
    hash.update(b);
    if (!out.write(b)) await once(out, 'drain');
  };
  await write(header);
  for (let i = 0; i < mb; i++) await write(randomBytes(1024 * 1024));
  await write(Buffer.alloc(1024));
  out.end();
  await once(out, 'finish');
  return { path, digest: `sha256:${hash.digest('hex')}`, size: 512 + size + 1024 };
}

const [dir, mbArg] = process.argv.slice(2);
if (!dir) throw new Error('usage: registry-fixture.js DIR SIZE_MB');
const store = await OciLayoutStore.open(join(dir, 'layout'), { create: true });
await makeImage(store, { layers: ['small'], tag: 'small' });
const layer = await bigLayer(dir, Number(mbArg ?? 256));
const desc = { mediaType: OCI_LAYER, digest: layer.digest, size: layer.size };
await store.push(desc, createReadStream(layer.path));
const diff = layer.digest;
const config = await pushBytes(store, OCI_CONFIG, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diff] } })));
const manifest = await pushBytes(store, OCI_MANIFEST, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [desc] })));
await store.tag(manifest, 'big');
await rm(layer.path);
process.stdout.write(`${layer.size}\n`);
