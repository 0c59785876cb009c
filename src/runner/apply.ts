/**
 * The Applier: compares the cluster a user asks for with the one recorded in
 * ~/.sealimg/<cluster>/Clusterfile and does what is missing, in sealos' order:
 * check hosts, mount images, distribute, bootstrap (hooks), guest commands.
 * Every step is idempotent and recorded in status.conditions with the key of
 * what it depends on, so a re-run skips what is done and a failed run picks up
 * where it stopped. The Clusterfile is written after every step.
 */
import { createHash } from 'node:crypto';
import { readFile, rename } from 'node:fs/promises';
import type { OciLayoutStore } from '../content/oci-layout.js';
import type { RegistryOptions } from '../content/registry-client.js';
import { SealimgError, errnoCode } from '../errors.js';
import { Clusterfile } from './clusterfile.js';
import type { ClusterDir } from './cluster-dir.js';
import { distributeTree, hasSent, listTree } from './distribute.js';
import { inParallel } from './parallel.js';
import { Relay } from './relay.js';
import { hostsOf, masters, registryHost, sshTarget, type RunHost } from './hosts.js';
import { KubeInstaller, apiserverAddress, kubePlan, lbModeOf, refuseDowngrade, type KubePlan } from './kube.js';
import { resolveImages, type RunImage } from './images.js';
import { mergeEnv, mountAll, type MountResult } from './mount.js';
import { SshPool, shellQuote, type SshSession } from './ssh.js';
import type { Vars } from './template.js';

export interface ApplyOptions {
  store: OciLayoutStore;
  dir: ClusterDir;
  /** Local store root and registry settings, for images that must be pulled. */
  root: string;
  registry?: RegistryOptions;
  /** Extra environment (-e K=V). */
  env?: string[];
  /** Replaces the first image's CMD (--cmd). */
  cmd?: string[];
  insecureSkipHostKeyCheck?: boolean;
  say: (line: string) => void;
  signal?: AbortSignal;
  /** How many hosts are worked on at once (default 5). */
  parallel?: number;
  version: string;
  /** The nodes' apiserver load balancer: lvscare (default) or haproxy (--lb). */
  lb?: string;
  /** `add` and `delete`: the desired hosts may differ from the cluster's. */
  hostsChange?: boolean;
}

/** Where the Clusterfile keeps the LB mode (sealos' schema has no field for it). */
export const LB_ANNOTATION = 'sealimg.io/lb';

/** sealos' hook labels, in the order they run at bootstrap. */
const BOOT_HOOKS = ['check', 'init-registry', 'init-cri', 'init'] as const;
/** Their undoing, in the reverse order. */
export const CLEAN_HOOKS = ['clean', 'clean-cri', 'clean-registry'] as const;

