/**
 * kubeadm's configuration for a cluster: InitConfiguration,
 * ClusterConfiguration, JoinConfiguration, KubeletConfiguration and
 * KubeProxyConfiguration, in the kubeadm API version that fits the Kubernetes
 * version (v1beta2 before 1.22, v1beta3 before 1.31, v1beta4 from 1.31), with
 * sealos' defaults, and the Clusterfile's own kubeadm documents laid over
 * them field by field.
 */
import { stringify } from 'yaml';
import { SealimgError } from '../errors.js';

export const API_SERVER_DOMAIN = 'apiserver.cluster.local';
export const DEFAULT_VIP = '10.103.97.2';

export interface KubeadmInput {
  kubeVersion: string;
  masters: Array<{ name: string; ip: string }>;
  vip?: string;
  /** `sealos.hub:5000`: control-plane images come from the embedded registry. */
  imageRepository?: string;
  podSubnet?: string;
  serviceSubnet?: string;
  dnsDomain?: string;
  certSANs?: string[];
  criSocket?: string;
  /** Join credentials, once master0 is up. */
  token?: string;
  caCertHash?: string;
  certificateKey?: string;
  /** The Clusterfile's kubeadm documents (any of the five kinds), applied over the defaults. */
  overrides?: Array<Record<string, unknown>>;
}

export type KubeadmApi = 'kubeadm.k8s.io/v1beta2' | 'kubeadm.k8s.io/v1beta3' | 'kubeadm.k8s.io/v1beta4';

type Doc = Record<string, unknown>;

function invalid(field: string, why: string): SealimgError {
  return new SealimgError('CLUSTERFILE_INVALID', `kubeadm ${field} ${why}`);
}

export function parseKubeVersion(v: string): { major: number; minor: number; patch: number } {
  const m = /^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(v);
  if (!m) throw invalid('kubernetesVersion', `"${v}" is not vMAJOR.MINOR.PATCH (from the image's "version" label)`);
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
}

export function kubeadmApiVersion(kubeVersion: string): KubeadmApi {
  const { major, minor } = parseKubeVersion(kubeVersion);
  if (major !== 1) throw invalid('kubernetesVersion', `"${kubeVersion}" is not a Kubernetes 1.x version`);
  if (minor < 22) return 'kubeadm.k8s.io/v1beta2';
  if (minor < 31) return 'kubeadm.k8s.io/v1beta3';
  return 'kubeadm.k8s.io/v1beta4';
}

function checkCidr(field: string, v: unknown): void {
  if (typeof v !== 'string') throw invalid(field, 'must be a CIDR string');
  for (const part of v.split(',')) {
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(part.trim());
    const okV6 = /^[0-9a-fA-F:]+\/\d+$/.test(part.trim());
    if (!okV6 && (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32)) throw invalid(field, `"${v}" is not a CIDR (like 10.96.0.0/22)`);
  }
}

const isObj = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Lays `over` onto `base`: maps merge key by key, everything else is replaced. */
export function overlay(base: Doc, over: Doc): Doc {
  const out: Doc = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObj(v) && isObj(out[k]) ? overlay(out[k] as Doc, v) : v;
  return out;
}

/** v1beta4 keeps extraArgs as a list of {name, value}; older versions as a map. Accept either from users. */
function argsFor(api: KubeadmApi, args: Record<string, string>): unknown {
  return api === 'kubeadm.k8s.io/v1beta4' ? Object.entries(args).map(([name, value]) => ({ name, value })) : args;
}

function normalizeExtraArgs(api: KubeadmApi, doc: unknown): unknown {
  if (Array.isArray(doc)) return doc.map((d) => normalizeExtraArgs(api, d));
  if (!isObj(doc)) return doc;
  const out: Doc = {};
  for (const [k, v] of Object.entries(doc)) {
    if (k === 'extraArgs') {
      const asMap: Record<string, string> = Array.isArray(v) ? Object.fromEntries(v.map((a: { name: string; value: string }) => [a.name, a.value])) : (v as Record<string, string>);
      out[k] = argsFor(api, asMap);
    } else out[k] = normalizeExtraArgs(api, v);
  }
  return out;
}

