/**
 * Kubernetes on the hosts, after bootstrap and before the guest commands, in
 * sealos' order: certificates (made here, 99 years), `kubeadm init` on
 * master0, the other masters joined one at a time as control plane, then on
 * every node its apiserver load balancer and `kubeadm join`, nodes in
 * parallel. Only a rootfs image with a `version` label and a kubeadm in its
 * bin/ installs Kubernetes; others (plain rootfs images) skip all of this.
 *
 * Every step is a recorded condition keyed on what it depends on, so a re-run
 * skips what is done and a failed join is picked up on that host alone. A
 * step that failed half-way undoes kubeadm's half-made state (`kubeadm reset
 * -f`) before it tries again. Binaries come from the image's bin/ first.
 */
import { X509Certificate, createHash, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { writeFileAtomic } from '../content/fsutil.js';
import { SealimgError, errnoCode } from '../errors.js';
import type { ClusterDir } from './cluster-dir.js';
import type { Clusterfile } from './clusterfile.js';
import { masters, nodes, type RunHost } from './hosts.js';
import type { RunImage } from './images.js';
import { API_SERVER_DOMAIN, DEFAULT_VIP, kubeadmDocuments, kubeadmYaml, parseKubeVersion } from './kubeadm.js';
import { LVSCARE_MANIFEST, haproxyConfigPath, haproxyUnit, lbFiles, type LbMode } from './lb.js';
import { CA_FILES, fileMode, type PkiFiles } from './pki-files.js';
import type { PkiOptions } from './pki.js';
import { shellQuote, type SshSession } from './ssh.js';
import type { Vars } from './template.js';

/** The Kubernetes version the cluster runs (set at init, moved by upgrades). */
export const KUBE_VERSION_ANNOTATION = 'sealimg.io/kubernetes-version';

function versionOrder(a: string, b: string): number {
  const x = parseKubeVersion(a);
  const y = parseKubeVersion(b);
  return x.major - y.major || x.minor - y.minor || x.patch - y.patch;
}

/** Refuses a rootfs image that would take the cluster to an older Kubernetes (kubeadm cannot downgrade). */
export function refuseDowngrade(cf: Clusterfile, images: RunImage[]): void {
  const have = cf.annotation(KUBE_VERSION_ANNOTATION);
  const want = [...images].reverse().find((i) => i.type !== 'application' && i.labels.version)?.labels.version;
  if (have && want && versionOrder(want, have) < 0) {
    throw new SealimgError('USAGE', `the cluster runs Kubernetes ${have}; an image with version ${want} would downgrade it, which kubeadm cannot do`, { hint: 'run an image of the same or a newer version' });
  }
}

/** Where `sealimg cert` keeps the extra apiserver names (comma-separated). */
export const ALT_NAMES_ANNOTATION = 'sealimg.io/alt-names';

const KUBEADM_KINDS = ['InitConfiguration', 'ClusterConfiguration', 'JoinConfiguration', 'KubeletConfiguration', 'KubeProxyConfiguration'];

/** What the image says about the Kubernetes it installs; undefined when it installs none. */
export interface KubePlan {
  version: string;
  vip: string;
  lb: LbMode;
  /** `sealos.hub:5000`. */
  registry: string;
}

export function kubePlan(images: RunImage[], rootfsTree: string, vars: Vars, lb: LbMode): KubePlan | undefined {
  const labels: Record<string, string> = {};
  for (const i of images) if (i.type !== 'application') Object.assign(labels, i.labels);
  if (!labels.version || !existsSync(join(rootfsTree, 'bin', 'kubeadm'))) return undefined;
  parseKubeVersion(labels.version);
  return { version: labels.version, vip: labels.vip || DEFAULT_VIP, lb, registry: `${vars.registryDomain ?? 'sealos.hub'}:${vars.registryPort ?? '5000'}` };
}

/** The address `apiserver.cluster.local` resolves to on a host: itself on a joined master, master0 on one joining, the LB on nodes. */
export function apiserverAddress(h: RunHost, hosts: RunHost[], plan: KubePlan, joined: boolean): string {
  const m0 = masters(hosts)[0]!;
  if (h.roles.includes('master')) return h === m0 || joined ? h.ip : m0.ip;
  return plan.lb === 'haproxy' ? '127.0.0.1' : plan.vip;
}

/** The `sha256:<hex>` kubeadm's discovery pins: the hash of the CA's SubjectPublicKeyInfo. */
export function caCertHash(caPem: string): string {
  const spki = new X509Certificate(caPem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** A bootstrap token as kubeadm wants it: [a-z0-9]{6}.[a-z0-9]{16}. */
function newToken(): string {
  const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const pick = (n: number) => Array.from({ length: n }, () => abc[randomInt(abc.length)]).join('');
  return `${pick(6)}.${pick(16)}`;
}

export interface RemoteFile {
  path: string;
  content: string;
  mode: number;
}

/** Writes files on a host in one command: each to a temp name, then renamed. */
export async function putFiles(s: SshSession, files: RemoteFile[], step: string, signal?: AbortSignal): Promise<void> {
  const lines = ['set -e'];
  for (const f of files) {
    const tmp = `${f.path}.sealimg-tmp`;
    lines.push(`mkdir -p ${shellQuote(dirname(f.path))}`);
    lines.push(`printf %s ${shellQuote(Buffer.from(f.content).toString('base64'))} | base64 -d > ${shellQuote(tmp)}`);
    lines.push(`chmod ${f.mode.toString(8)} ${shellQuote(tmp)} && mv -f ${shellQuote(tmp)} ${shellQuote(f.path)}`);
  }
  await s.exec('sh -s', { stdin: lines.join('\n') + '\n', step, label: `write ${files.map((f) => f.path).join(', ')}`, signal });
}

/** What the Applier lends this module: sessions, recorded steps, the hosts file block. */
export interface KubeContext {
  dir: ClusterDir;
  cf: Clusterfile;
  hosts: RunHost[];
  plan: KubePlan;
  say: (line: string) => void;
  signal?: AbortSignal;
  parallel: number;
  session(h: RunHost): Promise<SshSession>;
  step(type: string, key: string | undefined, fn: () => Promise<string | void>, force?: boolean): Promise<void>;
  done(type: string, key: string): boolean;
  conditions(): Array<{ type: string; status: string }>;
  /** Sets this cluster's /etc/hosts block on a host (registry domain, apiserver.cluster.local -> `apiserver`). */
  setHosts(s: SshSession, h: RunHost, apiserver: string): Promise<void>;
  inParallel<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void>;
  keyOf(...parts: unknown[]): string;
}

const pkiDir = (dir: ClusterDir) => join(dir.dir, 'pki');

/** The local copy: pki/* under ~/.sealimg/<cluster>/pki, kubeconfigs under ~/.sealimg/<cluster>/etc. */
async function loadPki(dir: ClusterDir): Promise<PkiFiles> {
  const out: PkiFiles = new Map();
  const walk = async (d: string) => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw e;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!e.name.includes('.tmp')) out.set(`pki/${relative(pkiDir(dir), p)}`, await readFile(p, 'utf8'));
    }
  };
  await walk(pkiDir(dir));
  for (const conf of ['admin.conf', 'controller-manager.conf', 'scheduler.conf', 'kubelet.conf', 'super-admin.conf']) {
    try {
      out.set(conf, await readFile(join(dir.etc, conf), 'utf8'));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  return out;
}

async function savePki(dir: ClusterDir, files: PkiFiles): Promise<void> {
  for (const [rel, content] of files) {
    const path = rel.startsWith('pki/') ? join(pkiDir(dir), rel.slice(4)) : join(dir.etc, rel);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, content, fileMode(rel));
  }
}

/** The certificates for `opts`, from pki.ts, which is loaded only here (pki-files.ts says why). */
async function buildPki(opts: PkiOptions, have: PkiFiles): Promise<PkiFiles> {
  const { PkiBuilder } = await import('./pki.js');
  return new PkiBuilder(opts).build(have);
}

/** The CAs and the service-account key: what every master shares (what kubeadm's upload-certs would carry). */
function shared(files: PkiFiles): PkiFiles {
  const out: PkiFiles = new Map();
  for (const base of CA_FILES) for (const ext of ['.crt', '.key']) if (files.has(base + ext)) out.set(base + ext, files.get(base + ext)!);
  for (const f of ['pki/sa.key', 'pki/sa.pub']) if (files.has(f)) out.set(f, files.get(f)!);
  return out;
}

const toRemote = (files: PkiFiles, skip: string[] = []): RemoteFile[] =>
  [...files].filter(([rel]) => !skip.includes(rel)).map(([rel, content]) => ({ path: `/etc/kubernetes/${rel}`, content, mode: fileMode(rel) }));

export class KubeInstaller {
  private names = new Map<RunHost, string>();
  private token?: string;
  /** Masters whose apiserver certificate this run made (init, join): already with today's names. */
  private madeNow = new Set<RunHost>();

  constructor(private readonly c: KubeContext) {}

  private get m0(): RunHost {
    return masters(this.c.hosts)[0]!;
  }

  /** kubeadm and friends from the image's bin/ first (sealos' init.sh copies them to /usr/bin; either works). */
  private get path(): string {
    return `PATH=${shellQuote(`${this.c.dir.remoteRootfs()}/bin`)}:$PATH`;
  }

  private async exec(h: RunHost, cmd: string, step: string) {
    const s = await this.c.session(h);
    return s.exec(`${this.path}; export PATH; ${cmd}`, { step, signal: this.c.signal });
  }

  /** Node names are the hosts' hostnames, lower case, as kubelet registers them. */
  private async nodeName(h: RunHost): Promise<string> {
    let n = this.names.get(h);
    if (!n) {
      n = (await (await this.c.session(h)).exec('hostname', { step: 'kubernetes' })).stdout.trim().toLowerCase();
      this.names.set(h, n);
    }
    return n;
  }

  private async masterList(): Promise<Array<{ name: string; ip: string }>> {
    const out = [];
    for (const m of masters(this.c.hosts)) out.push({ name: await this.nodeName(m), ip: m.ip });
    return out;
  }

  /** `sealimg cert --alt-names`: kept in the Clusterfile, so later joins and runs keep them. */
  private get altNames(): string[] {
    return (this.c.cf.annotation(ALT_NAMES_ANNOTATION) ?? '').split(',').filter(Boolean);
  }

  private async documents(extra: { token?: string; caCertHash?: string } = {}) {
    const overrides = KUBEADM_KINDS.flatMap((k) => this.c.cf.documentsOfKind(k));
    return kubeadmDocuments({ kubeVersion: this.c.plan.version, masters: await this.masterList(), vip: this.c.plan.vip, imageRepository: this.c.plan.registry, certSANs: this.altNames, overrides, ...extra });
  }

  private pkiOptions(docs: Array<Record<string, unknown>>, ms: Array<{ name: string; ip: string }>) {
    const cluster = docs.find((d) => d.kind === 'ClusterConfiguration')!;
    const net = (cluster.networking ?? {}) as { serviceSubnet?: string; dnsDomain?: string };
    const apiServer = (cluster.apiServer ?? {}) as { certSANs?: string[] };
    return {
      masters: ms,
      vip: this.c.plan.vip,
      altNames: apiServer.certSANs ?? [],
      serviceSubnet: net.serviceSubnet?.split(',')[0],
      dnsDomain: net.dnsDomain,
      controlPlaneEndpoint: String(cluster.controlPlaneEndpoint ?? `${API_SERVER_DOMAIN}:6443`),
      kubeVersion: this.c.plan.version,
    };
  }

  async install(): Promise<void> {
    const { c } = this;
    const docs = await this.documents();
    const ms = await this.masterList();
    const pkiOpts = this.pkiOptions(docs, ms);
    const certsKey = c.keyOf(pkiOpts);

    // 1. Certificates, made here, kept in ~/.sealimg/<cluster>: CAs survive every re-run.
    let files = await loadPki(c.dir);
    // Recorded done but gone from this machine: made again (with new CAs only if those are gone too).
    await c.step('Kube/Certs', certsKey, async () => {
      c.say('Generating certificates (99 years)');
      files = await buildPki(pkiOpts, shared(files));
      await savePki(c.dir, files);
      return `certificates for ${ms.map((m) => m.name).join(', ')}`;
    }, !files.has('pki/apiserver.crt'));
    const caHash = caCertHash(files.get('pki/ca.crt')!);
    const sansKey = c.keyOf(this.altNames);

    // 2. kubeadm init on master0 with sealimg's certificates and kubeconfigs in place.
    const initYaml = kubeadmYaml(docs, ['InitConfiguration', 'ClusterConfiguration', 'KubeletConfiguration', 'KubeProxyConfiguration']);
    const m0 = this.m0;
    // Keyed on master0 and the CA only: masters added later, or new SANs, never run init again.
    await c.step(`Kube/Init/${m0.name}`, c.keyOf(m0.ip, caHash), async () => {
      const s = await c.session(m0);
      const config = `${c.dir.remoteRootfs()}/etc/kubeadm-init.yaml`;
      c.say(`${m0.name}: kubeadm init`);
      this.madeNow.add(m0);
      await this.resetIfHalfDone(m0, '/etc/kubernetes/manifests/kube-apiserver.yaml');
      await putFiles(s, [...toRemote(files), { path: config, content: initYaml, mode: 0o600 }], 'kubernetes certificates', c.signal);
      // certs and kubeconfig are sealimg's (99 years); kubeadm only checks and uses them.
      await this.exec(m0, `kubeadm init --config ${shellQuote(config)} --skip-phases=certs,kubeconfig --skip-token-print --skip-certificate-key-print`, 'kubeadm init');
      await this.kubeconfigForRoot(m0);
      const admin = await s.exec('cat /etc/kubernetes/admin.conf', { step: 'kubeadm init', label: 'read admin.conf' });
      await mkdir(c.dir.etc, { recursive: true, mode: 0o700 });
      await writeFileAtomic(join(c.dir.etc, 'admin.conf'), admin.stdout, 0o600);
      return 'control plane initialised';
    });
    // Made just now with today's names: recorded, so 3b leaves it be.
    const fresh = new Set<RunHost>();
    if (this.madeNow.has(m0)) fresh.add(m0);

    if (!c.cf.annotation(KUBE_VERSION_ANNOTATION)) c.cf.setAnnotation(KUBE_VERSION_ANNOTATION, c.plan.version);
    await this.upgrade();

    // 3. The other masters, one at a time (etcd grows one member at a time).
    for (const [i, m] of masters(c.hosts).entries()) {
      if (i === 0) continue;
      await c.step(`Kube/Join/${m.name}`, c.keyOf(caHash, 'master'), async () => {
        const s = await c.session(m);
        const name = await this.nodeName(m);
        c.say(`${m.name}: kubeadm join (control plane)`);
        this.madeNow.add(m);
        await this.resetIfHalfDone(m, '/etc/kubernetes/kubelet.conf');
        await c.setHosts(s, m, m0.ip);
        // Its own serving certificates (its name and IP first), the shared CAs and keys as master0's.
        const own = await buildPki(this.pkiOptions(docs, [ms[i]!, ...ms.filter((_, j) => j !== i)]), shared(files));
        const config = `${c.dir.remoteRootfs()}/etc/kubeadm-join-master.yaml`;
        const join = await this.joinYaml(name, m.ip);
        // kubelet.conf comes from the join's TLS bootstrap; kubeadm refuses to join over an existing one.
        await putFiles(s, [...toRemote(own, ['kubelet.conf', 'super-admin.conf']), { path: config, content: join, mode: 0o600 }], 'kubernetes certificates', c.signal);
        await this.exec(m, `kubeadm join --config ${shellQuote(config)}`, 'kubeadm join');
        await c.setHosts(s, m, m.ip);
        await this.kubeconfigForRoot(m);
        return `joined as control plane ${name}`;
      });
      if (this.madeNow.has(m)) fresh.add(m);
    }
    for (const m of fresh) await c.step(`Kube/ApiserverCert/${m.name}`, sansKey, async () => 'made with the control plane');

    // 3b. New apiserver SANs (`sealimg cert`) on masters made before them: a new certificate, the apiserver restarted.
    for (const [i, m] of masters(c.hosts).entries()) {
      await c.step(`Kube/ApiserverCert/${m.name}`, sansKey, async () => {
        const s = await c.session(m);
        c.say(`${m.name}: apiserver certificate for ${this.altNames.join(', ')}`);
        const own = await buildPki(this.pkiOptions(docs, [ms[i]!, ...ms.filter((_, j) => j !== i)]), shared(files));
        const certs = new Map([...own].filter(([rel]) => rel === 'pki/apiserver.crt' || rel === 'pki/apiserver.key'));
        await putFiles(s, toRemote(certs), 'apiserver certificate', c.signal);
        // kubelet starts the static pod again once its container stops.
        await this.exec(m, 'if command -v crictl >/dev/null; then crictl ps -q --name kube-apiserver | xargs -r crictl stop; fi', 'restart apiserver');
        if (i === 0) {
          const config = `${c.dir.remoteRootfs()}/etc/kubeadm-init.yaml`;
          await putFiles(s, [{ path: config, content: initYaml, mode: 0o600 }], 'kubeadm config', c.signal);
          // The cluster's kubeadm-config keeps the SANs, so `kubeadm upgrade` makes them again.
          await this.exec(m, `kubeadm init phase upload-config kubeadm --config ${shellQuote(config)}`, 'kubeadm upload-config');
        }
        return `apiserver certificate with ${this.altNames.join(', ')}`;
      });
    }

    // 4. Nodes in parallel: the load balancer to every master first, then the join through it.
    await this.syncLoadBalancers();
    await c.inParallel(nodes(c.hosts), async (n) => {
      await c.step(`Kube/Join/${n.name}`, c.keyOf(caHash, 'node'), async () => {
        const s = await c.session(n);
        const name = await this.nodeName(n);
        c.say(`${n.name}: kubeadm join`);
        await this.resetIfHalfDone(n, '/etc/kubernetes/kubelet.conf');
        await c.setHosts(s, n, apiserverAddress(n, c.hosts, c.plan, false));
        const config = `${c.dir.remoteRootfs()}/etc/kubeadm-join-node.yaml`;
        await putFiles(s, [{ path: config, content: await this.joinYaml(name), mode: 0o600 }], 'kubeadm join', c.signal);
        await this.exec(n, `kubeadm join --config ${shellQuote(config)}`, 'kubeadm join');
        return `joined as ${name}`;
      });
    });
  }

  /**
   * A newer `version` than the cluster runs: `kubeadm upgrade apply` on
   * master0, then `kubeadm upgrade node` on every other joined host, one at a
   * time, each drained first and uncordoned after its kubelet restarted.
   * Hosts joined later use the new binaries, so they come up at the new version.
   */
  private async upgrade(): Promise<void> {
    const { c } = this;
    const from = c.cf.annotation(KUBE_VERSION_ANNOTATION)!;
    const to = c.plan.version;
    if (versionOrder(to, from) <= 0) return;
    const m0 = this.m0;
    const kubectl = 'kubectl --kubeconfig /etc/kubernetes/admin.conf';
    const joined = (h: RunHost) => h === m0 || c.conditions().some((x) => x.type === `Kube/Join/${h.name}` && x.status === 'True');
    const order = [...masters(c.hosts), ...nodes(c.hosts)].filter(joined);
    for (const h of order) {
      await c.step(`Kube/Upgrade/${h.name}`, c.keyOf(to), async () => {
        const name = shellQuote(await this.nodeName(h));
        c.say(`${h.name}: upgrade ${from} -> ${to}`);
        await this.exec(m0, `${kubectl} drain ${name} --ignore-daemonsets --delete-emptydir-data --force --timeout=300s`, 'drain');
        await this.exec(h, h === m0 ? `kubeadm upgrade apply ${shellQuote(to)} -y` : 'kubeadm upgrade node', 'kubeadm upgrade');
        await this.exec(h, 'systemctl daemon-reload && systemctl restart kubelet', 'restart kubelet');
        await this.exec(m0, `${kubectl} uncordon ${name}`, 'uncordon');
        return `upgraded to ${to}`;
      });
    }
    c.cf.setAnnotation(KUBE_VERSION_ANNOTATION, to);
  }

  /** Every node's load balancer points at the current masters; redone where the masters changed. */
  async syncLoadBalancers(): Promise<void> {
    const { c } = this;
    const ms = masters(c.hosts).map((m) => m.ip);
    await c.inParallel(nodes(c.hosts), async (n) => {
      const lb = lbFiles({ mode: c.plan.lb, cluster: c.dir.name, vip: c.plan.vip, masters: ms, registry: c.plan.registry, bin: `${c.dir.remoteRootfs()}/bin` });
      await c.step(`Kube/LB/${n.name}`, c.keyOf(lb), async () => {
        const s = await c.session(n);
        c.say(`${n.name}: load balancer (${c.plan.lb}) to ${ms.join(', ')}`);
        await putFiles(s, lb.files, 'load balancer', c.signal);
        await this.exec(n, lb.apply, 'load balancer');
        return `${c.plan.lb} to ${ms.join(', ')}`;
      });
    });
  }

  /** A fresh bootstrap token for this run's joins, made on master0 once. */
  private async joinYaml(name: string, controlPlaneIp?: string): Promise<string> {
    if (!this.token) {
      const token = newToken();
      await this.exec(this.m0, `kubeadm token create ${token} --ttl 2h --kubeconfig /etc/kubernetes/admin.conf`, 'kubeadm token');
      this.token = token;
    }
    const files = await loadPki(this.c.dir);
    const docs = await this.documents({ token: this.token, caCertHash: caCertHash(files.get('pki/ca.crt')!) });
    const join = { ...docs.find((d) => d.kind === 'JoinConfiguration')! };
    join.nodeRegistration = { ...(join.nodeRegistration as object), name };
    if (controlPlaneIp) join.controlPlane = { localAPIEndpoint: { advertiseAddress: controlPlaneIp, bindPort: 6443 } };
    return kubeadmYaml([join]);
  }

  /** A step that failed after kubeadm started left its files; kubeadm's preflight refuses them, so undo first. */
  private async resetIfHalfDone(h: RunHost, marker: string): Promise<void> {
    await this.exec(h, `if [ -e ${shellQuote(marker)} ]; then kubeadm reset -f; fi`, 'kubeadm reset');
  }

  private async kubeconfigForRoot(h: RunHost): Promise<void> {
    await this.exec(h, 'mkdir -p "$HOME/.kube" && cp -f /etc/kubernetes/admin.conf "$HOME/.kube/config" && chmod 600 "$HOME/.kube/config"', 'kubeconfig');
  }
}

export function lbModeOf(v: string | undefined): LbMode {
  if (v === undefined || v === '' || v === 'lvscare') return 'lvscare';
  if (v === 'haproxy') return 'haproxy';
  throw new SealimgError('USAGE', `--lb "${v}" is not lvscare or haproxy`);
}

/** What undoes Kubernetes on a host: kubeadm reset (which also leaves etcd on a master), the LB service and files. */
export function kubeCleanupScript(dir: ClusterDir): string {
  const unit = haproxyUnit(dir.name);
  return [
    `PATH=${shellQuote(`${dir.remoteRootfs()}/bin`)}:$PATH; export PATH`,
    'if [ -e /etc/kubernetes/kubelet.conf ] || [ -e /etc/kubernetes/manifests ] || [ -e /etc/kubernetes/admin.conf ]; then if command -v kubeadm >/dev/null; then kubeadm reset -f; fi; fi',
    `if [ -f /etc/systemd/system/${unit}.service ]; then systemctl disable --now ${unit} || true; rm -f /etc/systemd/system/${unit}.service; systemctl daemon-reload || true; fi`,
    `rm -rf ${shellQuote(dirname(haproxyConfigPath(dir.name)))} ${shellQuote(LVSCARE_MANIFEST)}`,
    'if ip link show lvscare >/dev/null 2>&1; then ip link del lvscare; fi',
    'rm -f "$HOME/.kube/config"',
    'true',
  ].join('\n');
}
