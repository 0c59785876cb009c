/**
 * Where a cluster's local state lives: `~/.sealimg/<cluster>/` holds the
 * Clusterfile, the merged trees sent to hosts, what each host has received,
 * and each host's command log; `~/.sealimg/mounts/` the images' unpacked
 * trees, shared by every cluster. On hosts, everything goes under
 * /var/lib/sealimg/data/<cluster>/.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SealimgError } from '../errors.js';

export const REMOTE_DATA = '/var/lib/sealimg/data';

/** `$SEALIMG_HOME`, else ~/.sealimg. */
export function sealimgHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.SEALIMG_HOME || join(homedir(), '.sealimg');
}

/** The unpacked images under a sealimg home (ClusterDir.mounts). */
export function mountsDir(home: string): string {
  return join(home, 'mounts');
}

export function checkClusterName(name: string): string {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(name)) {
    throw new SealimgError('USAGE', `cluster name "${name}" must be lowercase letters, digits and dashes (at most 63)`);
  }
  return name;
}

export class ClusterDir {
  constructor(
    readonly home: string,
    readonly name: string,
  ) {
    checkClusterName(name);
  }
  get dir(): string {
    return join(this.home, this.name);
  }
  get clusterfile(): string {
    return join(this.dir, 'Clusterfile');
  }
  get knownHosts(): string {
    return join(this.home, 'known_hosts');
  }
  get logs(): string {
    return join(this.dir, 'logs');
  }
  /**
   * Where images are unpacked, by manifest digest hex: shared by every cluster and kept after a reset
   * (mount.ts pruneMounts drops an image's tree once the image is gone from the store).
   */
  get mounts(): string {
    return mountsDir(this.home);
  }
  mount(digest: string): string {
    return join(this.mounts, digest.replace(/^sha256:/, ''));
  }
  /** The merged rootfs/patch tree, rebuilt by every run. */
  get rootfs(): string {
    return join(this.dir, 'rootfs');
  }
  app(name: string): string {
    return join(this.dir, 'applications', name);
  }
  /** What a host has been sent: relative path -> sha256, per remote directory. */
  sentState(host: string): string {
    return join(this.dir, 'state', `${host.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
  }
  get etc(): string {
    return join(this.dir, 'etc');
  }
  remoteRoot(): string {
    return `${REMOTE_DATA}/${this.name}`;
  }
  remoteRootfs(): string {
    return `${this.remoteRoot()}/rootfs`;
  }
  remoteApp(name: string): string {
    return `${this.remoteRoot()}/applications/${name}/workdir`;
  }
}