/** The five documents, checked; overrides win field by field. */
export function kubeadmDocuments(input: KubeadmInput): Doc[] {
  const api = kubeadmApiVersion(input.kubeVersion);
  const master0 = input.masters[0];
  if (!master0) throw invalid('masters', 'must name at least one master');
  const vip = input.vip ?? DEFAULT_VIP;
  const podSubnet = input.podSubnet ?? '100.64.0.0/10';
  const serviceSubnet = input.serviceSubnet ?? '10.96.0.0/22';
  const criSocket = input.criSocket ?? 'unix:///run/containerd/containerd.sock';
  const sans = [...new Set(['127.0.0.1', 'localhost', API_SERVER_DOMAIN, vip, 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', `kubernetes.default.svc.${input.dnsDomain ?? 'cluster.local'}`, ...input.masters.flatMap((m) => [m.ip, m.name]), ...(input.certSANs ?? [])])];

  const init: Doc = {
    apiVersion: api,
    kind: 'InitConfiguration',
    localAPIEndpoint: { advertiseAddress: master0.ip, bindPort: 6443 },
    nodeRegistration: { criSocket, name: master0.name },
  };
  if (input.token) init.bootstrapTokens = [{ token: input.token, ttl: '24h0m0s', usages: ['signing', 'authentication'], groups: ['system:bootstrappers:kubeadm:default-node-token'] }];
  const cluster: Doc = {
    apiVersion: api,
    kind: 'ClusterConfiguration',
    kubernetesVersion: input.kubeVersion.startsWith('v') ? input.kubeVersion : `v${input.kubeVersion}`,
    controlPlaneEndpoint: `${API_SERVER_DOMAIN}:6443`,
    imageRepository: input.imageRepository ?? 'sealos.hub:5000',
    networking: { podSubnet, serviceSubnet, dnsDomain: input.dnsDomain ?? 'cluster.local' },
    apiServer: { certSANs: sans },
    controllerManager: { extraArgs: argsFor(api, { 'cluster-signing-duration': '876000h', 'bind-address': '0.0.0.0' }) },
    scheduler: { extraArgs: argsFor(api, { 'bind-address': '0.0.0.0' }) },
    etcd: { local: { dataDir: '/var/lib/etcd' } },
  };
  if (api === 'kubeadm.k8s.io/v1beta4') {
    // Only v1beta4 can say it; older kubeadm gets 99-year certificates from sealimg's own PKI.
    cluster.certificateValidityPeriod = '876000h0m0s';
    cluster.caCertificateValidityPeriod = '876000h0m0s';
  }
  const join: Doc = {
    apiVersion: api,
    kind: 'JoinConfiguration',
    discovery: {
      bootstrapToken: { apiServerEndpoint: `${API_SERVER_DOMAIN}:6443`, token: input.token ?? '', caCertHashes: input.caCertHash ? [input.caCertHash] : [], unsafeSkipCAVerification: false },
      timeout: '5m0s',
    },
    nodeRegistration: { criSocket },
  };
  const kubelet: Doc = {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    cgroupDriver: 'systemd',
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: '/etc/kubernetes/pki/ca.crt' } },
    rotateCertificates: true,
    serverTLSBootstrap: false,
  };
  const proxy: Doc = {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'ipvs',
    ipvs: { excludeCIDRs: [`${vip}/32`] },
  };

  const byKind: Record<string, Doc> = { InitConfiguration: init, ClusterConfiguration: cluster, JoinConfiguration: join, KubeletConfiguration: kubelet, KubeProxyConfiguration: proxy };
  for (const o of input.overrides ?? []) {
    const kind = o.kind as string;
    const target = byKind[kind];
    if (!target) throw invalid('document', `of kind ${JSON.stringify(kind)} is not one of ${Object.keys(byKind).join(', ')}`);
    const { apiVersion: _ignored, ...fields } = o;
    byKind[kind] = overlay(target, normalizeExtraArgs(api, fields) as Doc);
    const extra = kind === 'ClusterConfiguration' && isObj(fields.apiServer) ? fields.apiServer.certSANs : undefined;
    if (extra !== undefined) {
      if (!Array.isArray(extra) || extra.some((x) => typeof x !== 'string')) throw invalid('ClusterConfiguration.apiServer.certSANs', 'must be a list of strings');
      // Added to sealimg's names, never replacing them: without the masters and the VIP nothing could reach the apiserver.
      (byKind[kind]!.apiServer as Doc).certSANs = [...new Set([...sans, ...(extra as string[])])];
    }
  }

  const c = byKind.ClusterConfiguration!;
  const net = isObj(c.networking) ? c.networking : {};
  checkCidr('ClusterConfiguration.networking.podSubnet', net.podSubnet);
  checkCidr('ClusterConfiguration.networking.serviceSubnet', net.serviceSubnet);
  if (typeof c.controlPlaneEndpoint !== 'string' || !/^[^:\s]+:\d{1,5}$/.test(c.controlPlaneEndpoint)) {
    throw invalid('ClusterConfiguration.controlPlaneEndpoint', `${JSON.stringify(c.controlPlaneEndpoint)} must be HOST:PORT`);
  }
  parseKubeVersion(String(c.kubernetesVersion));
  const mode = byKind.KubeProxyConfiguration!.mode;
  if (mode !== undefined && !['ipvs', 'iptables', 'nftables', ''].includes(String(mode))) throw invalid('KubeProxyConfiguration.mode', `"${mode}" is not ipvs, iptables or nftables`);
  return Object.values(byKind);
}

/** The documents as one YAML file for `kubeadm init --config` / `kubeadm join --config`. */
export function kubeadmYaml(docs: Doc[], kinds?: string[]): string {
  return docs
    .filter((d) => !kinds || kinds.includes(d.kind as string))
    .map((d) => stringify(d))
    .join('---\n');
}
