/**
 * Which container images a build context needs, found where sealos looks:
 * `images/shim/*` (one reference a line), the pod templates of
 * `manifests/**` read as YAML (every kind that holds a pod spec; containers,
 * initContainers, ephemeralContainers; multi-document files), Helm charts
 * under `charts/` (`helm template` when a helm binary is on the PATH, else
 * the image fields of the values), and `images/skopeo/tar.txt` archives.
 * It only lists them; embedding them into registry/ is a separate step.
 */
import { spawn } from 'node:child_process';
import { access, readFile, readdir, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { createRequire } from 'node:module';
import { SealimgError, errnoCode } from '../errors.js';
import type { IgnoreRules } from './ignore.js';

/** yaml is loaded on first use: it costs ~70 ms of start-up, and most builds have no manifest or chart to read. */
const require = createRequire(import.meta.url);
let yamlLib: typeof import('yaml') | undefined;
function parseAllDocuments(text: string): ReturnType<typeof import('yaml').parseAllDocuments> {
  yamlLib ??= require('yaml') as typeof import('yaml');
  return yamlLib.parseAllDocuments(text);
}

export interface DiscoveredImage {
  /** The reference as written (normalized later, when it is copied). */
  image: string;
  /** Context-relative file it came from. */
  from: string;
}

export interface Discovery {
  images: DiscoveredImage[];
  /** `images/skopeo/tar.txt` entries (`docker-archive:PATH@REPO`, `oci-archive:PATH@REPO`). */
  archives: DiscoveredImage[];
  /** Lines for the build output: how each source was read, and what could not be. */
  notes: string[];
}

const MANIFEST_FILE = /\.(ya?ml|json|tmpl)$/i;
const POD_LISTS = ['containers', 'initContainers', 'ephemeralContainers'];

async function files(dir: string, rel: string, ignore?: IgnoreRules): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(join(dir, rel))).sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return [];
    throw e;
  }
  const out: string[] = [];
  for (const n of names) {
    const r = `${rel}/${n}`;
    if (ignore?.ignores(r)) continue;
    const st = await stat(join(dir, r)).catch(() => undefined);
    if (st?.isDirectory()) out.push(...(await files(dir, r, ignore)));
    else if (st?.isFile()) out.push(r);
  }
  return out;
}

/** Reference lines: one a line, `#` starts a comment. */
export function referenceLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
}

/**
 * Calls `fn` for every key and value of every object inside `doc`, in
 * document order (what a reader of the file sees first comes first), parents
 * before children; nesting deeper than 64 is not followed.
 */
function forEachEntry(doc: unknown, fn: (key: string, value: unknown) => void): void {
  const visit = (v: unknown, depth: number): void => {
    if (depth > 64 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      for (const x of v) visit(x, depth + 1);
      return;
    }
    for (const [key, x] of Object.entries(v as Record<string, unknown>)) {
      fn(key, x);
      visit(x, depth + 1);
    }
  };
  visit(doc, 0);
}

/** Every `image` of a container in any pod spec inside a parsed document. */
export function podImages(doc: unknown): string[] {
  const out: string[] = [];
  forEachEntry(doc, (key, x) => {
    if (!POD_LISTS.includes(key) || !Array.isArray(x)) return;
    for (const c of x) {
      const image = (c as Record<string, unknown> | null)?.image;
      if (typeof image === 'string' && image.trim() !== '') out.push(image.trim());
    }
  });
  return out;
}

/** The images a manifest file names; a .tmpl that is not valid YAML falls back to `image:` lines. */
export function manifestImages(text: string, name: string): { images: string[]; note?: string } {
  const docs = parseAllDocuments(text);
  const errors = docs.flatMap((d) => ('errors' in d ? d.errors : []));
  if (errors.length === 0) return { images: docs.flatMap((d) => podImages(d.toJS())) };
  if (/\.tmpl$/i.test(name)) {
    const images = [...text.matchAll(/^\s*-?\s*image:\s*["']?([^"'\s#{}]+)["']?\s*(#.*)?$/gm)].map((m) => m[1]!);
    return { images, note: `${name}: not valid YAML (a template), read its image: lines instead` };
  }
  return { images: [], note: `${name}: not valid YAML, skipped (${errors[0]!.message.split('\n')[0]})` };
}

/** Image references from Helm values: `image: "ref"` or `image: {registry, repository, tag, digest}`. */
export function valuesImages(values: unknown): string[] {
  const out: string[] = [];
  forEachEntry(values, (k, x) => {
    if (!/^image$/i.test(k) && !/Image$/.test(k)) return;
    if (typeof x === 'string' && x.trim() !== '' && !x.includes('{{')) out.push(x.trim());
    else if (x && typeof x === 'object' && !Array.isArray(x)) {
      const m = x as Record<string, unknown>;
      const repo = typeof m.repository === 'string' ? m.repository : typeof m.name === 'string' ? m.name : undefined;
      if (repo) {
        const registry = typeof m.registry === 'string' && m.registry ? `${m.registry}/` : '';
        const tag = typeof m.tag === 'string' || typeof m.tag === 'number' ? `:${m.tag}` : '';
        const digest = typeof m.digest === 'string' && m.digest ? `@${m.digest}` : '';
        out.push(`${registry}${repo}${digest ? '' : tag}${digest}`);
      }
    }
  });
  return out;
}

/** Deep merge of Helm values: maps merge key by key, anything else is replaced. */
export function mergeValues(base: unknown, over: unknown): unknown {
  const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isMap(base) || !isMap(over)) return over === undefined || over === null ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = mergeValues(base[k], v);
  return out;
}

async function onPath(bin: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    if (!d) continue;
    try {
      await access(join(d, bin));
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

function runHelm(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('helm', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new SealimgError('BUILD_FAILED', `helm ${args.join(' ')} exited ${code}: ${err.trim()}`))));
  });
}

