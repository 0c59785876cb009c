/** sealimg inspect: an image's digest, manifest and config as JSON. */
import { describeImage } from '../../content/describe.js';
import { findImage } from '../../content/local.js';
import { openSource, parseLocation } from '../../content/locations.js';
import { OciLayoutStore } from '../../content/oci-layout.js';
import { canClose } from '../../content/store.js';
import { needArgs, type Command } from '../command.js';

const command: Command = {
  summary: "Show an image's digest, manifest and config as JSON",
  usage: `Usage: sealimg inspect IMAGE

IMAGE is a name or ID in the local store, or a location: oci:DIR:TAG,
docker://HOST/REPO:TAG. Prints {name, digest, mediaType, size, manifest, config, platforms}.`,
  options: {},
  async run(ctx, _flags, args) {
    needArgs('inspect', args, 1, 1, 'one IMAGE');
    const loc = parseLocation(args[0]!, 'local');
    const store = await openSource(loc, ctx);
    try {
      let name = loc.ref;
      let desc;
      if (loc.kind === 'local') {
        const found = await findImage(store as OciLayoutStore, loc.ref);
        desc = found.descriptor;
        name = found.ref ?? args[0]!;
      } else {
        desc = await store.resolve(loc.ref, ctx.signal);
      }
      const info = await describeImage(store, desc, ctx.signal);
      const out = { name, digest: desc.digest, mediaType: desc.mediaType, size: info.size, platforms: info.platforms, manifest: info.manifest, config: info.config ?? null };
      ctx.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } finally {
      if (canClose(store)) await store.close();
    }
  },
};
export default command;
