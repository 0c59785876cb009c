/**
 * Mounting, without a container runtime: each image is unpacked once into a
 * cache by digest (shared by clusters, as a pulled image is unpacked once for
 * every container); rootfs and patch images are laid, in the order given, into
 * one tree (later files win); every application image gets a tree of its own.
 * Trees are hard-linked from the cache, so a 700 MB image is not copied per
 * run (sealos' 2x disk complaint), and files sealimg writes (rendered
 * templates, Config patches) replace links rather than write through them.
 */
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, link, lstat, mkdir, readFile, readdir, readlink, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { writeFileAtomic } from '../content/fsutil.js';
import { unpackImage } from '../content/unpack.js';
import type { Descriptor } from '../oci/types.js';
import type { ReadOnlyStore } from '../content/store.js';
import { SealimgError, errnoCode } from '../errors.js';
import type { ConfigPatch } from './clusterfile.js';
import type { ClusterDir } from './cluster-dir.js';
import type { RunImage } from './images.js';
import { inParallel } from './parallel.js';
import { render, type Vars } from './template.js';

/** Unpacks an image into the cache (once; a crash half-way leaves only a temp dir). */
export async function mountImage(store: ReadOnlyStore, dir: ClusterDir, image: RunImage, signal?: AbortSignal): Promise<string> {
  const target = dir.mount(image.descriptor.digest);
  try {
    await lstat(target);
    return target;
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  await mkdir(tmp, { recursive: true });
  try {
    await unpackImage(store, image.descriptor, tmp, { signal });
    // The descriptor beside the tree is how pruneMounts knows the image; written first, so no tree is without one.
    await writeFileAtomic(`${target}.json`, JSON.stringify(image.descriptor), 0o644);
    await rename(tmp, target).catch((e: unknown) => {
      // Another run (of another cluster) unpacked the same image first: its tree is the same.
      if (errnoCode(e) !== 'ENOTEMPTY' && errnoCode(e) !== 'EEXIST') throw e;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return target;
}

/**
 * Removes the unpacked trees of images no longer in the store (`sealimg rmi`), and any tree left without its
 * descriptor by an older sealimg. Trees being unpacked (.tmp-) are left to their run.
 */
export async function pruneMounts(store: ReadOnlyStore, mounts: string, signal?: AbortSignal): Promise<void> {
  let names: string[];
  try {
    names = await readdir(mounts);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw e;
  }
  for (const name of names) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const tree = join(mounts, name);
    let keep = false;
    try {
      const desc = JSON.parse(await readFile(`${tree}.json`, 'utf8')) as Descriptor;
      keep = desc.digest === `sha256:${name}` && (await store.exists(desc, signal));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT' && !(e instanceof SyntaxError)) throw e;
    }
    if (!keep) {
      await rm(tree, { recursive: true, force: true });
      await rm(`${tree}.json`, { force: true });
    }
  }
}

/** Files linked at once: one after another, thousands of small files cost more in round trips than in links. */
const LINK_PARALLEL = 16;

const parentOf = (rel: string) => (rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '');

/** Lays `src` over `dst`: directories merge, files and links replace. */
export async function linkTree(src: string, dst: string): Promise<void> {
  const dirs: string[] = []; // parents before children
  const leaves: Array<{ rel: string; symlink: boolean }> = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(rel ? join(src, rel) : src, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        dirs.push(r);
        await walk(r);
      } else leaves.push({ rel: r, symlink: e.isSymbolicLink() });
    }
  };
  await walk('');
  // A directory made here is empty: nothing in it can be in the way, so nothing in it is looked up
  // (for the first image of a run that is every path: a lstat per file cost more than the links).
  const fresh = new Set<string>();
  if ((await mkdir(dst, { recursive: true })) !== undefined) fresh.add('');
  for (const rel of dirs) {
    const d = join(dst, rel);
    if (!fresh.has(parentOf(rel))) {
      const existing = await lstat(d).catch(() => undefined);
      if (existing?.isDirectory()) continue;
      if (existing) await rm(d, { force: true });
    }
    await mkdir(d);
    fresh.add(rel);
  }
  await inParallel(leaves, LINK_PARALLEL, async ({ rel, symlink: isLink }) => {
    const s = join(src, rel);
    const d = join(dst, rel);
    if (!fresh.has(parentOf(rel))) await rm(d, { recursive: true, force: true });
    if (isLink) await symlink(await readlink(s), d);
    else await link(s, d).catch((e: unknown) => (errnoCode(e) === 'EXDEV' ? copyFile(s, d) : Promise.reject(e)));
  });
}

/** Writes a file in a linked tree without changing the cached image it links to. */
async function replaceFile(path: string, content: string | Buffer, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await unlink(path).catch((e) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  await writeFile(path, content, { mode });
  await chmod(path, mode);
}

/** The merged environment: images' ENV in order, then the Clusterfile's, then -e flags (later wins). */
export function mergeEnv(images: RunImage[], ...more: string[][]): Vars {
  const vars: Vars = {};
  const add = (kv: string) => {
    const eq = kv.indexOf('=');
    if (eq > 0) vars[kv.slice(0, eq)] = kv.slice(eq + 1);
  };
  for (const im of images) for (const kv of im.config.config?.Env ?? []) add(kv);
  for (const list of more) for (const kv of list) add(kv);
  return vars;
}

const TEMPLATE_DIRS = ['etc', 'scripts', 'manifests'];

/** Renders every `*.tmpl` under etc/, scripts/ and manifests/ next to itself, without the suffix. */
export async function renderTemplates(tree: string, vars: Vars): Promise<string[]> {
  const rendered: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && e.name.endsWith('.tmpl')) {
        const rel = relative(tree, p);
        // The rendered file keeps the template's mode: a script stays executable.
        await replaceFile(p.slice(0, -'.tmpl'.length), render(await readFile(p, 'utf8'), vars, rel), (await lstat(p)).mode & 0o7777);
        rendered.push(rel.slice(0, -'.tmpl'.length));
      }
    }
  };
  for (const d of TEMPLATE_DIRS) await walk(join(tree, d));
  return rendered.sort();
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (typeof base === 'object' && base !== null && !Array.isArray(base) && typeof over === 'object' && over !== null && !Array.isArray(over)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v);
    return out;
  }
  return over;
}

