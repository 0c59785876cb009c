/** The hosts of a recorded cluster, picked by role, for exec and scp. */
import { SealimgError } from '../errors.js';
import { loadClusterfile, openPool } from '../runner/apply.js';
import type { ClusterDir } from '../runner/cluster-dir.js';
import { hostsOf, sshTarget, type RunHost } from '../runner/hosts.js';
import type { SshPool, SshSession } from '../runner/ssh.js';

export async function selectHosts(dir: ClusterDir, roles: string | undefined, opts: { insecureSkipHostKeyCheck?: boolean; say: (l: string) => void }): Promise<{ pool: SshPool; targets: Array<{ host: RunHost; session: SshSession }> }> {
  const cf = await loadClusterfile(dir);
  if (!cf) throw new SealimgError('NAME_UNKNOWN', `no cluster named ${dir.name}`, { hint: "run 'sealimg run' first, or pass --cluster" });
  const want = roles?.split(',').map((r) => r.trim()).filter(Boolean);
  const hosts = hostsOf(cf.spec()).filter((h) => !want || want.some((r) => h.roles.includes(r)));
  if (hosts.length === 0) throw new SealimgError('USAGE', `no host of cluster ${dir.name} has the role ${roles}`);
  const pool = openPool(dir, opts);
  const targets = [];
  for (const host of hosts) targets.push({ host, session: pool.host(await sshTarget(host)) });
  return { pool, targets };
}
