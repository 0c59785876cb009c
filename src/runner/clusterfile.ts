/**
 * The Clusterfile, in sealos' shape (apps.sealos.io/v1beta1, kind Cluster), so
 * a sealos user's file works as is. The YAML documents are kept as documents:
 * fields sealimg does not know, comments, and the extra documents (kubeadm
 * configurations, Config patches) survive a read and a write untouched.
 */
import { isMap, isSeq, parseAllDocuments, Document, YAMLMap } from 'yaml';
import { SealimgError } from '../errors.js';
import { writeFileAtomic } from '../content/fsutil.js';

export const CLUSTER_API_VERSION = 'apps.sealos.io/v1beta1';

export interface SSHSpec {
  user?: string;
  passwd?: string;
  pk?: string;
  pkPasswd?: string;
  port?: number;
}

export interface HostSpec {
  /** `ip` or `ip:port`. */
  ips: string[];
  /** master, node, registry, and sealos' arch roles (amd64, arm64). */
  roles: string[];
  env?: string[];
  ssh?: SSHSpec;
}

export interface ClusterSpec {
  hosts: HostSpec[];
  image: string[];
  ssh: SSHSpec;
  env: string[];
  command: string[];
}

export interface Condition {
  type: string;
  status: 'True' | 'False';
  reason?: string;
  message?: string;
  lastHeartbeatTime: string;
}

export interface MountRecord {
  imageName: string;
  type: string;
  digest: string;
  labels: Record<string, string>;
}

/** A `kind: Config` document: a patch applied to a file of an image before distribution. */
export interface ConfigPatch {
  name: string;
  path: string;
  match?: string;
  strategy: 'merge' | 'override' | 'insert' | 'append';
  data: string;
}

