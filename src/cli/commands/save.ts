/** sealimg save: write images from the local store into one tarball for offline sites. */
import { ArchiveWriter, hostPlatform, type ArchiveFormat } from '../../content/archive-writer.js';
import { copyGraph, platformMatches } from '../../content/copy.js';
import { findImage, openLocalStore } from '../../content/local.js';
import { fetchAll } from '../../content/store.js';
import { SealimgError } from '../../errors.js';
import { isIndex } from '../../oci/mediatypes.js';
import type { Descriptor, ImageIndex } from '../../oci/types.js';
import { parseManifest } from '../../oci/validate.js';
import { type Command } from '../command.js';
import { progressReporter } from '../progress.js';
import { parsePlatform } from '../transfer.js';

const FORMATS: readonly ArchiveFormat[] = ['both', 'oci-archive', 'docker-archive'];

const command: Command = {
  summary: 'Write images to a tarball for offline sites',
  usage: `Usage: sealimg save -o FILE|- [FLAGS] IMAGE...

Writes every IMAGE (a name or ID in the local store) into one tar, each blob
once. By default the tar is an OCI image layout that also carries docker's
manifest.json, so 'sealimg load', 'skopeo copy oci-archive:FILE:NAME',
'skopeo copy docker-archive:FILE:NAME' and 'docker load' all read it.

Flags:
  -o, --output FILE|-      where to write (- for standard output)
      --format FORMAT      both (default), oci-archive or docker-archive
      --compress           gzip the whole tar
      --platform OS/ARCH   with docker-archive: the image to keep out of a
                           multi-arch index (default this host's)
  -q, --quiet              no progress output`,
  options: {
    output: { type: 'string', short: 'o' },
    format: { type: 'string' },
    compress: { type: 'boolean' },
    platform: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  },
  async run(ctx, flags, args) {
    const output = flags.output as string | undefined;
    if (output === undefined || output === '') throw new SealimgError('USAGE', 'save needs -o FILE (or -o - for standard output)');
    if (args.length === 0) throw new SealimgError('USAGE', 'save needs at least one IMAGE', { hint: "'sealimg images' lists them" });
    const format = (flags.format as ArchiveFormat | undefined) ?? 'both';
    if (!FORMATS.includes(format)) throw new SealimgError('USAGE', `--format "${format}" must be one of ${FORMATS.join(', ')}`);
    if (output === '-' && (ctx.stdout as { isTTY?: boolean }).isTTY) {
      throw new SealimgError('USAGE', 'refusing to write a tarball to a terminal', { hint: 'redirect standard output, or use -o FILE' });
    }
    const platform = parsePlatform(flags.platform as string | undefined) ?? hostPlatform();
    const store = await openLocalStore(ctx.root);
    // Find every image before writing a byte, so a typo fails fast and leaves no file.
    const found = [];
    for (const name of args) found.push(await findImage(store, name));
    const writer = await ArchiveWriter.create(output === '-' ? (ctx.stdout as unknown as import('node:stream').Writable) : output, {
      format,
      compress: Boolean(flags.compress),
      platform,
    });
    const onEvent = progressReporter(ctx.stderr, Boolean(flags.quiet));
    try {
      for (const { ref, descriptor } of found) {
        let root: Descriptor = descriptor;
        // docker-archive holds single-platform images: keep the one this host (or --platform) runs.
        if (format === 'docker-archive' && isIndex(root.mediaType)) {
          const index = parseManifest(await fetchAll(store, root, ctx.signal), root.mediaType, root.digest).manifest as ImageIndex;
          const pick = index.manifests.find((m) => platformMatches(platform, m.platform));
          if (!pick) throw new SealimgError('MANIFEST_UNKNOWN', `${ref ?? root.digest} has no image for ${platform.os}/${platform.architecture}`, { hint: 'pick one with --platform' });
          root = pick;
        }
        await copyGraph(store, writer, root, { signal: ctx.signal, onEvent });
        if (ref) await writer.tag(root, ref);
        else await writer.addUntagged(root);
      }
      await writer.close();
    } catch (e) {
      await writer.abort();
      if (ctx.signal.aborted && ctx.signal.reason instanceof SealimgError) throw ctx.signal.reason;
      throw e;
    } finally {
      await store.close();
    }
    if (output !== '-') ctx.stderr.write(`Saved ${found.length} image${found.length === 1 ? '' : 's'} to ${output}\n`);
  },
};
export default command;
