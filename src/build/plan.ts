/**
 * Instructions -> build steps. Pure: it knows the base image's config (the
 * builder reads it) but touches no files. It follows docker's rules for ARG
 * scope, ENV/ARG expansion, JSON and shell forms, ENTRYPOINT resetting an
 * inherited CMD and WORKDIR resolving relative paths, and maps sealer's
 * Kubefile instructions onto labels, COPY steps and the
 * `sealer.image.extension` annotation as sealer defines them.
 */
import { SealimgError } from '../errors.js';
import type { ImageConfig, Platform } from '../oci/types.js';
import { syntaxError, type Flag, type Instruction, type ParsedFile } from './parse.js';
import { processWord, rawWords, splitWords, type Vars } from './words.js';

export type RunConfig = NonNullable<ImageConfig['config']>;

/** Where sealer puts an APP's files inside the image. */
export const SEALER_APP_ROOT = '/application/apps';
export const LABEL_KUBE_VERSION = 'app.alpha.sealer.io/supported-kube-version';
export const LABEL_CNI_PREFIX = 'cluster.alpha.sealer.io/kube-cni-';
export const LABEL_CSI_PREFIX = 'cluster.alpha.sealer.io/kube-csi-';

export interface FromSpec {
  /** `scratch` or an image reference, variables expanded. */
  image: string;
  /** FROM --platform, when given. */
  platform?: string;
  where: string;
}

export interface CopyStep {
  kind: 'copy';
  where: string;
  createdBy: string;
  /** ADD: unpack local tar archives, download URLs. */
  add: boolean;
  /** Source paths (context-relative, or inside the `from` image) or URLs for ADD. */
  sources: string[];
  /** Absolute destination in the image; a trailing `/` means "into this directory". */
  dest: string;
  /** COPY --from: an image in the local store. */
  from?: string;
  /** --chmod as a number. */
  chmod?: number;
  /** ADD --checksum=sha256:... for a URL. */
  checksum?: string;
}

export interface RunStep {
  kind: 'run';
  where: string;
  createdBy: string;
  argv: string[];
  /** ARG values in scope and ENV, for the command's environment. */
  env: Record<string, string>;
  /** Absolute, in the image. */
  workdir: string;
}

/** A step that changes only the config: a history entry without a layer. */
export interface MetaStep {
  kind: 'meta';
  where: string;
  createdBy: string;
}

export type Step = CopyStep | RunStep | MetaStep;

export interface SealerApp {
  name: string;
  /** Where its files land in the image. */
  dir: string;
  /** The sources as given (local paths or URLs), for type detection. */
  sources: string[];
  where: string;
}

/** What sealer's Kubefile instructions declared. */
export interface SealerSpec {
  apps: SealerApp[];
  appCmds: Record<string, string[]>;
  appEnv: Record<string, Record<string, string>>;
  launchApps?: string[];
  launchCmds?: string[];
}

export interface Plan {
  from: FromSpec;
  steps: Step[];
  /** The final runtime config (Env, Cmd, Entrypoint, Labels, ...). */
  config: RunConfig;
  author?: string;
  /** Present when the file used Kubefile instructions. */
  sealer?: SealerSpec;
  warnings: string[];
}

export interface PlanOptions {
  buildArgs?: Record<string, string>;
  /** Labels from the command line; they override the file's. */
  labels?: Record<string, string>;
  /** The target platform, for TARGETOS/TARGETARCH and sealer's $ARCH in COPY. */
  platform: Platform;
  /** The base image's config; undefined for scratch. */
  base?: ImageConfig;
  /** Application names the base image already declares (sealer extension), for LAUNCH/APPCMDS. */
  baseApps?: string[];
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];

