/**
 * The layered builder: reads the build file, plans it, and turns each step into
 * a layer in the local store (COPY/ADD from the context, RUN as the difference
 * it made in a working copy of the image's files), then writes the image
 * config and manifest and tags the image, last. A build that fails removes the
 * blobs it added, so the store is left as it was.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rm } from 'node:fs/promises';
import { arch as hostArch } from 'node:os';
import { basename, join, resolve as resolvePath } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { x as extract } from 'tar';
import { findImage } from '../content/local.js';
import type { OciLayoutStore } from '../content/oci-layout.js';
import { fetchAll } from '../content/store.js';
import { SealimgError, errnoCode, isSealimgError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { OCI_CONFIG, OCI_MANIFEST, isIndex } from '../oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform } from '../oci/types.js';
import { parseImageConfig, parseManifest } from '../oci/validate.js';
import { normalizeReference } from '../oci/reference.js';
import { discoverImages } from './discover.js';
import { loadIgnore, type IgnoreRules } from './ignore.js';
import { LayerCache } from './cache.js';
import { GZIP_LEVEL, writeLayer, type Compression } from './layer.js';
import { parseSealfile } from './parse.js';
import { plan, planFrom, type CopyStep, type Plan, type RunStep, type SealerSpec } from './plan.js';
import { applyEntries, diffSnapshots, runCommand, snapshot, unpackLayer } from './rootfs.js';
import { collectSource, normalize, type EntryMap, type SourceRoot } from './sources.js';
import type { LayerEntry } from './tar-writer.js';

/** sealer's manifest annotation for Kubefile metadata. */
export const SEALER_EXTENSION = 'sealer.image.extension';
export const BASE_NAME = 'org.opencontainers.image.base.name';
export const BASE_DIGEST = 'org.opencontainers.image.base.digest';
/** The container images a cluster image needs, as sealer records them: JSON [{"image": REF}]. */
export const IMAGES_ANNOTATION = 'sealer.image.container.images';

export interface BuildOptions {
  contextDir: string;
  /** The build file; default Sealfile, then Kubefile, in the context. */
  file?: string;
  /** Normalized references to tag the result with. */
  tags: string[];
  buildArgs?: Record<string, string>;
  labels?: Record<string, string>;
  platform?: Platform;
  compression?: Compression;
  /** SOURCE_DATE_EPOCH; every timestamp in the image (default 0). */
  sourceDateEpoch?: number;
  /** Step lines and warnings. */
  log?: (line: string) => void;
  /** Reuse COPY/ADD layers whose inputs did not change (default true). */
  cache?: boolean;
  /** List the container images the context needs (default true; `--save-images=false` turns it off). */
  discoverImages?: boolean;
  /** Output of RUN commands as it comes. */
  onRunOutput?: (chunk: Buffer) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  manifest: Descriptor;
  config: ImageConfig;
  layers: Descriptor[];
}

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64' };

export function hostPlatform(): Platform {
  return { os: 'linux', architecture: GOARCH[hostArch()] ?? hostArch() };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

export function parsePlatformText(s: string, what = '--platform'): Platform {
  const [os, architecture, variant, extra] = s.split('/');
  if (!os || !architecture || extra !== undefined) throw new SealimgError('USAGE', `${what} "${s}" must be OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** Finds the build file: the one named, else Sealfile, else Kubefile in the context. */
async function readBuildFile(contextDir: string, file?: string): Promise<{ path: string; name: string; text: string }> {
  const candidates = file ? [resolvePath(file)] : ['Sealfile', 'Kubefile'].map((n) => join(contextDir, n));
  for (const path of candidates) {
    try {
      return { path, name: file ?? basename(path), text: await readFile(path, 'utf8') };
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  throw new SealimgError('USAGE', file ? `${file}: no such build file` : `${contextDir} has no Sealfile or Kubefile`, {
    hint: 'name the file with -f FILE',
  });
}

export interface BaseImage {
  ref: string;
  manifestDesc: Descriptor;
  manifest: ImageManifest;
  config: ImageConfig;
}

/** An image from the local store, picking `platform` out of an index. */
export async function loadImage(store: OciLayoutStore, name: string, platform: Platform | undefined, where: string): Promise<BaseImage> {
  let found;
  try {
    found = await findImage(store, name);
  } catch (e) {
    if (isSealimgError(e, 'MANIFEST_UNKNOWN') || isSealimgError(e, 'INVALID_REFERENCE')) {
      throw new SealimgError(e.code, `${where}: ${e.message}`, { hint: e.hint });
    }
    throw e;
  }
  let desc = found.descriptor;
  let parsed = parseManifest(await fetchAll(store, desc), desc.mediaType, desc.digest);
  if (isIndex(parsed.mediaType)) {
    const index = parsed.manifest as ImageIndex;
    const want = platform ?? hostPlatform();
    const hit = index.manifests.find((m) => m.platform?.os === want.os && m.platform.architecture === want.architecture && (!want.variant || m.platform.variant === want.variant));
    if (!hit) {
      throw new SealimgError('MANIFEST_UNKNOWN', `${where}: ${name} has no image for ${formatPlatform(want)}`, {
        hint: `it has: ${index.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ')}`,
      });
    }
    desc = hit;
    parsed = parseManifest(await fetchAll(store, desc), desc.mediaType, desc.digest);
  }
  if (isIndex(parsed.mediaType)) throw new SealimgError('MANIFEST_INVALID', `${where}: ${name}: an index inside an index is not supported`);
  const manifest = parsed.manifest as ImageManifest;
  const config = parseImageConfig(await fetchAll(store, manifest.config), manifest.config.digest);
  return { ref: found.ref ?? name, manifestDesc: desc, manifest, config };
}

