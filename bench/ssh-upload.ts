/**
 * Upload of one tree to one test host: sealimg's uploadTree (tar over an exec
 * channel, plain or gzipped, sha256 checked on the host) against OpenSSH's
 * `scp -r` of the same tree, run from the operator namespace in the same run.
 * Needs root. Run by hand:  npm run build && node dist/bench/ssh-upload.js [MB]
 * (BENCH_GZIP=1 for the gzipped stream).
 *
 * The tree is half random bytes (incompressible) and half text-like bytes,
 * in a few large files and many small ones, like a rootfs.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SshPool } from '../src/runner/ssh.js';
import { uploadTree } from '../src/runner/upload.js';
import { createTestHosts } from '../test/helpers/hosts.js';
import { ok } from '../test/helpers/cli.js';
import { cleanupTmp, tmpDir } from '../test/helpers/tmp.js';

const totalMb = Number(process.argv[2] ?? 200);

async function makeTree(dir: string): Promise<void> {
  const big = Math.max(1, Math.floor(totalMb / 40)); // 20 MB files for the first half
  for (let i = 0; i < big; i++) {
    await mkdir(join(dir, 'bin'), { recursive: true });
    await writeFile(join(dir, 'bin', `tool${i}`), randomBytes(20 << 20));
  }
  const text = Buffer.from('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: example\n'.repeat(1024));
  const small = Math.floor((totalMb / 2) * 1024 * 1024) / (64 << 10);
  for (let i = 0; i < small; i++) {
    const d = join(dir, 'manifests', `d${i % 50}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, `f${i}.yaml`), Buffer.concat([text.subarray(0, 48 << 10), randomBytes(16 << 10)]));
  }
}

const dir = await tmpDir();
const tree = join(dir, 'tree');
await makeTree(tree);
const key = join(dir, 'id');
await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
const hosts = await createTestHosts({ count: 1, authorizedKeys: [await readFile(`${key}.pub`, 'utf8')] });
try {
  const h = hosts.hosts[0];
  const pool = new SshPool({ knownHostsFile: join(dir, 'known_hosts'), dial: hosts.dial });
  const s = pool.host({ address: h.ip, privateKey: await readFile(key) });
  await s.exec('true'); // connection set up outside the timing, as scp's handshake is inside its own (small either way)

  let t = process.hrtime.bigint();
  await uploadTree(s, tree, '/opt/bench-sealimg', { compress: process.env.BENCH_GZIP === '1' });
  const ours = Number(process.hrtime.bigint() - t) / 1e9;

  t = process.hrtime.bigint();
  const scp = await hosts.operatorRun('scp', ['-q', '-r', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(dir, 'kh-scp')}`, '-i', key, tree, `root@${h.ip}:/opt/bench-scp`], { timeoutMs: 600_000 });
  const theirs = Number(process.hrtime.bigint() - t) / 1e9;
  if (scp.code !== 0) throw new Error(`scp failed: ${scp.stderr}`);

  const same = (await h.sh('cd /opt/bench-sealimg && find . -type f -exec sha256sum {} + | sort > /tmp/a; cd /opt/bench-scp && find . -type f -exec sha256sum {} + | sort > /tmp/b; cmp /tmp/a /tmp/b && echo same')).stdout.trim();
  console.log(`tree: ${totalMb} MB; uploadTree ${ours.toFixed(2)} s, scp -r ${theirs.toFixed(2)} s, ratio ${(ours / theirs).toFixed(2)}x (lower is better); trees ${same || 'DIFFER'}`);
  await pool.close();
} finally {
  await hosts.teardown();
  await rm(dir, { recursive: true, force: true });
  await cleanupTmp();
}