function platformArgs(p: Platform): Map<string, string> {
  const s = `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
  return new Map([
    ['TARGETPLATFORM', s], ['TARGETOS', p.os], ['TARGETARCH', p.architecture], ['TARGETVARIANT', p.variant ?? ''],
    ['BUILDPLATFORM', s], ['BUILDOS', p.os], ['BUILDARCH', p.architecture], ['BUILDVARIANT', p.variant ?? ''],
  ]);
}

/** Splits `k=v` words (ARG, ENV, LABEL) into pairs, expanding each part. */
function pairs(ins: Instruction, escape: string, vars: Vars | undefined, allowBare: boolean): Array<[string, string | undefined]> {
  const words = rawWords(ins.args, escape);
  if (words.length === 0) throw syntaxError(ins.where, `${ins.keyword} needs at least one argument`);
  const lex = { vars, escape, where: ins.where };
  // Legacy form `ENV key value with spaces`: one pair, the rest of the line is the value.
  if (ins.keyword !== 'ARG' && !words[0]!.includes('=')) {
    if (words.length < 2) throw syntaxError(ins.where, `${ins.keyword} ${words[0]} needs a value (${ins.keyword} key=value)`);
    const rest = ins.args.slice(ins.args.indexOf(words[0]!) + words[0]!.length).trim();
    return [[processWord(words[0]!, lex), processWord(rest, lex)]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq < 0) {
      if (!allowBare) throw syntaxError(ins.where, `${ins.keyword} "${w}" is not key=value`);
      return [processWord(w, { ...lex, vars: undefined }), undefined];
    }
    const key = processWord(w.slice(0, eq), { ...lex, vars: undefined });
    if (key === '') throw syntaxError(ins.where, `${ins.keyword} has an empty name in "${w}"`);
    return [key, processWord(w.slice(eq + 1), lex)];
  });
}

/** JSON form (`["a","b"]`) when the text parses as a JSON array of strings, else undefined (docker's rule). */
function jsonForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(args);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  } catch {
    // not JSON: docker then reads the text as the shell form
  }
  return undefined;
}

/** History text: continuation lines leave runs of spaces that mean nothing outside RUN. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

function posixJoin(base: string, p: string): string {
  const abs = p.startsWith('/') ? p : `${base.replace(/\/+$/, '')}/${p}`;
  const parts: string[] = [];
  for (const c of abs.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') parts.pop();
    else parts.push(c);
  }
  return `/${parts.join('/')}`;
}

function flagMap(ins: Instruction, allowed: string[]): Map<string, Flag> {
  const out = new Map<string, Flag>();
  for (const f of ins.flags) {
    if (!allowed.includes(f.name)) {
      throw syntaxError(f.where, `${ins.keyword} does not take --${f.name}`, allowed.length ? `${ins.keyword} takes ${allowed.map((a) => `--${a}`).join(', ')}` : undefined);
    }
    if (out.has(f.name)) throw syntaxError(f.where, `--${f.name} given twice`);
    out.set(f.name, f);
  }
  return out;
}

function flagValue(f: Flag | undefined, vars: Vars, escape: string): string | undefined {
  if (!f) return undefined;
  if (f.value === null || f.value === '') throw syntaxError(f.where, `--${f.name} needs a value`);
  return processWord(f.value, { vars, escape, where: f.where });
}

/**
 * The FROM line, after the ARGs before it. Called first, so the builder can
 * read the base image's config before planning the rest.
 */
export function planFrom(parsed: ParsedFile, opts: { buildArgs?: Record<string, string>; platform: Platform }): FromSpec {
  const globals = new Map(platformArgs(opts.platform));
  for (const ins of parsed.instructions) {
    if (ins.keyword === 'ARG') {
      for (const [k, v] of pairs(ins, parsed.escape, globals, true)) {
        const given = opts.buildArgs?.[k];
        globals.set(k, given ?? v ?? globals.get(k) ?? '');
      }
      continue;
    }
    if (ins.keyword !== 'FROM') {
      throw syntaxError(ins.where, `${ins.keyword} before FROM`, 'a build file starts with FROM (only ARG may come before it)');
    }
    const flags = flagMap(ins, ['platform']);
    const words = splitWords(ins.args, { vars: globals, escape: parsed.escape, where: ins.where });
    if (words.length === 0) throw syntaxError(ins.where, 'FROM needs an image (or scratch)');
    if (words.length === 3 && words[1]!.toUpperCase() === 'AS') {
      throw new SealimgError('UNSUPPORTED', `${ins.where}: named stages (FROM ... AS ${words[2]}) are not supported`, {
        hint: 'build the other image first and use COPY --from=IMAGE',
      });
    }
    if (words.length !== 1) throw syntaxError(ins.where, `FROM takes one image, got "${ins.args}"`);
    const platform = flagValue(flags.get('platform'), globals, parsed.escape);
    return { image: words[0]!, platform, where: ins.where };
  }
  throw new SealimgError('SEALFILE_SYNTAX', `${parsed.file}: no FROM instruction`, { hint: 'start the file with FROM scratch or FROM IMAGE' });
}

/** Plans the whole file. */
export function plan(parsed: ParsedFile, opts: PlanOptions): Plan {
  const esc = parsed.escape;
  const buildArgs = opts.buildArgs ?? {};
  const from = planFrom(parsed, opts);
  const warnings: string[] = [];
  const base = opts.base?.config ?? {};
  const config: RunConfig = {};
  if (base.User) config.User = base.User;
  if (base.ExposedPorts) config.ExposedPorts = { ...base.ExposedPorts };
  config.Env = [...(base.Env ?? [])];
  if (base.Entrypoint) config.Entrypoint = [...base.Entrypoint];
  if (base.Cmd) config.Cmd = [...base.Cmd];
  if (base.Volumes) config.Volumes = { ...base.Volumes };
  if (base.WorkingDir) config.WorkingDir = base.WorkingDir;
  config.Labels = { ...(base.Labels ?? {}) };
  if (base.StopSignal) config.StopSignal = base.StopSignal;
  let author = opts.base?.author;

  // Global ARGs (before FROM) are visible after it only when declared again, as in docker.
  const globals = new Map(platformArgs(opts.platform));
  const args = new Map<string, string>();
  const usedBuildArgs = new Set<string>();
  let shell = DEFAULT_SHELL;
  let cmdInherited = config.Cmd !== undefined;
  const steps: Step[] = [];
  let sealer: SealerSpec | undefined;
  const appNames = new Set(opts.baseApps ?? []);
  const sealerSpec = (): SealerSpec => (sealer ??= { apps: [], appCmds: {}, appEnv: {} });

  const envMap = (): Map<string, string> => {
    const m = new Map<string, string>();
    for (const e of config.Env ?? []) {
      const eq = e.indexOf('=');
      m.set(eq < 0 ? e : e.slice(0, eq), eq < 0 ? '' : e.slice(eq + 1));
    }
    return m;
  };
  // ENV wins over ARG of the same name, as in docker.
  const vars = (): Map<string, string> => new Map([...args, ...envMap()]);
  const setEnv = (k: string, v: string): void => {
    const env = config.Env!;
    const i = env.findIndex((e) => e === k || e.startsWith(`${k}=`));
    if (i >= 0) env[i] = `${k}=${v}`;
    else env.push(`${k}=${v}`);
  };
  const workdir = (): string => config.WorkingDir || '/';
  const command = (ins: Instruction): string[] => jsonForm(ins.args) ?? [...shell, ins.args];
  const meta = (ins: Instruction): void => {
    steps.push({ kind: 'meta', where: ins.where, createdBy: oneLine(`${ins.keyword} ${ins.args}`) });
  };
  const last = parsed.instructions[parsed.instructions.length - 1];

  let seenFrom = false;
  for (const ins of parsed.instructions) {
    const lex = { vars: vars(), escape: esc, where: ins.where };
    if (!seenFrom) {
      if (ins.keyword === 'ARG') {
        for (const [k, v] of pairs(ins, esc, globals, true)) {
          if (buildArgs[k] !== undefined) usedBuildArgs.add(k);
          globals.set(k, buildArgs[k] ?? v ?? globals.get(k) ?? '');
        }
      } else seenFrom = true; // planFrom has checked that it is the FROM
      continue;
    }
    switch (ins.keyword) {
      case 'FROM':
        throw new SealimgError('UNSUPPORTED', `${ins.where}: a second FROM (multi-stage build) is not supported`, {
          hint: 'build the other image first and use COPY --from=IMAGE',
        });
      case 'ARG':
        for (const [k, v] of pairs(ins, esc, vars(), true)) {
          if (buildArgs[k] !== undefined) usedBuildArgs.add(k);
          args.set(k, buildArgs[k] ?? v ?? globals.get(k) ?? '');
        }
        meta(ins);
        break;
      case 'ENV':
        // All values on one line are expanded with the variables from before it, as docker does.
        for (const [k, v] of pairs(ins, esc, vars(), false)) setEnv(k, v ?? '');
        meta(ins);
        break;
      case 'LABEL':
        for (const [k, v] of pairs(ins, esc, vars(), false)) config.Labels![k] = v ?? '';
        meta(ins);
        break;
      case 'MAINTAINER':
        author = processWord(ins.args, lex);
        meta(ins);
        break;
      case 'CMD':
        if (ins.args === '') throw syntaxError(ins.where, 'CMD needs a command');
        config.Cmd = command(ins);
        cmdInherited = false;
        meta(ins);
        break;
      case 'ENTRYPOINT':
        if (ins.args === '') throw syntaxError(ins.where, 'ENTRYPOINT needs a command');
        config.Entrypoint = command(ins);
        // docker: an ENTRYPOINT resets a CMD that came from the base image.
        if (cmdInherited) {
          delete config.Cmd;
          cmdInherited = false;
        }
        meta(ins);
        break;
      case 'SHELL': {
        const s = jsonForm(ins.args);
        if (!s || s.length === 0) throw syntaxError(ins.where, 'SHELL takes the JSON form: SHELL ["/bin/bash", "-c"]');
        shell = s;
        meta(ins);
        break;
      }
      case 'WORKDIR': {
        const dir = processWord(ins.args, lex);
        if (dir === '') throw syntaxError(ins.where, 'WORKDIR needs a path');
        config.WorkingDir = posixJoin(workdir(), dir);
        meta(ins);
        break;
      }
      case 'USER':
        config.User = processWord(ins.args, lex);
        if (config.User === '') throw syntaxError(ins.where, 'USER needs a user');
        meta(ins);
        break;
      case 'STOPSIGNAL':
        config.StopSignal = processWord(ins.args, lex);
        meta(ins);
        break;
      case 'EXPOSE':
        config.ExposedPorts ??= {};
        for (const p of splitWords(ins.args, lex)) {
          if (!/^\d+(-\d+)?(\/(tcp|udp|sctp))?$/i.test(p)) throw syntaxError(ins.where, `EXPOSE "${p}" is not a port (80, 80/tcp, 53/udp)`);
          config.ExposedPorts[p.includes('/') ? p.toLowerCase() : `${p}/tcp`] = {};
        }
        meta(ins);
        break;
      case 'VOLUME':
        config.Volumes ??= {};
        for (const v of jsonForm(ins.args) ?? splitWords(ins.args, lex)) config.Volumes[v] = {};
        meta(ins);
        break;
      case 'COPY':
      case 'ADD':
        steps.push(copyStep(ins, esc, vars(), workdir(), opts.platform));
        break;
      case 'RUN': {
        flagMap(ins, []);
        if (ins.args === '') throw syntaxError(ins.where, 'RUN needs a command');
        const env: Record<string, string> = Object.fromEntries(vars());
        steps.push({ kind: 'run', where: ins.where, createdBy: `RUN ${ins.args}`, argv: command(ins), env, workdir: workdir() });
        break;
      }
      case 'HEALTHCHECK':
      case 'ONBUILD':
        throw new SealimgError('UNSUPPORTED', `${ins.where}: ${ins.keyword} is not supported in a cluster image`, {
          hint: 'cluster images run no container of their own; remove the instruction',
        });
      // sealer's Kubefile instructions
      case 'KUBEVERSION': {
        const v = processWord(ins.args, lex);
        if (v === '') throw syntaxError(ins.where, 'KUBEVERSION needs a version range, e.g. KUBEVERSION 1.19-1.22');
        config.Labels![LABEL_KUBE_VERSION] = v;
        meta(ins);
        break;
      }
      case 'APP':
      case 'CNI':
      case 'CSI': {
        const words = splitWords(ins.args, lex);
        const [name, ...sources] = words;
        if (name === undefined || sources.length === 0) throw syntaxError(ins.where, `${ins.keyword} needs a name and at least one source: ${ins.keyword} NAME local://PATH|https://URL...`);
        if (!/^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/i.test(name)) throw syntaxError(ins.where, `${ins.keyword} name "${name}" must be letters, digits, ".", "_" and "-"`);
        const dir = `${SEALER_APP_ROOT}/${name}/`;
        const local: string[] = [];
        const remote: string[] = [];
        for (const s of sources) {
          if (s.startsWith('local://')) local.push(s.slice('local://'.length));
          else if (/^https?:\/\//.test(s)) remote.push(s);
          else throw syntaxError(ins.where, `${ins.keyword} source "${s}" must start with local://, http:// or https://`);
        }
        const createdBy = oneLine(`${ins.keyword} ${ins.args}`);
        if (local.length) steps.push({ kind: 'copy', where: ins.where, createdBy, add: false, sources: local, dest: dir });
        if (remote.length) steps.push({ kind: 'copy', where: ins.where, createdBy, add: true, sources: remote, dest: dir });
        sealerSpec().apps.push({ name, dir, sources, where: ins.where });
        appNames.add(name);
        if (ins.keyword !== 'APP') config.Labels![`${ins.keyword === 'CNI' ? LABEL_CNI_PREFIX : LABEL_CSI_PREFIX}${name}`] = 'true';
        break;
      }
      case 'APPCMDS': {
        const name = rawWords(ins.args, esc)[0];
        const rest = name === undefined ? '' : ins.args.slice(ins.args.indexOf(name) + name.length).trim();
        const cmds = jsonForm(rest);
        if (name === undefined || !cmds) throw syntaxError(ins.where, 'APPCMDS takes a name and a JSON list: APPCMDS NAME ["kubectl apply -f app.yaml"]');
        if (!appNames.has(name)) throw syntaxError(ins.where, `APPCMDS names "${name}", which no APP declared`);
        sealerSpec().appCmds[name] = cmds;
        meta(ins);
        break;
      }
      case 'APPENV': {
        const [name, ...kvs] = splitWords(ins.args, lex);
        if (name === undefined || kvs.length === 0) throw syntaxError(ins.where, 'APPENV takes a name and key=value pairs');
        if (!appNames.has(name)) throw syntaxError(ins.where, `APPENV names "${name}", which no APP declared`);
        const env = (sealerSpec().appEnv[name] ??= {});
        for (const kv of kvs) {
          const eq = kv.indexOf('=');
          if (eq <= 0) throw syntaxError(ins.where, `APPENV "${kv}" is not key=value`);
          env[kv.slice(0, eq)] = kv.slice(eq + 1);
        }
        meta(ins);
        break;
      }
      case 'LAUNCH':
      case 'CMDS': {
        const list = jsonForm(ins.args);
        if (!list || list.length === 0) throw syntaxError(ins.where, `${ins.keyword} takes a JSON list: ${ins.keyword} ["..."]`);
        if (ins !== last) throw syntaxError(ins.where, `${ins.keyword} must be the last instruction (sealer's rule)`);
        const spec = sealerSpec();
        if (spec.launchApps || spec.launchCmds) throw syntaxError(ins.where, 'only one LAUNCH or CMDS is allowed');
        if (ins.keyword === 'LAUNCH') {
          for (const a of list) if (!appNames.has(a)) throw syntaxError(ins.where, `LAUNCH names "${a}", which no APP declared`);
          spec.launchApps = list;
        } else spec.launchCmds = list;
        meta(ins);
        break;
      }
      default:
        throw syntaxError(ins.where, `unknown instruction "${ins.keyword}"`);
    }
  }
  for (const k of Object.keys(buildArgs)) {
    if (!usedBuildArgs.has(k)) warnings.push(`build argument ${k} was given but no ARG declares it`);
  }
  for (const [k, v] of Object.entries(opts.labels ?? {})) config.Labels![k] = v;
  if (config.Env!.length === 0) delete config.Env;
  if (Object.keys(config.Labels!).length === 0) delete config.Labels;
  return { from, steps, config, author, sealer, warnings };
}

