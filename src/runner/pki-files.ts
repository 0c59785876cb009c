/**
 * What the cluster's certificate files are, apart from how they are made
 * (pki.ts): kube.ts keeps, copies and installs them on every run, and loads
 * the certificate code (and @peculiar/x509, 80 ms of a run's start here) only
 * when it has certificates to make.
 */

/** A relative path under /etc/kubernetes -> file content (PEM or YAML). */
export type PkiFiles = Map<string, string>;

export const CA_FILES = ['pki/ca', 'pki/front-proxy-ca', 'pki/etcd/ca'] as const;

/** Private keys and kubeconfigs (which hold keys) must be readable by root only. */
export function fileMode(path: string): number {
  return path.endsWith('.key') || path.endsWith('.conf') ? 0o600 : 0o644;
}
