/**
 * The layered builder: reads the build file, plans it, and turns each step into
 * a layer in the local store (COPY/ADD from the context, RUN as the difference
 * it made in a working copy of the image's files), then writes the image
 * config and manifest and tags the image, last. A build that fails removes the
 * blobs it added, so the store is left as it was.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { basename, join, resolve as resolvePath } from 'node:path';
import { processAlive } from '../content/fsutil.js';
import type { OpenContext } from '../content/locations.js';
import type { OciLayoutStore } from '../content/oci-layout.js';
import { SealimgError, errnoCode } from '../errors.js';
import { OCI_CONFIG, OCI_MANIFEST } from '../oci/mediatypes.js';
import { normalizeReference } from '../oci/reference.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from '../oci/types.js';
import { LayerCache, type CachedLayer } from './cache.js';
import { copyEntries } from './copy-step.js';
import { discoverImages } from './discover.js';
import type { RegistryLayers } from './embed.js';
import { loadIgnore, type IgnoreRules } from './ignore.js';
import { hostPlatform, loadImage, parsePlatformText, pushJson } from './images.js';
import { GZIP_LEVEL, findIgzip, writeLayer, type Compression } from './layer.js';
import { LAYERS_AT_ONCE, LayerQueue } from './layer-queue.js';
import { prepareTarThread } from './tar-thread.js';
import { parseSealfile } from './parse.js';
import { plan, planFrom, type Plan, type RunStep } from './plan.js';
import { applyEntries, diffSnapshots, runCommand, snapshot, unpackLayer } from './rootfs.js';
import { normalize, type SourceRoot } from './sources.js';
import { readExtension, sealerExtension, SEALER_EXTENSION } from './sealer-extension.js';
import type { LayerEntry } from './tar-writer.js';

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
  /** Copy the discovered images into registry/ (when discoverImages is on). */
  embed?: {
    open: OpenContext;
    allPlatforms?: boolean;
    registryLayers?: RegistryLayers;
    concurrency?: number;
  };
  /** Reuse COPY/ADD layers whose inputs did not change (default true). */
  cache?: boolean;
  /** List the container images the context needs (default true). */
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

/** A layer written by this build (or taken from the cache), with its log line. */
interface WrittenLayer extends CachedLayer {
  line: string;
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

const BUILD_DIR_PREFIX = '.build-';

/** Work directories of builds whose process is gone (killed, crashed) are removed. */
async function removeStaleBuildDirs(root: string): Promise<void> {
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith(BUILD_DIR_PREFIX)) continue;
    const pid = Number.parseInt(name.slice(BUILD_DIR_PREFIX.length), 10);
    if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) await rm(join(root, name), { recursive: true, force: true });
  }
}

