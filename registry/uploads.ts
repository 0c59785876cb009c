/**
 * Blob upload sessions, kept on disk in the CNCF layout
 * (`repositories/<name>/_uploads/<id>/{data,startedat}`), so a session
 * outlives the server: after a restart its offset is the size of `data`, and
 * the client goes on from there (distribution-spec v1.1.0 "Pushing a blob in chunks").
 *
 * The running hash is kept in memory while the server lives, so finishing an
 * upload does not read the data again; after a restart (or a failed chunk) it
 * is rebuilt once from the file.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealimgError, errnoCode } from '../src/errors.js';
import { parseDigest } from '../src/oci/digest.js';
import { removeDir, type DistributionStorage } from '../src/content/distribution/storage.js';
import { pipeToFile } from '../src/content/fsutil.js';

interface HashState {
  hash: Hash;
  offset: number;
}

const MAX_LIVE_HASHES = 4096;

export class Uploads {
  private readonly hashes = new Map<string, HashState>();
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(readonly storage: DistributionStorage) {}

  private dir(name: string, id: string): string {
    return this.storage.layout.uploadDir(name, id);
  }

  /** Opens a session and returns its id. */
  async start(name: string): Promise<string> {
    const id = randomUUID();
    const dir = this.dir(name, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'startedat'), new Date().toISOString());
    await writeFile(join(dir, 'data'), '', { flag: 'wx' });
    this.remember(`${name}/${id}`, { hash: createHash('sha256'), offset: 0 });
    return id;
  }

  /** Keeps a running hash; abandoned sessions must not grow the map without end (a dropped one is rebuilt from disk). */
  private remember(key: string, state: HashState): void {
    if (this.hashes.size >= MAX_LIVE_HASHES) this.hashes.delete(this.hashes.keys().next().value!);
    this.hashes.set(key, state);
  }

  /** The bytes received so far; BLOB_UPLOAD_UNKNOWN when there is no such session. */
  async size(name: string, id: string): Promise<number> {
    try {
      return (await stat(join(this.dir(name, id), 'data'))).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') {
        throw new SealimgError('BLOB_UPLOAD_UNKNOWN', `upload ${id} in ${name} is unknown (finished, cancelled, or never started)`);
      }
      throw e;
    }
  }

  /** Runs operations on one session one at a time, so two chunks never interleave. */
  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.queues.get(key) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.queues.set(key, tail);
    void tail.then(() => {
      if (this.queues.get(key) === tail) this.queues.delete(key);
    });
    return run;
  }

  /**
   * Appends a chunk. With `start`, the chunk must begin where the data ends,
   * else RANGE_NOT_SATISFIABLE (the spec's 416). Returns the new size.
   */
  append(name: string, id: string, body: Readable, start?: number, signal?: AbortSignal): Promise<number> {
    const key = `${name}/${id}`;
    return this.serial(key, async () => {
      const size = await this.size(name, id);
      if (start !== undefined && start !== size) {
        body.resume();
        throw new SealimgError('RANGE_NOT_SATISFIABLE', `upload ${id}: chunk starts at ${start}, but ${size} bytes were received so far`, {
          hint: `resume from byte ${size}`,
        });
      }
      const state = this.hashes.get(key);
      const hashing = state && state.offset === size ? state : undefined;
      if (!hashing) this.hashes.delete(key);
      const tap = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hashing?.hash.update(chunk);
          if (hashing) hashing.offset += chunk.length;
          done(null, chunk);
        },
      });
      try {
        await pipeToFile([body, tap], join(this.dir(name, id), 'data'), { flags: 'a' }, signal);
      } catch (e) {
        // What reached the file stays (the client resumes from the size we report); the hash may not match it.
        this.hashes.delete(key);
        throw e;
      }
      return this.size(name, id);
    });
  }

  /**
   * Finishes a session: appends `body` if any, checks the data hashes to
   * `digest`, and moves it into place as a blob linked into the repository.
   * On a mismatch the session is removed and nothing is stored.
   */
  finish(name: string, id: string, digest: string, body?: Readable, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
    const key = `${name}/${id}`;
    const { algorithm } = parseDigest(digest);
    const append = body ? this.append(name, id, body, undefined, signal) : Promise.resolve(0);
    return append.then(() =>
      this.serial(key, async () => {
        const size = await this.size(name, id);
        const data = join(this.dir(name, id), 'data');
        const state = this.hashes.get(key);
        let actual: string;
        if (algorithm === 'sha256' && state && state.offset === size) actual = `sha256:${state.hash.copy().digest('hex')}`;
        else actual = await hashFile(data, algorithm, signal);
        if (actual !== digest) {
          await this.cancel(name, id);
          throw new SealimgError('DIGEST_MISMATCH', `upload ${id} to ${name}: content hashes to ${actual}, not ${digest}`);
        }
        const repo = this.storage.repository(name);
        if ((await this.storage.blobSize(digest)) === size) await rm(data, { force: true });
        else await this.storage.commitBlob(data, digest);
        await repo.linkBlob(digest);
        this.hashes.delete(key);
        await removeDir(this.dir(name, id));
        return { digest, size };
      }),
    );
  }

  /** Drops a session and its data; BLOB_UPLOAD_UNKNOWN when there is none. */
  async cancel(name: string, id: string): Promise<void> {
    await this.size(name, id);
    this.hashes.delete(`${name}/${id}`);
    await removeDir(this.dir(name, id));
  }
}

async function hashFile(path: string, algorithm: 'sha256' | 'sha512', signal?: AbortSignal): Promise<string> {
  const hash = createHash(algorithm);
  const fh = await open(path, 'r');
  try {
    await pipeline(fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false }), async function* (src: AsyncIterable<Buffer>) {
      for await (const chunk of src) hash.update(chunk);
    }, { signal });
  } finally {
    await fh.close();
  }
  return `${algorithm}:${hash.digest('hex')}`;
}

