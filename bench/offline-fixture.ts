/**
 * Makes the benchmark's image in an OCI layout: gzipped tar layers of random
 * bytes (random, so nothing compresses away), sizes in MB from argv.
 * Usage: node dist/bench/offline-fixture.js DIR NAME MB...
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash, randomBytes } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { OciLayoutStore } from '../src/content/oci-layout.js';
import { digestOf, digestStream } from '../src/oci/digest.js';
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST } from '../src/oci/mediatypes.js';
import { entryHeader, END_OF_ARCHIVE, padding } from '../src/content/tar.js';

const [dir, name, ...sizes] = process.argv.slice(2);
if (!dir || !name || sizes.length === 0) throw new Error('usage: offline-fixture DIR NAME MB...');
const store = await OciLayoutStore.open(dir, { create: true });
const layers = [];
const diffIds = [];
for (const [i, mbText] of sizes.entries()) {
  const size = Number(mbText) * 1024 * 1024;
  const tmp = join(dir, `.layer-${i}`);
  const hash = createHash('sha256');
  const tar = async function* () {
    const parts = [entryHeader(`data${i}`, size)];
    for (const p of parts) yield p;
    for (let left = size; left > 0; left -= 1 << 20) yield randomBytes(Math.min(left, 1 << 20));
    yield padding(size);
    yield END_OF_ARCHIVE;
  };
  const hashed = async function* () {
    for await (const c of tar()) {
      hash.update(c);
      yield c;
    }
  };
  await pipeline(Readable.from(hashed()), createGzip({ level: 1 }), createWriteStream(tmp));
  const diff = `sha256:${hash.digest('hex')}`;
  const desc = { mediaType: OCI_LAYER_GZIP, ...(await digestStream(createReadStream(tmp))) };
  await store.push(desc, createReadStream(tmp));
  await rm(tmp);
  layers.push(desc);
  diffIds.push(diff);
}
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }));
const cdesc = { mediaType: OCI_CONFIG, digest: digestOf(config), size: config.length };
await store.push(cdesc, Readable.from([config]));
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: cdesc, layers }));
const mdesc = { mediaType: OCI_MANIFEST, digest: digestOf(manifest), size: manifest.length };
await store.push(mdesc, Readable.from([manifest]));
await store.tag(mdesc, name);
await store.close();
