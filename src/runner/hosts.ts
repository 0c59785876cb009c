/**
 * Hosts as the runner sees them: one entry per address of the Clusterfile,
 * with its roles and the SSH settings that apply to it (the host's own over
 * the cluster's), and the session that reaches it.
 */
import { readFile } from 'node:fs/promises';
import { SealimgError } from '../errors.js';
import type { ClusterSpec, SSHSpec } from './clusterfile.js';
import type { SshHost } from './ssh.js';

export interface RunHost {
  /** `ip` or `ip:port`, as logs and errors name it. */
  name: string;
  ip: string;
  port: number;
  roles: string[];
  env: string[];
  ssh: SSHSpec;
}

function splitAddress(s: string, defaultPort: number): { ip: string; port: number } {
  const m = /^\[?([0-9a-fA-F.:]+?)\]?(?::(\d+))?$/.exec(s);
  if (!m) throw new SealimgError('CLUSTERFILE_INVALID', `host address "${s}" is not IP or IP:PORT`);
  // A bare IPv6 address has colons of its own: only a bracketed one carries a port.
  if (!s.startsWith('[') && (m[1]!.match(/:/g)?.length ?? 0) > 0 && !m[1]!.includes('.')) return { ip: s, port: defaultPort };
  return { ip: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}

export function hostsOf(spec: ClusterSpec): RunHost[] {
  const out: RunHost[] = [];
  const seen = new Set<string>();
  for (const h of spec.hosts) {
    const ssh = { ...spec.ssh, ...h.ssh };
    for (const addr of h.ips) {
      const { ip, port } = splitAddress(addr, ssh.port ?? 22);
      const name = port === 22 ? ip : `${ip}:${port}`;
      if (seen.has(name)) throw new SealimgError('CLUSTERFILE_INVALID', `host ${name} is listed twice in spec.hosts`);
      seen.add(name);
      out.push({ name, ip, port, roles: h.roles, env: h.env ?? [], ssh });
    }
  }
  return out;
}

export const masters = (hosts: RunHost[]) => hosts.filter((h) => h.roles.includes('master'));
export const nodes = (hosts: RunHost[]) => hosts.filter((h) => !h.roles.includes('master'));
/** The registry host: one with the registry role, else master0. */
export const registryHost = (hosts: RunHost[]) => hosts.find((h) => h.roles.includes('registry')) ?? masters(hosts)[0]!;

/** What ssh2 needs for a host; a key path is read here so a missing key is named with its host. */
export async function sshTarget(h: RunHost): Promise<SshHost> {
  const target: SshHost = { address: h.ip, port: h.port, user: h.ssh.user ?? 'root' };
  if (h.ssh.passwd) target.password = h.ssh.passwd;
  if (h.ssh.pk) {
    try {
      target.privateKey = await readFile(h.ssh.pk);
    } catch (e) {
      if (!h.ssh.passwd) throw new SealimgError('AUTH_FAILED', `${h.name}: cannot read the private key ${h.ssh.pk}: ${(e as Error).message}`);
    }
    if (h.ssh.pkPasswd) target.passphrase = h.ssh.pkPasswd;
  }
  return target;
}
