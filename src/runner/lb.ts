/**
 * The apiserver load balancer on every node that is not a master, so a node
 * keeps reaching the control plane when one master is lost.
 *
 * - lvscare (default, as sealos): an ipvs virtual server VIP:6443 over every
 *   master, set once with ipvsadm before `kubeadm join` (so the VIP answers
 *   during the join), then kept by a static pod with lvscare's arguments
 *   (`care --vs VIP:6443 --rs M:6443 ... --health-path /healthz
 *   --health-schem https`) whose image comes from the embedded registry.
 * - haproxy (`--lb haproxy`, for kernels without ipvs): haproxy on
 *   127.0.0.1:6443 as a systemd service, TCP passthrough to every master with
 *   an HTTPS health check of /healthz; nodes resolve apiserver.cluster.local
 *   to 127.0.0.1.
 *
 * This module only renders: files to write and one shell command to apply
 * them, so a change of masters is the same operation as the first setup.
 */
import { stringify } from 'yaml';
import { shellQuote } from './ssh.js';
import type { RemoteFile } from './kube.js';

export type LbMode = 'lvscare' | 'haproxy';

export interface LbInput {
  mode: LbMode;
  cluster: string;
  vip: string;
  /** Master IPs. */
  masters: string[];
  /** The embedded registry, `sealos.hub:5000`. */
  registry: string;
  /** The image's bin/ on the host (haproxy, ipvsadm). */
  bin: string;
  lvscareImage?: string;
}

export const LVSCARE_MANIFEST = '/etc/kubernetes/manifests/kube-sealimg-lvscare.yaml';

export function lvscareArgs(vip: string, masters: string[]): string[] {
  return ['care', '--vs', `${vip}:6443`, '--health-path', '/healthz', '--health-schem', 'https', ...masters.flatMap((m) => ['--rs', `${m}:6443`])];
}

export function lvscareManifest(i: LbInput): string {
  const name = 'kube-sealimg-lvscare';
  return stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'kube-system', labels: { component: name, tier: 'control-plane' } },
    spec: {
      hostNetwork: true,
      priorityClassName: 'system-node-critical',
      containers: [
        {
          name,
          image: i.lvscareImage ?? `${i.registry}/labring/lvscare:v4.3.7`,
          imagePullPolicy: 'IfNotPresent',
          command: ['/usr/bin/lvscare'],
          args: lvscareArgs(i.vip, i.masters),
          securityContext: { privileged: true },
          volumeMounts: [{ name: 'lib-modules', mountPath: '/lib/modules', readOnly: true }],
        },
      ],
      volumes: [{ name: 'lib-modules', hostPath: { path: '/lib/modules' } }],
    },
  });
}

/** The ipvs rules lvscare would keep, set once now: the virtual server, one real server per master, the VIP on a dummy link. */
export function ipvsCommands(vip: string, masters: string[]): string {
  const vs = `${vip}:6443`;
  return [
    // The VIP on a local dummy link, as lvscare keeps it; a kernel without dummy links gets a warning (ipvs still takes the VIP's traffic).
    `{ if ip link show lvscare >/dev/null 2>&1 || ip link add lvscare type dummy 2>/dev/null; then ip addr replace ${vip}/32 dev lvscare; else echo "warning: this kernel has no dummy links; ${vip} is not bound locally" >&2; fi; }`,
    `ipvsadm -D -t ${vs} 2>/dev/null || true`,
    `ipvsadm -A -t ${vs} -s rr`,
    ...masters.map((m) => `ipvsadm -a -t ${vs} -r ${m}:6443 -m`),
  ].join(' && ');
}

export const haproxyConfigPath = (cluster: string) => `/etc/sealimg/${cluster}/haproxy.cfg`;
export const haproxyUnit = (cluster: string) => `sealimg-lb-${cluster}`;

export function haproxyConfig(masters: string[]): string {
  return [
    '# The apiserver load balancer sealimg keeps on this node: TLS passes through, /healthz decides.',
    'global',
    '  maxconn 4000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 1h',
    '  timeout server 1h',
    // A master that refuses the connection: try another at once, before the health check notices.
    '  retries 3',
    '  option redispatch',
    'frontend kube-apiserver',
    '  bind 127.0.0.1:6443',
    '  default_backend kube-masters',
    'backend kube-masters',
    '  balance roundrobin',
    '  option httpchk GET /healthz',
    '  http-check expect status 200',
    '  default-server check check-ssl verify none inter 1s fall 2 rise 2',
    ...masters.map((m, i) => `  server master${i} ${m}:6443`),
    '',
  ].join('\n');
}

function haproxyService(i: LbInput): string {
  return [
    '[Unit]',
    `Description=sealimg apiserver load balancer of cluster ${i.cluster} (haproxy)`,
    'After=network-online.target',
    '[Service]',
    `ExecStart=${i.bin}/haproxy -Ws -f ${haproxyConfigPath(i.cluster)}`,
    'ExecReload=/bin/kill -USR2 $MAINPID',
    'Restart=always',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** What to write on a node and the command that applies it (idempotent: same input, same result). */
export function lbFiles(i: LbInput): { files: RemoteFile[]; apply: string } {
  if (i.mode === 'lvscare') {
    const unit = haproxyUnit(i.cluster);
    // A switch from haproxy: that service goes.
    const dropHaproxy = `if [ -f /etc/systemd/system/${unit}.service ]; then systemctl disable --now ${unit} || true; rm -f /etc/systemd/system/${unit}.service ${shellQuote(haproxyConfigPath(i.cluster))}; fi`;
    return { files: [{ path: LVSCARE_MANIFEST, content: lvscareManifest(i), mode: 0o644 }], apply: `${dropHaproxy} && ${ipvsCommands(i.vip, i.masters)}` };
  }
  const unit = haproxyUnit(i.cluster);
  const cfg = haproxyConfigPath(i.cluster);
  return {
    files: [
      { path: cfg, content: haproxyConfig(i.masters), mode: 0o644 },
      { path: `/etc/systemd/system/${unit}.service`, content: haproxyService(i), mode: 0o644 },
    ],
    apply: [
      `test -x ${shellQuote(`${i.bin}/haproxy`)} || { echo "--lb haproxy: the image carries no bin/haproxy" >&2; exit 1; }`,
      `${shellQuote(`${i.bin}/haproxy`)} -c -q -f ${shellQuote(cfg)}`,
      // A switch from lvscare: its static pod goes.
      `rm -f ${shellQuote(LVSCARE_MANIFEST)}`, 'systemctl daemon-reload', `systemctl enable ${unit}`, `systemctl restart ${unit}`].join(' && '),
  };
}
