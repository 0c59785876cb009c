/** sealimg images: list what the local store holds. */
import { describeImage } from '../../content/describe.js';
import { openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { parseReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';
import { humanAge, humanSize, shortId, table } from '../output.js';

const command: Command = {
  summary: 'List images in the local store',
  usage: `Usage: sealimg images [FLAGS]

Flags:
      --format table|json  output format (default table); json is an array of
                           {name, repository, tag, digest, id, created, size, platforms}
  -q, --quiet              print image IDs only`,
  options: { format: { type: 'string' }, quiet: { type: 'boolean', short: 'q' } },
  async run(ctx, flags, args) {
    needArgs('images', args, 0, 0, 'no arguments');
    const format = (flags.format as string | undefined) ?? 'table';
    if (format !== 'table' && format !== 'json') throw new SealimgError('USAGE', `--format "${format}" must be table or json`);
    const store = await openLocalStore(ctx.root);
    const rows = [];
    for (const { ref, descriptor } of await store.list()) {
      const info = await describeImage(store, descriptor, ctx.signal);
      let repository = ref;
      let tag = '<none>';
      try {
        const r = parseReference(ref);
        repository = `${r.registry}/${r.repository}`;
        tag = r.tag ?? '<none>';
      } catch {
        // A tag another tool wrote in a form sealimg would not: show it whole.
      }
      rows.push({ name: ref, repository, tag, digest: descriptor.digest, id: shortId(descriptor.digest), created: info.config?.created ?? null, size: info.size, platforms: info.platforms });
    }
    rows.sort((a, b) => a.name.localeCompare(b.name));
    if (flags.quiet) {
      ctx.stdout.write([...new Set(rows.map((r) => r.id))].map((id) => `${id}\n`).join(''));
    } else if (format === 'json') {
      ctx.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    } else {
      ctx.stdout.write(table([['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], ...rows.map((r) => [r.repository, r.tag, r.id, humanAge(r.created ?? undefined), humanSize(r.size)])]));
    }
  },
};
export default command;