/** values.yaml of a packaged chart (.tgz), read from the archive. */
async function tgzValues(path: string): Promise<string | undefined> {
  let text: string | undefined;
  const { list: listTar } = await import('tar'); // loaded when needed, as yaml is
  await listTar({
    file: path,
    filter: (p) => /^[^/]+\/values\.yaml$/.test(p),
    onReadEntry: (entry) => {
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => (text = Buffer.concat(chunks).toString('utf8')));
    },
  });
  return text;
}

/** Lists the images the context needs. */
export async function discoverImages(contextDir: string, ignore?: IgnoreRules): Promise<Discovery> {
  const images: DiscoveredImage[] = [];
  const archives: DiscoveredImage[] = [];
  const notes: string[] = [];
  for (const f of await files(contextDir, 'images/shim', ignore)) {
    for (const image of referenceLines(await readFile(join(contextDir, f), 'utf8'))) images.push({ image, from: f });
  }
  for (const f of await files(contextDir, 'manifests', ignore)) {
    if (!MANIFEST_FILE.test(f)) continue;
    const r = manifestImages(await readFile(join(contextDir, f), 'utf8'), f);
    if (r.note) notes.push(r.note);
    for (const image of r.images) images.push({ image, from: f });
  }
  const charts = await readdir(join(contextDir, 'charts')).catch(() => [] as string[]);
  const helm = charts.length > 0 && (await onPath('helm'));
  for (const name of charts.sort()) {
    const rel = `charts/${name}`;
    if (ignore?.ignores(rel) || name.endsWith('.values.yaml')) continue;
    const path = join(contextDir, rel);
    const st = await stat(path).catch(() => undefined);
    const isTgz = st?.isFile() && /\.tgz$/.test(name);
    if (!st || (!st.isDirectory() && !isTgz)) continue;
    const chart = name.replace(/\.tgz$/, '');
    const extra = join(contextDir, 'charts', `${chart}.values.yaml`);
    const hasExtra = await stat(extra).then((s) => s.isFile(), () => false);
    if (helm) {
      const out = await runHelm(['template', chart, path, ...(hasExtra ? ['-f', extra] : [])]);
      for (const image of manifestImages(out, `${rel} (helm template)`).images) images.push({ image, from: rel });
      notes.push(`${rel}: images from helm template`);
      continue;
    }
    const texts: string[] = [];
    if (st.isDirectory()) texts.push(await readFile(join(path, 'values.yaml'), 'utf8').catch(() => ''));
    else texts.push((await tgzValues(path)) ?? '');
    if (hasExtra) texts.push(await readFile(extra, 'utf8'));
    // helm's rule: the file beside the chart is merged over the chart's own values.
    let values: unknown = {};
    for (const t of texts) for (const doc of parseAllDocuments(t)) values = mergeValues(values, doc.toJS());
    for (const image of valuesImages(values)) images.push({ image, from: rel });
    notes.push(`${rel}: no helm on the PATH, images read from the chart's values${hasExtra ? ` and ${chart}.values.yaml` : ''}`);
  }
  const tarTxt = join(contextDir, 'images', 'skopeo', 'tar.txt');
  const tarText = await readFile(tarTxt, 'utf8').catch(() => undefined);
  if (tarText !== undefined) {
    for (const line of referenceLines(tarText)) {
      if (!/^(docker-archive|oci-archive):[^@]+@.+$/.test(line)) {
        throw new SealimgError('BUILD_FAILED', `images/skopeo/tar.txt: "${line}" is not docker-archive:PATH@REPO or oci-archive:PATH@REPO`);
      }
      archives.push({ image: line, from: 'images/skopeo/tar.txt' });
    }
  }
  // One entry per reference, first source kept.
  const seen = new Set<string>();
  const unique = images.filter((i) => (seen.has(i.image) ? false : (seen.add(i.image), true)));
  return { images: unique, archives, notes };
}
