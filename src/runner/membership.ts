/**
 * `add` and `delete`: changing a running cluster's hosts. Adding puts the new
 * addresses in the Clusterfile and applies it: only the new hosts' steps run
 * (check, distribute, bootstrap, join), and every node's load balancer is
 * updated when the masters changed. Deleting drains the host with kubectl on
 * master0, resets it (kubeadm reset, which also takes a master's etcd member
 * out; the member is removed from master0 if it is still listed), cleans its
 * files, takes it out of the Clusterfile, then applies the rest so the load
 * balancers follow.
 */
import { rm } from 'node:fs/promises';
import { SealimgError } from '../errors.js';
import { Applier, loadClusterfile, openPool, type ApplyOptions } from './apply.js';
import { hostsOf, masters, registryHost, sshTarget, type RunHost } from './hosts.js';
import { ALT_NAMES_ANNOTATION } from './kube.js';
import { resetHost } from './reset.js';
import { shellQuote } from './ssh.js';

async function load(opts: ApplyOptions) {
  const cf = await loadClusterfile(opts.dir);
  if (!cf) throw new SealimgError('NAME_UNKNOWN', `no cluster named ${opts.dir.name} (${opts.dir.clusterfile} does not exist)`, { hint: "create it with 'sealimg run' first" });
  return cf;
}

const named = (h: RunHost, addr: string) => addr === h.name || addr === h.ip || addr === `${h.ip}:${h.port}`;

export async function addHosts(opts: ApplyOptions, add: { masters: string[]; nodes: string[] }): Promise<boolean> {
  const cf = await load(opts);
  const have = hostsOf(cf.spec());
  // Addresses already in the cluster are skipped, so a failed `add` is simply run again.
  const fresh = (list: string[], role: string) =>
    list.filter((a) => {
      const h = have.find((x) => named(x, a));
      if (h && !h.roles.includes(role)) throw new SealimgError('USAGE', `${a} is already a ${h.roles.includes('master') ? 'master' : 'node'} of cluster ${opts.dir.name}`);
      return !h;
    });
  const ms = fresh(add.masters, 'master');
  const ns = fresh(add.nodes, 'node');
  if (ms.length > 0) cf.addHosts(ms, ['master']);
  if (ns.length > 0) cf.addHosts(ns, ['node']);
  if (ms.length + ns.length === 0) opts.say('Every host given is already in the cluster; finishing what is not done');
  return new Applier({ ...opts, hostsChange: true }).apply(cf);
}

export async function deleteHosts(opts: ApplyOptions, del: { masters: string[]; nodes: string[] }): Promise<void> {
  const cf = await load(opts);
  const hosts = hostsOf(cf.spec());
  const m0 = masters(hosts)[0]!;
  const targets: RunHost[] = [];
  for (const [list, role] of [[del.masters, 'master'], [del.nodes, 'node']] as const) {
    for (const a of list) {
      const h = hosts.find((x) => named(x, a));
      if (!h) throw new SealimgError('USAGE', `${a} is not a host of cluster ${opts.dir.name}`);
      if (role === 'master' ? !h.roles.includes('master') : h.roles.includes('master')) throw new SealimgError('USAGE', `${a} is not a ${role} of cluster ${opts.dir.name}`);
      if (h === m0) throw new SealimgError('USAGE', `${a} is master0 (it holds the cluster's certificates and registry); it cannot be deleted`, { hint: "'sealimg reset' removes the whole cluster" });
      if (h === registryHost(hosts)) throw new SealimgError('USAGE', `${a} serves the embedded registry; it cannot be deleted`);
      targets.push(h);
    }
  }
  const kube = cf.conditions().some((c) => c.type.startsWith('Kube/'));
  const labels: Record<string, string> = {};
  for (const m of cf.mounts()) if (m.type !== 'application') Object.assign(labels, m.labels);
  const bin = `PATH=${shellQuote(`${opts.dir.remoteRootfs()}/bin`)}:$PATH; export PATH; `;
  const kubectl = 'kubectl --kubeconfig /etc/kubernetes/admin.conf';
  const pool = openPool(opts.dir, opts);
  try {
    const s0 = pool.host(await sshTarget(m0));
    const m0name = (await s0.exec('hostname', { step: 'delete' })).stdout.trim().toLowerCase();
    for (const h of targets) {
      const s = pool.host(await sshTarget(h));
      if (kube) {
        const name = (await s.exec('hostname', { step: 'delete' })).stdout.trim().toLowerCase();
        opts.say(`${h.name}: drain ${name}`);
        await s0.exec(`${bin}${kubectl} drain ${shellQuote(name)} --ignore-daemonsets --delete-emptydir-data --force --timeout=300s && ${kubectl} delete node ${shellQuote(name)} --ignore-not-found`, { step: 'drain', signal: opts.signal });
        await resetHost(s, h, { dir: opts.dir, labels, isRegistry: false, kube, say: opts.say, signal: opts.signal });
        if (h.roles.includes('master')) {
          // kubeadm reset leaves etcd itself when it can; if it could not, the member goes from master0.
          const etcdctl = `${kubectl} -n kube-system exec etcd-${m0name} -- etcdctl --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key`;
          await s0.exec(`${bin}id=$(${etcdctl} member list | awk -F', ' -v n=${shellQuote(name)} '$3 == n { print $1 }'); if [ -n "$id" ]; then ${etcdctl} member remove "$id"; fi`, { step: 'etcd member removal', signal: opts.signal });
        }
      } else await resetHost(s, h, { dir: opts.dir, labels, isRegistry: false, kube, say: opts.say, signal: opts.signal });
      cf.removeHost(h.name, (a) => named(h, a));
      // Not done until the rest has followed (the load balancers).
      cf.setPhase('ClusterInProgress');
      cf.dropConditions((c) => c.type.endsWith(`/${h.name}`) || c.type.includes(`/${h.name}/`));
      await rm(opts.dir.sentState(h.name), { force: true });
      await cf.save(opts.dir.clusterfile);
      opts.say(`${h.name}: deleted from cluster ${opts.dir.name}`);
    }
  } finally {
    await pool.close();
  }
  // The remaining hosts: load balancers follow the masters; everything else is recorded done.
  await new Applier({ ...opts, hostsChange: true }).apply(cf);
}

/** `cert --alt-names`: more apiserver SANs, kept in the Clusterfile; every master gets a new certificate. */
export async function addAltNames(opts: ApplyOptions, names: string[]): Promise<boolean> {
  const cf = await load(opts);
  if (!cf.conditions().some((c) => c.type.startsWith('Kube/Init/'))) throw new SealimgError('USAGE', `cluster ${opts.dir.name} runs no Kubernetes (its image has no kubeadm)`);
  for (const n of names) {
    if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(n) && !/^[0-9a-fA-F:.]+$/.test(n)) throw new SealimgError('USAGE', `--alt-names: "${n}" is not a DNS name or an IP address`);
  }
  const have = (cf.annotation(ALT_NAMES_ANNOTATION) ?? '').split(',').filter(Boolean);
  const all = [...new Set([...have, ...names])];
  if (all.length === have.length) {
    opts.say(`The apiserver certificate already has ${names.join(', ')}`);
    return false;
  }
  cf.setAnnotation(ALT_NAMES_ANNOTATION, all.join(','));
  cf.setPhase('ClusterInProgress');
  await cf.save(opts.dir.clusterfile);
  return new Applier(opts).apply(cf);
}