function invalid(file: string, field: string, why: string): SealimgError {
  return new SealimgError('CLUSTERFILE_INVALID', `${file}: ${field} ${why}`);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function strings(v: unknown, file: string, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalid(file, field, 'must be a list of strings');
  return v as string[];
}

function ssh(v: unknown, file: string, field: string): SSHSpec {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw invalid(file, field, 'must be a mapping');
  for (const k of ['user', 'passwd', 'pk', 'pkPasswd'] as const) {
    if (v[k] !== undefined && typeof v[k] !== 'string') throw invalid(file, `${field}.${k}`, 'must be a string');
  }
  if (v.port !== undefined && (!Number.isInteger(v.port) || (v.port as number) < 1 || (v.port as number) > 65535)) {
    throw invalid(file, `${field}.port`, 'must be a port number');
  }
  return v as SSHSpec;
}

export class Clusterfile {
  private constructor(
    private readonly cluster: Document,
    readonly extras: Document[],
    readonly file: string,
  ) {}

  static parse(text: string, file = 'Clusterfile'): Clusterfile {
    const docs = parseAllDocuments(text);
    if (!Array.isArray(docs)) throw invalid(file, 'document', 'is empty');
    let cluster: Document | undefined;
    const extras: Document[] = [];
    for (const [i, d] of docs.entries()) {
      if (d.errors.length > 0) {
        const e = d.errors[0]!;
        const pos = e.linePos?.[0];
        throw new SealimgError('CLUSTERFILE_INVALID', `${file}${pos ? `:${pos.line}:${pos.col}` : ''}: ${e.message.split('\n')[0]}`);
      }
      const js = d.toJS() as unknown;
      if (js === null || js === undefined) continue;
      if (isObj(js) && js.kind === 'Cluster') {
        if (cluster) throw invalid(file, `document ${i + 1}`, 'is a second Cluster; a Clusterfile holds one');
        if (js.apiVersion !== CLUSTER_API_VERSION) throw invalid(file, 'apiVersion', `must be ${CLUSTER_API_VERSION}, got ${JSON.stringify(js.apiVersion)}`);
        cluster = d;
      } else extras.push(d);
    }
    if (!cluster) throw invalid(file, 'kind', `no document with kind: Cluster (apiVersion ${CLUSTER_API_VERSION})`);
    const cf = new Clusterfile(cluster, extras, file);
    cf.spec(); // validate now, so a bad file fails before anything runs
    return cf;
  }

  /** A new Clusterfile, as `sealimg run IMAGE --masters ...` describes one. */
  static create(name: string, spec: ClusterSpec, file = 'Clusterfile'): Clusterfile {
    const doc = new Document({ apiVersion: CLUSTER_API_VERSION, kind: 'Cluster', metadata: { name, creationTimestamp: new Date().toISOString() }, spec, status: {} });
    return new Clusterfile(doc, [], file);
  }

  get name(): string {
    const n = this.cluster.getIn(['metadata', 'name']);
    return typeof n === 'string' && n !== '' ? n : 'default';
  }

  /** The spec, checked; every error names the field, e.g. `spec.hosts[1].ips[0]`. */
  spec(): ClusterSpec {
    const f = this.file;
    const js = this.cluster.toJS() as Record<string, unknown>;
    const spec = js.spec;
    if (!isObj(spec)) throw invalid(f, 'spec', 'must be a mapping');
    if (!Array.isArray(spec.hosts)) throw invalid(f, 'spec.hosts', 'must be a list');
    const hosts = spec.hosts.map((h, i): HostSpec => {
      if (!isObj(h)) throw invalid(f, `spec.hosts[${i}]`, 'must be a mapping');
      const ips = strings(h.ips, f, `spec.hosts[${i}].ips`);
      if (ips.length === 0) throw invalid(f, `spec.hosts[${i}].ips`, 'must name at least one address');
      ips.forEach((ip, j) => {
        if (!/^[0-9a-fA-F.:[\]]+$/.test(ip)) throw invalid(f, `spec.hosts[${i}].ips[${j}]`, `"${ip}" is not an IP or IP:port`);
      });
      return { ips, roles: strings(h.roles, f, `spec.hosts[${i}].roles`), env: strings(h.env, f, `spec.hosts[${i}].env`), ssh: ssh(h.ssh, f, `spec.hosts[${i}].ssh`) };
    });
    if (!hosts.some((h) => h.roles.includes('master'))) throw invalid(f, 'spec.hosts', 'must have at least one host with the master role');
    return {
      hosts,
      image: strings(spec.image, f, 'spec.image'),
      ssh: ssh(spec.ssh, f, 'spec.ssh'),
      env: strings(spec.env, f, 'spec.env'),
      command: strings(spec.command, f, 'spec.command'),
    };
  }

  /** metadata.annotations[key]: where sealimg keeps choices sealos' schema has no field for (the LB mode). */
  annotation(key: string): string | undefined {
    const v = this.cluster.getIn(['metadata', 'annotations', key]);
    return typeof v === 'string' ? v : undefined;
  }

  setAnnotation(key: string, value: string): void {
    if (!isMap(this.cluster.getIn(['metadata', 'annotations']))) this.cluster.setIn(['metadata', 'annotations'], new YAMLMap());
    this.cluster.setIn(['metadata', 'annotations', key], value);
  }

  /** Adds addresses as a new spec.hosts entry with these roles (they take the cluster's ssh settings). */
  addHosts(ips: string[], roles: string[]): void {
    const hosts = (this.cluster.toJS() as { spec: { hosts: unknown[] } }).spec.hosts;
    this.cluster.setIn(['spec', 'hosts'], [...hosts, { ips, roles }]);
    this.spec();
  }

  /** Removes an address (as `ip` or `ip:port`) from spec.hosts; an entry left without addresses goes. */
  removeHost(name: string, matches: (addr: string) => boolean): void {
    const hosts = (this.cluster.toJS() as { spec: { hosts: Array<{ ips: string[] }> } }).spec.hosts;
    const kept = hosts.map((h) => ({ ...h, ips: h.ips.filter((a) => !matches(a)) })).filter((h) => h.ips.length > 0);
    if (kept.reduce((n, h) => n + h.ips.length, 0) === hosts.reduce((n, h) => n + h.ips.length, 0)) throw new SealimgError('USAGE', `${name} is not a host of this cluster`);
    this.cluster.setIn(['spec', 'hosts'], kept);
  }

  /** Forgets the recorded steps that `drop` selects (a deleted host's), so adding it again starts afresh. */
  dropConditions(drop: (c: Condition) => boolean): void {
    this.ensureStatus();
    this.cluster.setIn(['status', 'conditions'], this.conditions().filter((c) => !drop(c)));
  }

  setImages(images: string[]): void {
    this.cluster.setIn(['spec', 'image'], images);
  }

  get phase(): string | undefined {
    const p = this.cluster.getIn(['status', 'phase']);
    return typeof p === 'string' ? p : undefined;
  }

  setPhase(phase: string): void {
    this.ensureStatus();
    this.cluster.setIn(['status', 'phase'], phase);
  }

  conditions(): Condition[] {
    const c = (this.cluster.toJS() as { status?: { conditions?: Condition[] } }).status?.conditions;
    return Array.isArray(c) ? c : [];
  }

  /** Records a step's outcome; a step of the same type is replaced, so re-runs do not pile up. */
  setCondition(c: Omit<Condition, 'lastHeartbeatTime'>): void {
    this.ensureStatus();
    const list = this.conditions().filter((x) => x.type !== c.type);
    list.push({ ...c, lastHeartbeatTime: new Date().toISOString() });
    this.cluster.setIn(['status', 'conditions'], list);
  }

  /** Takes over another Clusterfile's status (what has been done), keeping this one's spec. */
  adoptStatus(from: Clusterfile): void {
    this.cluster.set('status', from.cluster.get('status', true) ?? new YAMLMap());
    // sealimg's own records (LB mode, Kubernetes version, alt names) live in annotations: kept unless this file sets them.
    const notes = from.cluster.getIn(['metadata', 'annotations']);
    if (isMap(notes)) for (const pair of notes.items) {
      const k = String((pair.key as { value?: unknown })?.value ?? pair.key);
      const v = (pair.value as { value?: unknown })?.value;
      if (typeof v === 'string' && this.annotation(k) === undefined) this.setAnnotation(k, v);
    }
  }

  private ensureStatus(): void {
    if (!isMap(this.cluster.get('status'))) this.cluster.set('status', new YAMLMap());
  }

  /** What each image brought (as sealos' status.mounts): reset reads the hooks from here. */
  mounts(): MountRecord[] {
    const m = (this.cluster.toJS() as { status?: { mounts?: MountRecord[] } }).status?.mounts;
    return Array.isArray(m) ? m : [];
  }

  setMounts(mounts: MountRecord[]): void {
    this.ensureStatus();
    this.cluster.setIn(['status', 'mounts'], mounts);
  }

  /** The `kind: Config` documents. */
  configs(): ConfigPatch[] {
    const out: ConfigPatch[] = [];
    for (const [i, d] of this.extras.entries()) {
      const js = d.toJS() as Record<string, unknown>;
      if (!isObj(js) || js.kind !== 'Config') continue;
      const spec = js.spec;
      const where = `Config document ${i + 1}`;
      if (!isObj(spec) || typeof spec.path !== 'string' || typeof spec.data !== 'string') throw invalid(this.file, `${where} spec`, 'needs path and data strings');
      const strategy = (spec.strategy as string | undefined) ?? 'merge';
      if (!['merge', 'override', 'insert', 'append'].includes(strategy)) throw invalid(this.file, `${where} spec.strategy`, `"${strategy}" is not merge, override, insert or append`);
      const name = isObj(js.metadata) && typeof js.metadata.name === 'string' ? js.metadata.name : `config-${i + 1}`;
      out.push({ name, path: spec.path, match: typeof spec.match === 'string' ? spec.match : undefined, strategy: strategy as ConfigPatch['strategy'], data: spec.data });
    }
    return out;
  }

  /** The extra documents of the given kind (kubeadm's InitConfiguration, ...), as plain objects. */
  documentsOfKind(kind: string): Record<string, unknown>[] {
    return this.extras.map((d) => d.toJS() as Record<string, unknown>).filter((js) => isObj(js) && js.kind === kind);
  }

  toString(): string {
    return [this.cluster, ...this.extras].map((d) => d.toString()).join('---\n');
  }

  /** The file with every password and passphrase replaced, for printing and logs. */
  redacted(): string {
    const copy = Clusterfile.parse(this.toString(), this.file);
    const hide = (node: unknown): void => {
      if (isMap(node)) {
        for (const pair of node.items) {
          const key = String((pair.key as { value?: unknown })?.value ?? pair.key);
          if (/^(passwd|pkPasswd|password|registryPassword)$/i.test(key) && pair.value !== null) {
            (pair as { value: unknown }).value = copy.cluster.createNode('*****');
          } else hide(pair.value);
        }
      } else if (isSeq(node)) node.items.forEach(hide);
    };
    hide(copy.cluster.contents);
    return copy.toString();
  }

  /** Writes the file atomically, readable by its owner only: it may hold passwords. */
  async save(path: string): Promise<void> {
    await writeFileAtomic(path, this.toString(), 0o600);
  }
}
