/**
 * sealer's `sealer.image.extension` manifest annotation (sealer
 * pkg/define/image/v1): the applications a Kubefile's APP/CNI/CSI declared,
 * their type as sealer detects it from the files, APPCMDS, APPENV, the image's
 * env and labels, and LAUNCH or CMDS; a base image's extension is kept under it.
 */
import { SealimgError } from '../errors.js';
import type { Plan, SealerSpec } from './plan.js';

export const SEALER_EXTENSION = 'sealer.image.extension';

export interface BaseExtension {
  present: boolean;
  type?: string;
  applications: Array<Record<string, unknown> & { name: string }>;
  launch?: Record<string, unknown>;
  env?: Record<string, string>;
}

export function readExtension(text: string | undefined): BaseExtension {
  if (!text) return { present: false, applications: [] };
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const apps = Array.isArray(v.applications) ? (v.applications as Array<Record<string, unknown>>).filter((a): a is Record<string, unknown> & { name: string } => typeof a?.name === 'string') : [];
    return { present: true, type: typeof v.type === 'string' ? v.type : undefined, applications: apps, launch: v.launch as Record<string, unknown> | undefined, env: v.env as Record<string, string> | undefined };
  } catch {
    return { present: false, applications: [] };
  }
}

/** sealer's app type from the files an APP copied (sealer's rules: all yaml = kube, all .sh = shell, a chart = helm). */
function appType(files: string[]): { type: string; launchfiles: string[] } | undefined {
  if (files.length === 0) return undefined;
  if (files.every((f) => /\.ya?ml$/i.test(f))) return { type: 'kube', launchfiles: files };
  if (files.every((f) => /\.sh$/i.test(f))) return { type: 'shell', launchfiles: files };
  const has = (n: string) => files.some((f) => f === n || f.endsWith(`/${n}`));
  if (has('Chart.yaml') && has('values.yaml') && files.some((f) => /(^|\/)templates\//.test(f))) return { type: 'helm', launchfiles: [] };
  return undefined;
}

/** The `sealer.image.extension` annotation: the base image's, with this file's apps, env and launch on top. */
export function sealerExtension(p: Plan, base: BaseExtension, appFiles: Map<string, string[]>): Record<string, unknown> {
  const spec: SealerSpec = p.sealer ?? { apps: [], appCmds: {}, appEnv: {} };
  const apps = new Map(base.applications.map((a) => [a.name, { ...a }]));
  for (const app of spec.apps) {
    const files = appFiles.get(app.name) ?? [];
    const detected = appType(files);
    if (!detected && !spec.appCmds[app.name]) {
      throw new SealimgError('BUILD_FAILED', `${app.where}: cannot tell what kind of application "${app.name}" is (all yaml, all .sh, or a Helm chart)`, {
        hint: `add APPCMDS ${app.name} ["how to launch it"]`,
      });
    }
    const entry: Record<string, unknown> & { name: string } = { name: app.name, type: detected?.type ?? '', launchfiles: detected?.launchfiles ?? [], version: 'v1' };
    apps.set(app.name, entry);
  }
  for (const [name, cmds] of Object.entries(spec.appCmds)) apps.get(name)!.cmds = cmds;
  for (const [name, env] of Object.entries(spec.appEnv)) apps.get(name)!.env = { ...((apps.get(name)!.env as Record<string, string>) ?? {}), ...env };
  const env: Record<string, string> = { ...(base.env ?? {}) };
  for (const e of p.config.Env ?? []) {
    const eq = e.indexOf('=');
    env[e.slice(0, eq < 0 ? undefined : eq)] = eq < 0 ? '' : e.slice(eq + 1);
  }
  const launch = spec.launchApps ? { app_names: spec.launchApps } : spec.launchCmds ? { cmds: spec.launchCmds } : base.launch;
  const rootfsType = p.config.Labels?.['sealos.io.type'] === 'rootfs';
  return {
    schemaVersion: 'v1alpha1',
    type: base.type ?? (rootfsType ? 'kube-installer' : 'app-installer'),
    ...(apps.size ? { applications: [...apps.values()] } : {}),
    ...(p.config.Labels ? { labels: p.config.Labels } : {}),
    ...(Object.keys(env).length ? { env } : {}),
    ...(launch ? { launch } : {}),
  };
}