/** Runs one build. */
export async function build(store: OciLayoutStore, opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => undefined);
  const contextDir = resolvePath(opts.contextDir);
  const st = await stat(contextDir).catch((e) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  if (!st) throw new SealimgError('USAGE', `${opts.contextDir}: no such directory`, { hint: 'CONTEXT is the directory with the Sealfile and the files it copies' });
  if (!st.isDirectory()) throw new SealimgError('USAGE', `${opts.contextDir} is not a directory`, { hint: 'CONTEXT is the directory with the Sealfile; name another build file with -f FILE' });
  prepareTarThread();
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

  await removeStaleBuildDirs(store.root);
  const tmp = join(store.root, `${BUILD_DIR_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  const added: Descriptor[] = [];
  // Layers are written a few at a time, logged and recorded in step order.
  const queue = new LayerQueue<WrittenLayer>(LAYERS_AT_ONCE, (l) => log(l.line), opts.signal);
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
    const addLayer = async (entries: LayerEntry[], createdBy: string, inRootfs = false, how: { compression?: Compression; contentAddressed?: boolean } = {}): Promise<void> => {
      const c = how.compression ?? compression;
      // RUN layers read from the working copy, whose files are new each build: only COPY/ADD are cached.
      const key = cache && !inRootfs ? await cache.key(entries, { compression: c, mtime: epoch, gzipLevel: GZIP_LEVEL, deflater: c === 'gzip' && (await findIgzip()) ? 'igzip' : 'zlib' }, how.contentAddressed) : undefined;
      const hit = key ? await cache!.get(key, store) : undefined;
      history.push({ created, created_by: createdBy });
      newLayers.push(entries);
      // A RUN's changes are in the working copy already (and its entries read from there).
      if (rootfs && !inRootfs) await applyEntries(entries, rootfs);
      const tmpDir = await store.ingestDir();
      await queue.add(async (signal) => {
        const started = Date.now();
        const layer = hit ?? (await writeLayer(store, entries, { compression: c, mtime: epoch, tmpDir, signal }));
        if (!hit && 'pushed' in layer && layer.pushed) added.push(layer.descriptor);
        if (key && !hit) await cache!.put(key, layer);
        const line = `--> layer ${layer.descriptor.digest.slice(7, 19)} (${entries.length} entries, ${layer.descriptor.size} bytes${hit ? ', cached' : `, ${((Date.now() - started) / 1000).toFixed(1)}s`})`;
        return { descriptor: layer.descriptor, diffId: layer.diffId, line };
      });
      // The next RUN changes the working copy this layer reads its files from.
      if (inRootfs) await queue.idle();
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

    const annotations: Record<string, string> = {};
    if (base) {
      annotations[BASE_NAME] = base.ref;
      annotations[BASE_DIGEST] = base.manifestDesc.digest;
    }
    if (opts.discoverImages !== false) {
      const { images: found, archives } = await listImages(contextDir, ignore, log, opts.embed !== undefined);
      if (found.length) annotations[IMAGES_ANNOTATION] = JSON.stringify(found.map((image) => ({ image })));
      if ((found.length || archives.length) && opts.embed) {
        const dir = join(tmp, 'registry');
        log(`STEP embed: ${found.length + archives.length} image(s) into /registry`);
        // Loaded only for a build that embeds images, so the build command starts without the copy code.
        const { embedImages, parseArchiveLine, registryLayers } = await import('./embed.js');
        const fromArchives = archives.map((line) => parseArchiveLine(line, join(contextDir, 'images', 'skopeo')));
        await embedImages(found, dir, { open: opts.embed.open, platform, allPlatforms: opts.embed.allPlatforms, concurrency: opts.embed.concurrency, signal: opts.signal, log }, fromArchives);
        const split = opts.embed.registryLayers ?? 'split';
        for (const l of await registryLayers(dir, split)) {
          // A big blob is stored as it is (already compressed), as its own layer: the same bytes in every cluster image.
          const own = split === 'split' && l.entries.length === 1;
          await addLayer(l.entries, `sealimg embed: ${l.what}`, false, own ? { compression: 'none', contentAddressed: true } : {});
        }
      }
    }
    for (const l of await queue.drain()) {
      layers.push(l.descriptor);
      diffIds.push(l.diffId);
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
    // No layer write may still be adding a blob while the added ones are removed.
    await queue.stop(e);
    for (const d of added) await store.delete(d).catch(() => undefined);
    throw e;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Discovery, as the build shows it; references that do not parse are reported and left out. */
async function listImages(contextDir: string, ignore: IgnoreRules, log: (line: string) => void, embedding: boolean): Promise<{ images: string[]; archives: string[] }> {
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
    log(`images: ${unique.length} container image(s)${d.archives.length ? ` and ${d.archives.length} archive(s)` : ''} found (images listed in the ${IMAGES_ANNOTATION} annotation${embedding ? '' : '; not embedded: --save-images=false'}):`);
    for (const i of unique) log(`  ${i}`);
    for (const a of d.archives) log(`  ${a.image}`);
  }
  return { images: unique, archives: d.archives.map((a) => a.image) };
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