export function keyOf(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

export async function loadClusterfile(dir: ClusterDir): Promise<Clusterfile | undefined> {
  try {
    return Clusterfile.parse(await readFile(dir.clusterfile, 'utf8'), dir.clusterfile);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

export function openPool(dir: ClusterDir, opts: { insecureSkipHostKeyCheck?: boolean; say: (l: string) => void }): SshPool {
  return new SshPool({
    knownHostsFile: dir.knownHosts,
    logDir: dir.logs,
    insecureSkipHostKeyCheck: opts.insecureSkipHostKeyCheck,
    onNewHostKey: (host, fp) => opts.say(`${host}: trusting host key ${fp} (first use)`),
    connectTimeoutMs: 15_000,
  });
}

/** The bootstrap and guest environment: the merged ENV plus what sealos' scripts read. */
function hookEnv(vars: Vars, host: RunHost, images: RunImage[], opts: ApplyOptions): Record<string, string> {
  const rootfs = images.filter((i) => i.type !== 'application');
  const kubeVersion = [...rootfs].reverse().find((i) => i.labels.version)?.labels.version ?? '';
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(vars)) if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) env[k] = v;
  for (const kv of host.env) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const mode = host.roles.includes('master') ? 'master' : 'node';
  Object.assign(env, {
    SEALOS_SYS_KUBE_VERSION: kubeVersion,
    SEALOS_SYS_SEALOS_VERSION: opts.version,
    SEALOS_SYS_RUN_MODE: mode,
    SEALIMG_CLUSTER: opts.dir.name,
    SEALIMG_ROLES: host.roles.join(','),
    SEALIMG_HOST_IP: host.ip,
    SEALIMG_ROOTFS: opts.dir.remoteRootfs(),
  });
  return env;
}

export class Applier {
  private pool?: SshPool;
  private cf!: Clusterfile;

  constructor(private readonly opts: ApplyOptions) {}

  private session(h: RunHost): Promise<SshSession> {
    return sshTarget(h).then((t) => this.pool!.host(t));
  }

  private saving: Promise<void> = Promise.resolve();

  /** Writes the Clusterfile; saves from hosts in parallel queue up, and each writes the latest state. */
  private save(): Promise<void> {
    this.saving = this.saving.catch(() => undefined).then(() => this.cf.save(this.opts.dir.clusterfile));
    return this.saving;
  }

  private done(type: string, key: string): boolean {
    return this.cf.conditions().some((c) => c.type === type && c.status === 'True' && c.reason === key);
  }

  /**
   * Runs `fn` as the step `type` unless it is recorded done with `key`, and
   * records the outcome. Without a key the step always runs (it is
   * incremental by itself, as distribution is).
   */
  private async step(type: string, key: string | undefined, fn: () => Promise<string | void>, force = false): Promise<void> {
    if (!force && key !== undefined && this.done(type, key)) return;
    try {
      const message = await fn();
      this.cf.setCondition({ type, status: 'True', reason: key ?? 'Done', message: message || 'done' });
    } catch (e) {
      this.cf.setCondition({ type, status: 'False', reason: 'Failed', message: (e as Error).message.split('\n')[0] });
      await this.save();
      throw e;
    }
    await this.save();
  }

  /**
   * Applies `desired`. Returns false when the cluster already is as asked
   * (nothing was done).
   */
  async apply(desired: Clusterfile): Promise<boolean> {
    const { dir, say } = this.opts;
    const current = await loadClusterfile(dir);
    // As recorded before this run (the status node is shared once adopted below).
    const recorded = current && { phase: current.phase, images: current.spec().image };
    const want = desired.spec();
    if (current) {
      const have = current.spec();
      const hostKey = (s: typeof have) => JSON.stringify(hostsOf(s).map((h) => [h.name, [...h.roles].sort()]));
      const hostsChanged = hostKey(have) !== hostKey(want);
      if (hostsChanged && current.phase === 'ClusterSuccess' && !this.opts.hostsChange) {
        throw new SealimgError('USAGE', `cluster ${dir.name} already runs on other hosts`, { hint: "use 'sealimg add' or 'sealimg delete' to change hosts, or 'sealimg reset' first" });
      }
      const merged = [...have.image, ...want.image.filter((i) => !have.image.includes(i))];
      // The user's latest word on hosts, credentials and env; the recorded state (conditions) from before.
      this.cf = desired;
      this.cf.adoptStatus(current);
      this.cf.setImages(merged);
      if (!hostsChanged && current.phase === 'ClusterSuccess' && merged.length === have.image.length && !this.opts.cmd) {
        await this.save(); // new credentials, say, are kept for the next command
        say(`Cluster ${dir.name} already runs ${have.image.join(', ')}: nothing to do`);
        return false;
      }
    } else this.cf = desired;
    this.cf.setPhase('ClusterInProgress');
    await this.save();

    const spec = this.cf.spec();
    const hosts = hostsOf(spec);
    this.pool = openPool(dir, { insecureSkipHostKeyCheck: this.opts.insecureSkipHostKeyCheck, say });
    try {
      await this.check(hosts);
      const images = await resolveImages(this.opts.store, spec.image, { root: this.opts.root, registry: this.opts.registry, signal: this.opts.signal, say });
      try {
        refuseDowngrade(this.cf, images);
      } catch (e) {
        // Nothing was done: the cluster stays as it was recorded.
        if (recorded) {
          this.cf.setImages(recorded.images);
          this.cf.setPhase(recorded.phase ?? 'ClusterInProgress');
          await this.save();
        }
        throw e;
      }
      this.cf.setMounts(images.map((i) => ({ imageName: i.name, type: i.type, digest: i.descriptor.digest, labels: i.labels })));
      const vars = mergeEnv(images, spec.env, this.opts.env ?? []);
      say(`Mounting ${images.length} image${images.length === 1 ? '' : 's'}`);
      const mounted = await mountAll(this.opts.store, dir, images, vars, this.cf.configs(), this.opts.signal);
      await this.distribute(hosts, mounted);
      // --lb, else what this cluster was made with (a Clusterfile given again may not say).
      const lb = lbModeOf(this.opts.lb ?? current?.annotation(LB_ANNOTATION) ?? this.cf.annotation(LB_ANNOTATION));
      this.cf.setAnnotation(LB_ANNOTATION, lb);
      const kube = kubePlan(images, mounted.rootfs, vars, lb);
      await this.bootstrap(hosts, images, vars, kube);
      if (kube) await new KubeInstaller(this.kubeContext(hosts, kube, vars)).install();
      await this.guest(hosts, images, mounted, vars, spec.command);
      this.cf.setPhase('ClusterSuccess');
      await this.save();
      say(`Cluster ${dir.name} is ready`);
      return true;
    } finally {
      await this.pool.close();
    }
  }

  /** Reachable over SSH, unique hostnames, clocks within 5 s, no other cluster's files. */
  private async check(hosts: RunHost[]): Promise<void> {
    const key = keyOf(hosts.map((h) => h.name));
    if (this.done('Check', key)) return;
    this.opts.say(`Checking ${hosts.length} host${hosts.length === 1 ? '' : 's'}`);
    const facts = new Map<string, { hostname: string; skew: number; others: string[] }>();
    await this.step('Check', key, async () => {
      await inParallel(hosts, this.opts.parallel ?? 5, async (h) => {
        const s = await this.session(h);
        const before = Date.now();
        const r = await s.exec(`hostname; date +%s; ls -1 ${shellQuote(this.opts.dir.remoteRoot().replace(/\/[^/]+$/, ''))} 2>/dev/null || true`, { step: 'check' });
        const [hostname = '', epoch = '0', ...others] = r.stdout.trim().split('\n');
        const local = (before + Date.now()) / 2000;
        facts.set(h.name, { hostname, skew: Math.abs(Number(epoch) - local), others: others.filter((o) => o && o !== this.opts.dir.name) });
      });
      const byName = new Map<string, string>();
      for (const h of hosts) {
        const f = facts.get(h.name)!;
        const other = byName.get(f.hostname);
        if (other) throw new SealimgError('HOST_STEP_FAILED', `${h.name}: check: hostname "${f.hostname}" is also ${other}'s`, { hint: 'every host needs its own hostname (Kubernetes node names come from them)' });
        byName.set(f.hostname, h.name);
        if (f.skew > 5) throw new SealimgError('HOST_STEP_FAILED', `${h.name}: check: its clock is ${f.skew.toFixed(0)} s off this machine's (at most 5 s)`, { hint: 'sync the clocks (chrony/ntp) first' });
        if (f.others.length > 0) throw new SealimgError('HOST_STEP_FAILED', `${h.name}: check: already holds cluster ${f.others.join(', ')}`, { hint: "reset that cluster first ('sealimg reset --cluster NAME')" });
      }
      return `hosts ${[...byName.keys()].join(', ')}`;
    });
  }

  private async distribute(hosts: RunHost[], m: MountResult): Promise<void> {
    const { dir, say } = this.opts;
    const reg = registryHost(hosts);
    const master0 = masters(hosts)[0]!;
    const rootfs = dir.remoteRootfs();
    const isRegistry = (rel: string) => rel === 'registry' || rel.startsWith('registry/');
    const others = hosts.filter((h) => h !== master0);
    // Relay (relay.ts) only on a first run: a host with a record gets only changes, sent directly.
    // On unless SEALIMG_RELAY=0: bench/distribute.ts measures it against direct uploads.
    const fresh = async (h: RunHost) => !(await hasSent(dir.sentState(h.name), rootfs));
    // gzip (level 1) only when asked: it pays on a slow operator link (bench tree, 1 host at 200 Mbit: 31.6 ->
    // 20.0 s) and costs on a fast one (at 1 Gbit: 6.7 -> 10.8-11.1 s distributing); registry/ and most
    // binaries are compressed already.
    const compress = process.env.SEALIMG_DISTRIBUTE_GZIP === '1';
    const targets: RunHost[] = [];
    if (process.env.SEALIMG_RELAY !== '0' && others.length > 0 && (await fresh(master0))) {
      for (const h of others) if (await fresh(h)) targets.push(h);
    }
    let relay: Relay | undefined;
    if (targets.length > 0) {
      const s0 = await this.session(master0);
      relay = await Relay.open(s0, master0, targets, { compress, signal: this.opts.signal }).catch((e: unknown) => {
        say(`${master0.name}: cannot set up the relay (${e instanceof Error ? e.message : String(e)}); every host gets the tree directly`);
        return undefined;
      });
    }

    // One tree for every host: listed once, hashed at most once (distributeTree), each host's record then says what it still lacks.
    const tree = await listTree(m.rootfs);
    let treeBytes = 0;
    for (const f of tree.files.values()) treeBytes += f.size;
    say(`Distributing ${tree.files.size} files (${(treeBytes / 1e6).toFixed(1)} MB) to ${hosts.length} host${hosts.length === 1 ? '' : 's'}${compress ? ', gzipped' : ''}${relay ? `, relayed host to host from master0 ${master0.name}` : ''}`);
    const one = async (h: RunHost) => {
      const s = await this.session(h);
      const state = dir.sentState(h.name);
      await this.step(`Distribute/${h.name}`, undefined, async () => {
        let files = 0;
        let bytes = 0;
        let relayed = '';
        if (relay && h === master0) {
          // master0 first gets what every host gets (no registry/), keeping each batch's stream for the others.
          try {
            const r = await distributeTree(s, m.rootfs, rootfs, state, { exclude: isRegistry, step: 'distribute', signal: this.opts.signal, tee: (n) => relay!.teePath(n), onBatchStart: (n) => relay!.start(n), onBatch: (b) => relay!.add(b), tree, compress });
            files += r.sentFiles;
            bytes += r.sentBytes;
            relay.end();
          } catch (e) {
            relay.end(e);
            throw e;
          }
        } else if (relay && targets.includes(h)) {
          try {
            const r = await relay.replay(s, h, rootfs, state, this.opts.signal);
            if (r.files > 0) relayed = `, ${(r.bytes / 1e6).toFixed(1)} MB of it relayed from ${r.from.join(' and ')}`;
            files += r.files;
            bytes += r.bytes;
          } catch (e) {
            say(`${h.name}: relay failed (${e instanceof Error ? e.message : String(e)}); sending the rest directly`);
          }
        }
        // The direct upload: everything on a host that was not relayed to, else only what the relay left out or missed.
        const r = await distributeTree(s, m.rootfs, rootfs, state, { exclude: h === reg ? undefined : isRegistry, step: 'distribute', signal: this.opts.signal, tree, compress });
        files += r.sentFiles;
        bytes += r.sentBytes;
        if (h === master0) {
          for (const app of m.apps) {
            const a = await distributeTree(s, app.tree, dir.remoteApp(app.name), state, { step: 'distribute', signal: this.opts.signal, compress });
            files += a.sentFiles;
            bytes += a.sentBytes;
          }
        }
        const line = `distributed ${files} file${files === 1 ? '' : 's'} (${(bytes / 1e6).toFixed(1)} MB${relayed})${files === 0 ? ', already up to date' : ''}`;
        say(`${h.name}: ${line}`);
        return line;
      });
    };
    try {
      // master0 runs beside the others (not in their queue): they wait on its batches.
      const results = await Promise.allSettled([
        one(master0).finally(() => relay?.end(new Error('master0 stopped'))),
        inParallel(others, Math.max(1, (this.opts.parallel ?? 5) - 1), one),
      ]);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    } finally {
      await relay?.close().catch((e: unknown) => say(`${master0.name}: could not stop the relay: ${e instanceof Error ? e.message : String(e)}`));
    }
  }

  private async hooks(s: SshSession, h: RunHost, images: RunImage[], vars: Vars, names: readonly string[]): Promise<void> {
    const labels: Record<string, string> = {};
    for (const i of images) if (i.type !== 'application') Object.assign(labels, i.labels);
    const scripts = `${this.opts.dir.remoteRootfs()}/scripts`;
    for (const hook of names) {
      const script = labels[hook];
      const run = script ?? `${hook}.sh`;
      // A hook runs when its label names it, or when the image carries scripts/<hook>.sh.
      const guard = script ? 'true' : `test -f ${shellQuote(run)}`;
      this.opts.say(`${h.name}: ${hook}`);
      await s.exec(`cd ${shellQuote(scripts)} 2>/dev/null || exit 0; if ${guard}; then bash ${run}; fi`, { step: `${hook} hook`, env: hookEnv(vars, h, images, this.opts), signal: this.opts.signal });
    }
  }

  /** This cluster's /etc/hosts lines on a host: the registry domain, and apiserver.cluster.local where Kubernetes is installed. */
  private hostsLines(hosts: RunHost[], h: RunHost, vars: Vars, apiserver?: string): string[] {
    const lines = [`${registryHost(hosts).ip} ${vars.registryDomain ?? 'sealos.hub'}`];
    if (apiserver) lines.push(`${apiserver} apiserver.cluster.local`);
    return lines;
  }

  private kubeContext(hosts: RunHost[], plan: KubePlan, vars: Vars) {
    return {
      dir: this.opts.dir,
      cf: this.cf,
      hosts,
      plan,
      say: this.opts.say,
      signal: this.opts.signal,
      parallel: this.opts.parallel ?? 5,
      session: (h: RunHost) => this.session(h),
      step: (type: string, key: string | undefined, fn: () => Promise<string | void>, force?: boolean) => this.step(type, key, fn, force),
      done: (type: string, key: string) => this.done(type, key),
      conditions: () => this.cf.conditions(),
      setHosts: (s: SshSession, h: RunHost, apiserver: string) => setHostsBlock(s, this.opts.dir.name, this.hostsLines(hosts, h, vars, apiserver)),
      inParallel: <T>(items: T[], fn: (item: T) => Promise<void>) => inParallel(items, this.opts.parallel ?? 5, fn),
      keyOf,
    };
  }

  private async bootstrap(hosts: RunHost[], images: RunImage[], vars: Vars, kube?: KubePlan): Promise<void> {
    const reg = registryHost(hosts);
    const base = images.filter((i) => i.type !== 'application');
    const key = keyOf(base.map((i) => i.descriptor.digest), vars, kube ?? null);
    const one = async (h: RunHost) => {
      await this.step(`Bootstrap/${h.name}`, key, async () => {
        const s = await this.session(h);
        const hooks = (names: readonly string[]) => this.hooks(s, h, base, vars, names);
        await hooks(['check']);
        const joined = this.cf.conditions().some((c) => c.type === `Kube/Join/${h.name}` && c.status === 'True');
        await setHostsBlock(s, this.opts.dir.name, this.hostsLines(hosts, h, vars, kube && apiserverAddress(h, hosts, kube, joined)));
        if (h === reg) await hooks(['init-registry']);
        await hooks(['init-cri', 'init']);
      });
    };
    // The registry host first: the others' hooks may pull from it.
    await one(reg);
    await inParallel(hosts.filter((h) => h !== reg), this.opts.parallel ?? 5, one);
  }

  private async guest(hosts: RunHost[], images: RunImage[], m: MountResult, vars: Vars, specCommand: string[]): Promise<void> {
    const master0 = masters(hosts)[0]!;
    const override = this.opts.cmd && this.opts.cmd.length > 0 ? this.opts.cmd : specCommand.length > 0 ? specCommand : undefined;
    for (const [i, image] of images.entries()) {
      const c = image.config.config ?? {};
      const commands = i === 0 && override ? override : [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
      if (commands.length === 0) continue;
      const key = keyOf(image.descriptor.digest, commands);
      if (image.type === 'application') {
        const app = m.apps.find((a) => a.image === image)!;
        await this.step(`Guest/${app.name}`, key, async () => {
          const s = await this.session(master0);
          for (const cmd of commands) {
            this.opts.say(`${master0.name}: ${app.name}: ${cmd}`);
            await s.exec(`cd ${shellQuote(this.opts.dir.remoteApp(app.name))} && ${cmd}`, { step: `${app.name} command`, env: hookEnv(vars, master0, images, this.opts), signal: this.opts.signal });
          }
        });
      } else {
        await inParallel(hosts, this.opts.parallel ?? 5, (h) =>
          this.step(`Guest/${h.name}/${image.descriptor.digest.slice(7, 19)}`, key, async () => {
            const s = await this.session(h);
            for (const cmd of commands) {
              this.opts.say(`${h.name}: ${cmd}`);
              await s.exec(`cd ${shellQuote(this.opts.dir.remoteRootfs())} && ${cmd}`, { step: 'image command', env: hookEnv(vars, h, images, this.opts), signal: this.opts.signal });
            }
          }),
        );
      }
    }
  }
}

/** Replaces this cluster's block of /etc/hosts lines (idempotent; keeps the file's inode). */
export async function setHostsBlock(s: SshSession, cluster: string, lines: string[]): Promise<void> {
  const begin = `# sealimg:${cluster} begin`;
  const end = `# sealimg:${cluster} end`;
  const block = lines.length > 0 ? [begin, ...lines, end].join('\n') + '\n' : '';
  await s.exec(
    `t=$(mktemp) && sed ${shellQuote(`/^${begin}$/,/^${end}$/d`)} /etc/hosts > "$t" && cat >> "$t" && cat "$t" > /etc/hosts && rm -f "$t"`,
    { stdin: block, step: 'hosts file', label: `/etc/hosts: ${lines.join(', ') || 'remove entries'}` },
  );
}

/** Archives a reset cluster's Clusterfile as Clusterfile.<timestamp>. */
export async function archiveClusterfile(dir: ClusterDir): Promise<string> {
  const to = `${dir.clusterfile}.${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}`;
  await rename(dir.clusterfile, to);
  return to;
}
