/**
 * reset: undoes a cluster on every host (the clean hooks in reverse order of
 * their init counterparts, this cluster's /etc/hosts lines, its files), then
 * archives the Clusterfile as Clusterfile.<timestamp>. Hosts that cannot be
 * reached stop the reset unless --force, which goes on and names them.
 */
import { rm } from 'node:fs/promises';
import { SealimgError } from '../errors.js';
import { CLEAN_HOOKS, archiveClusterfile, loadClusterfile, openPool, setHostsBlock } from './apply.js';
import { REMOTE_DATA, type ClusterDir } from './cluster-dir.js';
import { hostsOf, registryHost, sshTarget, type RunHost } from './hosts.js';
import { kubeCleanupScript } from './kube.js';
import { shellQuote, type SshSession } from './ssh.js';

export interface ResetOptions {
  dir: ClusterDir;
  force?: boolean;
  insecureSkipHostKeyCheck?: boolean;
  say: (line: string) => void;
  signal?: AbortSignal;
}

export async function resetCluster(opts: ResetOptions): Promise<{ archived: string; failed: string[] }> {
  const { dir, say } = opts;
  const cf = await loadClusterfile(dir);
  if (!cf) throw new SealimgError('NAME_UNKNOWN', `no cluster named ${dir.name} (${dir.clusterfile} does not exist)`, { hint: "'sealimg status' lists clusters" });
  const hosts = hostsOf(cf.spec());
  const reg = registryHost(hosts);
  const labels: Record<string, string> = {};
  for (const m of cf.mounts()) if (m.type !== 'application') Object.assign(labels, m.labels);
  const kube = cf.conditions().some((c) => c.type.startsWith('Kube/'));
  const pool = openPool(dir, { insecureSkipHostKeyCheck: opts.insecureSkipHostKeyCheck, say });
  const failed: string[] = [];
  try {
    await Promise.all(
      hosts.map(async (h) => {
        try {
          const s = pool.host(await sshTarget(h));
          await resetHost(s, h, { dir, labels, isRegistry: h === reg, kube, say, signal: opts.signal });
        } catch (e) {
          if (!opts.force) throw e;
          failed.push(h.name);
          say(`${h.name}: ${(e as Error).message.split('\n')[0]} (going on: --force)`);
        }
      }),
    );
  } finally {
    await pool.close();
  }
  // Local state of the cluster's trees goes; the Clusterfile and logs are kept, archived.
  // (The unpacked images, ~/.sealimg/mounts, are shared by clusters and stay: mount.ts pruneMounts.)
  for (const p of ['rootfs', 'applications', 'mounts', 'state']) await rm(`${dir.dir}/${p}`, { recursive: true, force: true });
  const archived = await archiveClusterfile(dir);
  return { archived, failed };
}

/** Undoes the cluster on one host: Kubernetes (kubeadm reset, the LB), the clean hooks, its /etc/hosts lines, its files. */
export async function resetHost(
  s: SshSession,
  h: RunHost,
  o: { dir: ClusterDir; labels: Record<string, string>; isRegistry: boolean; kube: boolean; say: (l: string) => void; signal?: AbortSignal },
): Promise<void> {
  const { dir, labels, say } = o;
  if (o.kube) {
    say(`${h.name}: kubeadm reset`);
    await s.exec(kubeCleanupScript(dir), { step: 'kubeadm reset', signal: o.signal });
  }
  const scripts = `${dir.remoteRootfs()}/scripts`;
  // The hooks are the ones the run recorded; the rootfs on the host still holds their scripts.
  for (const hook of CLEAN_HOOKS) {
    if (hook === 'clean-registry' && !o.isRegistry) continue;
    const script = labels[hook];
    const guard = script ? 'true' : `test -f ${hook}.sh`;
    say(`${h.name}: ${hook}`);
    await s.exec(`cd ${shellQuote(scripts)} 2>/dev/null || exit 0; if ${guard}; then bash ${script ?? `${hook}.sh`}; fi`, { step: `${hook} hook`, signal: o.signal });
  }
  await setHostsBlock(s, dir.name, []);
  await s.exec(`rm -rf -- ${shellQuote(dir.remoteRoot())} && rmdir -p --ignore-fail-on-non-empty ${shellQuote(REMOTE_DATA)}`, { step: 'remove files', signal: o.signal });
  say(`${h.name}: reset`);
}