/** Runs one build. */
export async function build(store: OciLayoutStore, opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => undefined);
  const contextDir = resolvePath(opts.contextDir);
  const bf = await readBuildFile(contextDir, opts.file);
  const parsed = parseSealfile(bf.text, bf.name);
  const epoch = opts.sourceDateEpoch ?? 0;
  const created = new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const compression = opts.compression ?? 'gzip';

  const firstPlatform = opts.platform ?? hostPlatform();
  const from = planFrom(parsed, { buildArgs: opts.buildArgs, platform: firstPlatform });
  const fromPlatform = opts.platform ?? (from.platform ? parsePlatformText(from.platform, `${from.where}: FROM --platform`) : undefined);
  const base = from.image === 'scratch' ? undefined : await loadImage(store, from.image, fromPlatform, from.where);
  const platform: Platform = fromPlatform ?? (base ? { os: base.config.os, architecture: base.config.architecture, ...(base.config.variant ? { variant: base.config.variant } : {}) } : hostPlatform());
  const baseExtension = readExtension(base?.manifest.annotations?.[SEALER_EXTENSION]);
  const p: Plan = plan(parsed, {
    buildArgs: opts.buildArgs,
    labels: opts.labels,
    platform,
    base: base?.config,
    baseApps: baseExtension.applications.map((a) => a.name),
  });
  for (const w of p.warnings) log(`warning: ${w}`);

  const tmp = join(store.root, `.build-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  const added: Descriptor[] = [];
  try {
    const ignore = await loadIgnore(contextDir);
    const contextRoot: SourceRoot = { dir: contextDir, label: 'the build context', ignore, kind: 'context' };
    const layers: Descriptor[] = [...(base?.manifest.layers ?? [])];
    const diffIds: string[] = [...(base?.config.rootfs.diff_ids ?? [])];
    const history: NonNullable<ImageConfig['history']> = [...(base?.config.history ?? [])];
    /** Entries of the layers this build made, for a working copy made later. */
    const newLayers: LayerEntry[][] = [];
    let rootfs: string | undefined;
    const fromRoots = new Map<string, SourceRoot>();
    const appEntries = new Map<string, string[]>();
    let n = 0;

    const ensureRootfs = async (): Promise<string> => {
      if (rootfs) return rootfs;
      const dir = join(tmp, 'rootfs');
      await mkdir(dir);
      log(`--> unpacking ${base ? base.manifest.layers.length : 0} base layer(s) for RUN`);
      for (const l of base?.manifest.layers ?? []) await unpackLayer(store, l, dir, opts.signal);
      for (const entries of newLayers) await applyEntries(entries, dir);
      rootfs = dir;
      return dir;
    };

    const imageRoot = async (name: string, where: string): Promise<SourceRoot> => {
      const known = fromRoots.get(name);
      if (known) return known;
      const img = await loadImage(store, name, platform, where);
      const dir = join(tmp, `from-${fromRoots.size}`);
      await mkdir(dir);
      for (const l of img.manifest.layers) await unpackLayer(store, l, dir, opts.signal);
      const root: SourceRoot = { dir, label: `image ${name}`, kind: 'image' };
      fromRoots.set(name, root);
      return root;
    };

    const cache = opts.cache === false ? undefined : new LayerCache(join(store.root, '.build-cache'));
    const addLayer = async (entries: LayerEntry[], createdBy: string, inRootfs = false): Promise<void> => {
      // RUN layers read from the working copy, whose files are new each build: only COPY/ADD are cached.
      const key = cache && !inRootfs ? await cache.key(entries, { compression, mtime: epoch, gzipLevel: GZIP_LEVEL }) : undefined;
      const hit = key ? await cache!.get(key, store) : undefined;
      const layer = hit ?? (await writeLayer(store, entries, { compression, mtime: epoch, tmpDir: await store.ingestDir(), signal: opts.signal }));
      if (!hit && 'pushed' in layer && layer.pushed) added.push(layer.descriptor);
      if (key && !hit) await cache!.put(key, layer);
      layers.push(layer.descriptor);
      diffIds.push(layer.diffId);
      history.push({ created, created_by: createdBy });
      newLayers.push(entries);
      // A RUN's changes are in the working copy already (and its entries read from there).
      if (rootfs && !inRootfs) await applyEntries(entries, rootfs);
      log(`--> layer ${layer.descriptor.digest.slice(7, 19)} (${entries.length} entries, ${layer.descriptor.size} bytes${hit ? ', cached' : ''})`);
    };

    for (const step of p.steps) {
      n++;
      log(`STEP ${n}/${p.steps.length}: ${step.createdBy}`);
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (step.kind === 'meta') {
        history.push({ created, created_by: step.createdBy, empty_layer: true });
      } else if (step.kind === 'copy') {
        const entries = await copyEntries(step, contextRoot, tmp, imageRoot, n, opts.signal);
        for (const app of p.sealer?.apps ?? []) {
          const dir = normalize(app.dir);
          const files = entries.filter((e) => e.type === 'file' && e.path.startsWith(`${dir}/`)).map((e) => e.path.slice(dir.length + 1));
          if (files.length) appEntries.set(app.name, [...(appEntries.get(app.name) ?? []), ...files]);
        }
        await addLayer(entries, step.createdBy);
      } else {
        const entries = await runStep(step, await ensureRootfs(), opts);
        if (entries.length === 0) {
          history.push({ created, created_by: step.createdBy, empty_layer: true });
          log('--> no changes');
        } else await addLayer(entries, step.createdBy, true);
      }
    }

    const config: ImageConfig = {
      created,
      ...(p.author ? { author: p.author } : {}),
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: p.config,
      rootfs: { type: 'layers', diff_ids: diffIds },
      history,
    };
    const configDesc = await pushJson(store, OCI_CONFIG, config, added);
    const annotations: Record<string, string> = {};
    if (base) {
      annotations[BASE_NAME] = base.ref;
      annotations[BASE_DIGEST] = base.manifestDesc.digest;
    }
    if (opts.discoverImages !== false) {
      const found = await listImages(contextDir, ignore, log);
      if (found.length) annotations[IMAGES_ANNOTATION] = JSON.stringify(found.map((image) => ({ image })));
    }
    if (p.sealer || baseExtension.present) {
      annotations[SEALER_EXTENSION] = JSON.stringify(sealerExtension(p, baseExtension, appEntries));
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: configDesc,
      layers,
      ...(Object.keys(annotations).length ? { annotations } : {}),
    };
    const manifestDesc = await pushJson(store, OCI_MANIFEST, manifest, added);
    // Tags last: until here, no name points at anything this build made.
    for (const t of opts.tags) await store.tag(manifestDesc, t);
    return { manifest: manifestDesc, config, layers };
  } catch (e) {
    for (const d of added) await store.delete(d).catch(() => undefined);
    throw e;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Discovery, as the build shows it; references that do not parse are reported and left out. */
async function listImages(contextDir: string, ignore: IgnoreRules, log: (line: string) => void): Promise<string[]> {
  const d = await discoverImages(contextDir, ignore);
  for (const n of d.notes) log(`images: ${n}`);
  const out: string[] = [];
  for (const i of d.images) {
    try {
      out.push(normalizeReference(i.image));
    } catch (e) {
      log(`images: ${i.from}: skipped "${i.image}": ${(e as Error).message}`);
    }
  }
  const unique = [...new Set(out)];
  if (unique.length || d.archives.length) {
    log(`images: ${unique.length} container image(s) found (listed in the ${IMAGES_ANNOTATION} annotation; embedding into registry/ is not done yet):`);
    for (const i of unique) log(`  ${i}`);
    for (const a of d.archives) log(`  ${a.image} (archive)`);
  }
  return unique;
}

export async function pushJson(store: OciLayoutStore, mediaType: string, doc: unknown, added: Descriptor[]): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const desc: Descriptor = { mediaType, digest: digestOf(bytes), size: bytes.length };
  if (!(await store.exists(desc))) {
    await store.push(desc, Readable.from([bytes]));
    added.push(desc);
  }
  return desc;
}

/** The entries one COPY/ADD puts in its layer. */
async function copyEntries(step: CopyStep, context: SourceRoot, tmp: string, imageRoot: (name: string, where: string) => Promise<SourceRoot>, n: number, signal?: AbortSignal): Promise<LayerEntry[]> {
  const out: EntryMap = new Map();
  const root = step.from ? await imageRoot(step.from, step.where) : context;
  const multi = step.sources.length > 1;
  const opts = { where: step.where, dest: step.dest, chmod: step.chmod };
  for (const [i, source] of step.sources.entries()) {
    if (/^https?:\/\//.test(source)) {
      const file = await download(source, join(tmp, `url-${n}-${i}`), step, signal);
      const dest = step.dest.endsWith('/') ? `${step.dest}${file.name}` : step.dest;
      await collectSource({ dir: file.dir, label: source, kind: 'image' }, file.name, { ...opts, dest, chmod: step.chmod ?? 0o600 }, out, false);
      continue;
    }
    if (!step.add) {
      await collectSource(root, source, opts, out, multi);
      continue;
    }
    // ADD: a local tar archive is unpacked into the destination; other files are copied.
    const found: EntryMap = new Map();
    await collectSource(root, source, opts, found, multi);
    for (const [path, e] of found) {
      const kind = e.type === 'file' && e.source ? await archiveKind(e.source) : undefined;
      if (!kind) {
        out.set(path, e);
        continue;
      }
      if (kind !== 'tar' && kind !== 'gzip') {
        throw new SealimgError('UNSUPPORTED', `${step.where}: ${source} is a ${kind} archive; ADD unpacks tar and tar.gz only`, { hint: 'recompress it as .tar.gz, or COPY it as a file' });
      }
      const dir = join(tmp, `add-${n}-${i}-${out.size}`);
      await mkdir(dir);
      await chmod(dir, 0o755);
      try {
        await extract({ file: e.source!, cwd: dir, strict: true, preserveOwner: false, chmod: true, processUmask: 0 });
      } catch (err) {
        throw new SealimgError('ARCHIVE_INVALID', `${step.where}: ${source}: ${(err as Error).message}`);
      }
      const destDir = step.dest.endsWith('/') ? step.dest : `${step.dest}/`;
      await collectSource({ dir, label: `the archive ${source}`, kind: 'image' }, '.', { ...opts, dest: destDir }, out, true);
    }
  }
  return [...out.values()];
}

async function archiveKind(path: string): Promise<'tar' | 'gzip' | 'bzip2' | 'xz' | 'zstd' | undefined> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(512);
    const { bytesRead } = await fh.read(b, 0, 512, 0);
    if (bytesRead >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (bytesRead >= 3 && b.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
    if (bytesRead >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
    if (bytesRead >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    if (bytesRead >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
    return undefined;
  } finally {
    await fh.close();
  }
}

/** ADD of a URL: downloaded into `dir`, verified against --checksum when given. */
async function download(url: string, dir: string, step: CopyStep, signal?: AbortSignal): Promise<{ dir: string; name: string }> {
  await mkdir(dir, { recursive: true });
  const name = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? '') || 'download';
  const path = join(dir, name);
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (e) {
    throw new SealimgError('NETWORK', `${step.where}: ADD ${url}: ${(e as Error).message}${(e as Error).cause ? ` (${((e as Error).cause as Error).message})` : ''}`);
  }
  if (!res.ok || !res.body) throw new SealimgError('NETWORK', `${step.where}: ADD ${url}: HTTP ${res.status} ${res.statusText}`);
  const hash = createHash('sha256');
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  body.on('data', (d: Buffer) => hash.update(d));
  await pipeline(body, createWriteStream(path, { mode: 0o600 }));
  const got = `sha256:${hash.digest('hex')}`;
  if (step.checksum && got !== step.checksum) {
    throw new SealimgError('DIGEST_MISMATCH', `${step.where}: ADD ${url}: content hashes to ${got}, not the --checksum ${step.checksum}`);
  }
  return { dir, name };
}

/** A RUN: the command in the working copy, and what it changed there. */
async function runStep(step: RunStep, rootfs: string, opts: BuildOptions): Promise<LayerEntry[]> {
  const cwd = join(rootfs, step.workdir);
  await mkdir(cwd, { recursive: true });
  const before = await snapshot(rootfs);
  const env = { PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', ...step.env };
  const r = await runCommand(step.argv, cwd, env, opts.onRunOutput, opts.signal);
  if (r.code !== 0) {
    const out = r.output.trimEnd();
    throw new SealimgError('BUILD_FAILED', `${step.where}: RUN ${step.argv.join(' ')} ${r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`}${out ? `; its output:\n${out}` : ' with no output'}`, {
      hint: 'RUN executes on the build host with sh -c, in a copy of the image files; fix the command and build again',
    });
  }
  return diffSnapshots(before, await snapshot(rootfs), rootfs);
}

interface BaseExtension {
  present: boolean;
  type?: string;
  applications: Array<Record<string, unknown> & { name: string }>;
  launch?: Record<string, unknown>;
  env?: Record<string, string>;
}

function readExtension(text: string | undefined): BaseExtension {
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
function sealerExtension(p: Plan, base: BaseExtension, appFiles: Map<string, string[]>): Record<string, unknown> {
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
