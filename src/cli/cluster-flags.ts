/**
 * Flags shared by the cluster commands (run, reset, exec, scp, status): which
 * cluster, and how to reach its hosts. A Clusterfile built from `run`'s flags
 * has sealos' shape, as `sealos gen` writes it.
 */
import { readFile } from 'node:fs/promises';
import { SealimgError } from '../errors.js';
import { ClusterDir, sealimgHome } from '../runner/cluster-dir.js';
import { Clusterfile, type HostSpec, type SSHSpec } from '../runner/clusterfile.js';
import type { Context, Options } from './command.js';

export const CLUSTER_OPTIONS: Options = {
  cluster: { type: 'string' },
  'insecure-skip-host-key-check': { type: 'boolean' },
};

export const CLUSTER_HELP = `      --cluster NAME                    the cluster (default "default"); its state is in ~/.sealimg/NAME
      --insecure-skip-host-key-check    accept any host key (default: trust on first use, then check)`;

export const HOST_OPTIONS: Options = {
  masters: { type: 'string' },
  nodes: { type: 'string' },
  user: { type: 'string', short: 'u' },
  passwd: { type: 'string', short: 'p' },
  pk: { type: 'string', short: 'i' },
  'pk-passwd': { type: 'string' },
  port: { type: 'string' },
};

export const HOST_HELP = `      --masters IP[:PORT],...   control-plane hosts (the first is master0)
      --nodes IP[:PORT],...     worker hosts
  -u, --user USER               SSH user (default root; others need sudo)
  -p, --passwd PASS             SSH password (or $SEALIMG_SSH_PASSWORD, which stays out of the process list)
  -i, --pk FILE                 SSH private key (default ~/.ssh/id_rsa when no password is given)
      --pk-passwd PASS          the key's passphrase
      --port N                  SSH port where an address gives none (default 22)`;

export function clusterDir(ctx: Context, flags: Record<string, unknown>): ClusterDir {
  return new ClusterDir(sealimgHome(ctx.env), (flags.cluster as string | undefined) ?? 'default');
}

export function say(ctx: Context): (line: string) => void {
  return (line) => ctx.stderr.write(`${line}\n`);
}

function list(s: unknown): string[] {
  return typeof s === 'string' ? s.split(',').map((x) => x.trim()).filter(Boolean) : [];
}

/** The Clusterfile `run` applies: `-f FILE`, or one made from the flags and images. */
export async function desiredClusterfile(ctx: Context, flags: Record<string, unknown>, images: string[], name: string): Promise<Clusterfile> {
  if (flags.file !== undefined) {
    const path = flags.file as string;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      throw new SealimgError('USAGE', `cannot read the Clusterfile ${path}: ${(e as Error).message}`);
    }
    const cf = Clusterfile.parse(text, path);
    if (images.length > 0) cf.setImages([...cf.spec().image, ...images.filter((i) => !cf.spec().image.includes(i))]);
    return cf;
  }
  const m = list(flags.masters);
  if (m.length === 0) throw new SealimgError('USAGE', 'run needs --masters (or -f Clusterfile)', { hint: 'e.g. sealimg run IMAGE --masters 192.168.0.2 --nodes 192.168.0.3' });
  if (images.length === 0) throw new SealimgError('USAGE', 'run needs at least one IMAGE');
  const port = flags.port === undefined ? undefined : Number(flags.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new SealimgError('USAGE', `--port "${flags.port}" is not a port number`);
  if (flags.passwd !== undefined) ctx.stderr.write('Warning: a password given with -p can be seen in the process list; $SEALIMG_SSH_PASSWORD is safer\n');
  const ssh: SSHSpec = { user: (flags.user as string | undefined) ?? 'root' };
  const passwd = (flags.passwd as string | undefined) ?? ctx.env.SEALIMG_SSH_PASSWORD;
  if (passwd) ssh.passwd = passwd;
  if (flags.pk) ssh.pk = flags.pk as string;
  else if (!passwd) ssh.pk = `${ctx.env.HOME ?? ''}/.ssh/id_rsa`;
  if (flags['pk-passwd']) ssh.pkPasswd = flags['pk-passwd'] as string;
  if (port) ssh.port = port;
  const hosts: HostSpec[] = [{ ips: m, roles: ['master'] }];
  const n = list(flags.nodes);
  if (n.length > 0) hosts.push({ ips: n, roles: ['node'] });
  return Clusterfile.create(name, { hosts, image: images, ssh, env: (flags.env as string[] | undefined) ?? [], command: [] });
}