function copyStep(ins: Instruction, esc: string, vars: Map<string, string>, workdir: string, platform: Platform): CopyStep {
  const add = ins.keyword === 'ADD';
  const flags = flagMap(ins, add ? ['chmod', 'checksum', 'chown'] : ['chmod', 'from', 'chown']);
  const chown = flagValue(flags.get('chown'), vars, esc);
  if (chown !== undefined && !/^0?(:0)?$|^root(:root)?$/.test(chown)) {
    throw new SealimgError('UNSUPPORTED', `${flags.get('chown')!.where}: --chown=${chown}: every file in a cluster image layer belongs to 0:0`, {
      hint: 'set owners at install time (an init script), or drop --chown',
    });
  }
  let chmod: number | undefined;
  const chmodText = flagValue(flags.get('chmod'), vars, esc);
  if (chmodText !== undefined) {
    if (!/^[0-7]{3,4}$/.test(chmodText)) throw syntaxError(flags.get('chmod')!.where, `--chmod=${chmodText} must be octal, like 755 or 0644`);
    chmod = Number.parseInt(chmodText, 8);
  }
  const checksum = flagValue(flags.get('checksum'), vars, esc);
  if (checksum !== undefined && !/^sha256:[a-f0-9]{64}$/.test(checksum)) {
    throw syntaxError(flags.get('checksum')!.where, `--checksum=${checksum} must be sha256:<64 hex>`);
  }
  const from = flagValue(flags.get('from'), vars, esc);
  const json = jsonForm(ins.args);
  // sealer lets a Kubefile's COPY say $ARCH for the target architecture.
  const srcVars = vars.has('ARCH') ? vars : new Map([...vars, ['ARCH', platform.architecture]]);
  let words: string[];
  if (json) words = json.map((w) => processWord(w, { vars: srcVars, escape: esc, where: ins.where }));
  else words = splitWords(ins.args, { vars: srcVars, escape: esc, where: ins.where });
  if (words.length < 2) throw syntaxError(ins.where, `${ins.keyword} needs at least one source and a destination`);
  const dest = words.pop()!;
  const sources = words;
  if (sources.length > 1 && !dest.endsWith('/')) {
    throw syntaxError(ins.where, `${ins.keyword} with several sources needs a directory destination ending in "/" (got "${dest}")`);
  }
  for (const s of sources) {
    if (/^https?:\/\//.test(s) && !add) throw syntaxError(ins.where, `COPY cannot fetch URLs (${s}); use ADD`);
    if (/^https?:\/\//.test(s) && from) throw syntaxError(ins.where, `--from and a URL source do not mix`);
  }
  if (checksum && !sources.every((s) => /^https?:\/\//.test(s))) throw syntaxError(ins.where, '--checksum applies to URL sources only');
  let abs = posixJoin(workdir, dest);
  if ((dest.endsWith('/') || dest === '.' || dest.endsWith('/.')) && abs !== '/') abs += '/';
  const createdBy = oneLine(`${ins.keyword} ${ins.flags.map((f) => `--${f.name}${f.value === null ? '' : `=${f.value}`} `).join('')}${ins.args}`);
  const step: CopyStep = { kind: 'copy', where: ins.where, createdBy, add, sources, dest: abs };
  if (from !== undefined) step.from = from;
  if (chmod !== undefined) step.chmod = chmod;
  if (checksum !== undefined) step.checksum = checksum;
  return step;
}
