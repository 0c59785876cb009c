/** sealimg build: a Sealfile/Kubefile and its context -> a cluster image in the local store. */
import { build } from '../../build/builder.js';
import { parsePlatformText } from '../../build/images.js';
import { COMPRESSIONS, type Compression } from '../../build/layer.js';
import { openLocalStore } from '../../content/local.js';
import { SealimgError } from '../../errors.js';
import { normalizeReference } from '../../oci/reference.js';
import { needArgs, type Command } from '../command.js';
import { registryOptions } from '../registry-flags.js';

/** `K=V` flags into a record; `K` alone takes the value from the environment, as docker's --build-arg does. */
function keyValues(list: unknown, flag: string, env: NodeJS.ProcessEnv, fromEnv: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of (list as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=');
    if (eq === 0) throw new SealimgError('USAGE', `${flag} "${kv}" has no name`);
    if (eq < 0) {
      if (!fromEnv) throw new SealimgError('USAGE', `${flag} "${kv}" must be KEY=VALUE`);
      if (env[kv] !== undefined) out[kv] = env[kv]!;
      continue;
    }
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

const command: Command = {
  summary: 'Build a cluster image from a Sealfile/Kubefile',
  usage: `Usage: sealimg build -t NAME [FLAGS] CONTEXT

Builds the Sealfile (else Kubefile) in the CONTEXT directory into an OCI image in
the local store. COPY/ADD make one layer each; RUN runs on this host with sh -c in
a copy of the image's files and its changes become a layer. The same context
gives the same digest (timestamps come from SOURCE_DATE_EPOCH, else 0).

Flags:
  -t, --tag NAME            name of the image (repeatable)
  -f, --file FILE           the build file (default CONTEXT/Sealfile, then CONTEXT/Kubefile)
      --build-arg K=V       value for an ARG (repeatable; K alone takes it from the environment)
      --label K=V           label to set on the image (repeatable; wins over LABEL)
      --platform OS/ARCH    target platform (default: FROM's, else this host's)
      --compression ALG     gzip (default), zstd (needs the zstd program) or none
      --no-cache            build every layer again, even when its inputs did not change
      --save-images BOOL    false: list the container images the context needs, but do
                            not copy them into the image's registry/ (default true)
      --all-platforms       embed every platform of multi-arch images (default: --platform's)
      --registry-layers M   split (default): a layer per embedded blob of 1 MiB or more;
                            single: the whole registry/ as one layer, as sealos does
      --authfile FILE       credentials for the registries images come from
      --plain-http          talk http, not https, to those registries
      --tls-verify=false    do not check their certificates
      --ca-file FILE        also trust the CA certificates (PEM) in FILE
      --retry-times N       attempts after a failed request (default 5)
  -q, --quiet               print only the image digest`,
  options: {
    tag: { type: 'string', short: 't', multiple: true },
    file: { type: 'string', short: 'f' },
    'build-arg': { type: 'string', multiple: true },
    label: { type: 'string', multiple: true },
    platform: { type: 'string' },
    compression: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    'save-images': { type: 'string' },
    'no-cache': { type: 'boolean' },
    'all-platforms': { type: 'boolean' },
    'registry-layers': { type: 'string' },
    authfile: { type: 'string' },
    'plain-http': { type: 'boolean' },
    'tls-verify': { type: 'string' },
    'ca-file': { type: 'string' },
    'retry-times': { type: 'string' },
  },
  async run(ctx, flags, args) {
    needArgs('build', args, 1, 1, 'one CONTEXT directory');
    const tags = ((flags.tag as string[] | undefined) ?? []).map(normalizeReference);
    if (tags.length === 0) throw new SealimgError('USAGE', 'build needs a name: -t NAME', { hint: "see 'sealimg build --help'" });
    const compression = (flags.compression as string | undefined) ?? 'gzip';
    if (!COMPRESSIONS.includes(compression as Compression)) throw new SealimgError('USAGE', `--compression ${compression}: choose one of ${COMPRESSIONS.join(', ')}`);
    const epochText = ctx.env.SOURCE_DATE_EPOCH;
    if (epochText !== undefined && !/^\d+$/.test(epochText)) throw new SealimgError('USAGE', `SOURCE_DATE_EPOCH="${epochText}" must be whole seconds since 1970`);
    const quiet = flags.quiet === true;
    const save = (flags['save-images'] as string | undefined) ?? 'true';
    if (save !== 'true' && save !== 'false') throw new SealimgError('USAGE', `--save-images=${save}: use true or false`);
    const layersMode = (flags['registry-layers'] as string | undefined) ?? 'split';
    if (layersMode !== 'split' && layersMode !== 'single') throw new SealimgError('USAGE', `--registry-layers=${layersMode}: use split or single`);
    const open = { root: ctx.root, registry: registryOptions(flags, ctx.env) };
    const store = await openLocalStore(ctx.root);
    try {
      const result = await build(store, {
        contextDir: args[0]!,
        file: flags.file as string | undefined,
        tags,
        buildArgs: keyValues(flags['build-arg'], '--build-arg', ctx.env, true),
        labels: keyValues(flags.label, '--label', ctx.env, false),
        platform: flags.platform === undefined ? undefined : parsePlatformText(flags.platform as string),
        compression: compression as Compression,
        discoverImages: true,
        embed: save === 'true' ? { open, allPlatforms: flags['all-platforms'] === true, registryLayers: layersMode } : undefined,
        cache: flags['no-cache'] !== true,
        sourceDateEpoch: epochText === undefined ? 0 : Number(epochText),
        log: quiet ? undefined : (line) => ctx.stderr.write(`${line}\n`),
        onRunOutput: quiet ? undefined : (chunk) => ctx.stderr.write(chunk),
        signal: ctx.signal,
      });
      if (!quiet) for (const t of tags) ctx.stderr.write(`Tagged ${t}\n`);
      ctx.stdout.write(`${result.manifest.digest}\n`);
    } finally {
      await store.close();
    }
  },
};
export default command;