/** Applies a Clusterfile `Config` to a file of a tree, as sealos' strategies do. */
export async function applyConfig(tree: string, patch: ConfigPatch): Promise<void> {
  const rel = patch.path.replace(/^\/+/, '');
  if (rel.split('/').includes('..')) throw new SealimgError('CLUSTERFILE_INVALID', `Config ${patch.name}: path "${patch.path}" leaves the image`);
  const path = join(tree, rel);
  const current = await readFile(path, 'utf8').catch((e) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  let next: string;
  switch (patch.strategy) {
    case 'override':
      next = patch.data;
      break;
    case 'append':
      next = (current ?? '') + patch.data;
      break;
    case 'insert':
      next = patch.data + (current ?? '');
      break;
    case 'merge': {
      if (current === undefined) {
        next = patch.data;
        break;
      }
      let a: unknown;
      let b: unknown;
      try {
        a = parseYaml(current);
        b = parseYaml(patch.data);
      } catch (e) {
        throw new SealimgError('CLUSTERFILE_INVALID', `Config ${patch.name}: merge needs YAML on both sides (${(e as Error).message.split('\n')[0]})`);
      }
      next = stringify(deepMerge(a, b));
      break;
    }
  }
  await replaceFile(path, next);
}

export interface MountResult {
  rootfs: string;
  apps: Array<{ image: RunImage; tree: string; name: string }>;
  rendered: string[];
}

/** A short, stable directory name for an application image: its repository's last part. */
export function appName(image: RunImage): string {
  const path = image.name.replace(/[@:].*$/, '').replace(/:[^/]*$/, '');
  return (path.split('/').pop() || 'app').replace(/[^a-z0-9._-]/gi, '-');
}

/** Builds the merged rootfs tree and the application trees for a run. */
export async function mountAll(store: ReadOnlyStore, dir: ClusterDir, images: RunImage[], vars: Vars, configs: ConfigPatch[], signal?: AbortSignal): Promise<MountResult> {
  await pruneMounts(store, dir.mounts, signal);
  await rm(dir.rootfs, { recursive: true, force: true });
  await mkdir(dir.rootfs, { recursive: true });
  const apps: MountResult['apps'] = [];
  for (const image of images) {
    const cached = await mountImage(store, dir, image, signal);
    if (image.type === 'application') {
      const name = appName(image);
      const tree = dir.app(name);
      await rm(tree, { recursive: true, force: true });
      await linkTree(cached, tree);
      apps.push({ image, tree, name });
    } else await linkTree(cached, dir.rootfs);
  }
  const rendered = await renderTemplates(dir.rootfs, vars);
  for (const a of apps) rendered.push(...(await renderTemplates(a.tree, vars)).map((r) => `${a.name}:${r}`));
  for (const c of configs) {
    const app = c.match ? apps.find((a) => a.image.name === c.match || a.image.spec === c.match) : undefined;
    await applyConfig(app ? app.tree : dir.rootfs, c);
  }
  return { rootfs: dir.rootfs, apps, rendered };
}
