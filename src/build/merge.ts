/**
 * `sealimg merge`: one image from several, as `sealos merge` does: the
 * filesystems stacked in order (here by stacking their layers, so nothing is
 * recompressed and every layer stays shared with its source image), labels and
 * env merged with the later image winning, CMD and ENTRYPOINT concatenated,
 * and `sealos.io.type` rootfs when any input is one.
 */
import type { OciLayoutStore } from '../content/oci-layout.js';
import { SealimgError } from '../errors.js';
import { OCI_CONFIG, OCI_MANIFEST } from '../oci/mediatypes.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from '../oci/types.js';
import { IMAGES_ANNOTATION } from './builder.js';
import { formatPlatform, loadImage, pushJson, type BaseImage } from './images.js';

export interface MergeOptions {
  tags: string[];
  platform?: Platform;
  /** SOURCE_DATE_EPOCH for the merged image's created time (default 0). */
  sourceDateEpoch?: number;
}

function envKey(e: string): string {
  const eq = e.indexOf('=');
  return eq < 0 ? e : e.slice(0, eq);
}

/** Merges the images named (local store) into one, tagged last. */
export async function merge(store: OciLayoutStore, names: string[], opts: MergeOptions): Promise<Descriptor> {
  if (names.length < 2) throw new SealimgError('USAGE', 'merge needs at least two images');
  const images: BaseImage[] = [];
  for (const n of names) images.push(await loadImage(store, n, opts.platform, `merge ${n}`));
  const first = images[0]!.config;
  for (const [i, img] of images.entries()) {
    if (img.config.os !== first.os || img.config.architecture !== first.architecture) {
      throw new SealimgError('USAGE', `merge: ${names[i]} is ${formatPlatform(img.config)} but ${names[0]} is ${formatPlatform(first)}`, {
        hint: 'merge images of one platform (pick it with --platform)',
      });
    }
  }
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  const seen = new Set<string>();
  const history: NonNullable<ImageConfig['history']> = [];
  const labels: Record<string, string> = {};
  const env = new Map<string, string>();
  const cmd: string[] = [];
  const entrypoint: string[] = [];
  let workdir: string | undefined;
  let historyOk = true;
  const found = new Set<string>();
  for (const [i, img] of images.entries()) {
    const m = img.manifest;
    const ids = img.config.rootfs.diff_ids;
    if (ids.length !== m.layers.length) throw new SealimgError('MANIFEST_INVALID', `${names[i]}: ${m.layers.length} layers but ${ids.length} diff_ids`);
    // A layer two inputs share (their common base) is stacked once, and so is its history entry.
    const kept = m.layers.map((l, j) => {
      if (seen.has(l.digest)) return false;
      seen.add(l.digest);
      layers.push(l);
      diffIds.push(ids[j]!);
      return true;
    });
    const hist = img.config.history ?? [];
    if (hist.filter((h) => !h.empty_layer).length !== m.layers.length) historyOk = false;
    let j = 0;
    for (const h of hist) {
      if (h.empty_layer) history.push(h);
      else if (kept[j++]) history.push(h);
    }
    const c = img.config.config ?? {};
    Object.assign(labels, c.Labels ?? {});
    for (const e of c.Env ?? []) env.set(envKey(e), e);
    cmd.push(...(c.Cmd ?? []));
    entrypoint.push(...(c.Entrypoint ?? []));
    if (c.WorkingDir) workdir = c.WorkingDir;
    const listed = m.annotations?.[IMAGES_ANNOTATION];
    if (listed) {
      try {
        for (const x of JSON.parse(listed) as Array<{ image?: unknown }>) if (typeof x.image === 'string') found.add(x.image);
      } catch {
        // an annotation we cannot read is left out, not fatal
      }
    }
  }
  const types = images.map((img) => img.config.config?.Labels?.['sealos.io.type']);
  if (types.includes('rootfs')) labels['sealos.io.type'] = 'rootfs';
  const created = new Date((opts.sourceDateEpoch ?? 0) * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const config: ImageConfig = {
    created,
    architecture: first.architecture,
    os: first.os,
    ...(first.variant ? { variant: first.variant } : {}),
    config: {
      ...(env.size ? { Env: [...env.values()] } : {}),
      ...(entrypoint.length ? { Entrypoint: entrypoint } : {}),
      ...(cmd.length ? { Cmd: cmd } : {}),
      ...(workdir ? { WorkingDir: workdir } : {}),
      ...(Object.keys(labels).length ? { Labels: labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    ...(historyOk ? { history: [...history, { created, created_by: `sealimg merge ${names.join(' ')}`, empty_layer: true }] } : {}),
  };
  const added: Descriptor[] = [];
  try {
    const configDesc = await pushJson(store, OCI_CONFIG, config, added);
    const annotations: Record<string, string> = {};
    if (found.size) annotations[IMAGES_ANNOTATION] = JSON.stringify([...found].map((image) => ({ image })));
    const manifest: ImageManifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: configDesc, layers, ...(found.size ? { annotations } : {}) };
    const desc = await pushJson(store, OCI_MANIFEST, manifest, added);
    for (const t of opts.tags) await store.tag(desc, t);
    return desc;
  } catch (e) {
    for (const d of added) await store.delete(d).catch(() => undefined);
    throw e;
  }
}
