/**
 * What an upload's tar stream holds besides the files (upload.ts): the hash
 * manifest and the script that checks every file against it and renames
 * them into place. Shared by the thread that writes the stream
 * (upload-worker.ts) and the host-side commands (upload.ts, relay.ts); no
 * SSH code, so the thread loads little.
 */
import { shellQuote } from './shell.js';

/** One thing to send: a directory (made in place), a file or a symlink (staged, then renamed). */
export interface UploadEntry {
  /** Path in the archive, relative to the target dir. */
  rel: string;
  /** The local file it is read from. */
  src: string;
  kind: 'dir' | 'file' | 'symlink';
  mode: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
  size: number;
  target?: string;
}

/** Set to 1 in the environment of a receive whose whole stream was already checked (relay.ts). */
export const STREAM_CHECKED = 'SEALIMG_STREAM_CHECKED';

/**
 * The host's check of every file against the manifest (`HEX  ./path` lines). openssl hashes several times
 * faster than coreutils' sha256sum where the CPU has SHA instructions (512 MB here: 0.56 s against 2.7 s),
 * which matters when several hosts share the work of receiving; sha256sum is the fallback, and on a
 * mismatch it runs anyway to name the files that differ.
 */
function checkCommand(manifest: string): string {
  const m = shellQuote(manifest);
  const viaOpenssl = `cut -c67- ${m} | xargs -d '\\n' openssl dgst -sha256 -r | sed 's/ \\*/  /' | cmp -s - ${m}`;
  return `if ! command -v openssl >/dev/null 2>&1 || ! { ${viaOpenssl}; }; then sha256sum -c --quiet --strict ${m} >&2; fi`;
}

/**
 * The script the stream ends with (`<tmp>.sh`): it checks the files staged under `tmp` against the
 * manifest (`<tmp>.sha256`, when `checked` files are in it) and moves them into `dirs`.
 */
export function finishScript(tmp: string, dirs: Iterable<string>, checked: boolean): string {
  const sorted = [...dirs].sort();
  return [
    'set -e',
    // A relayed copy of this stream was checked whole against the operator's sha256 (relay.ts), which covers every file in it.
    ...(checked ? [`if [ "\${${STREAM_CHECKED}:-}" != 1 ]; then ${checkCommand(`./${tmp}.sha256`)}; fi`] : []),
    // Each file one rename(2) into place: all of them by one perl where there is one (Debian's is always there;
    // 5617 files in 51 directories, shaped like the bench tree, took 20 ms of CPU so, against 148 ms for a find
    // and an mv a directory), else one mv per directory. The directory list is a here-document ended by the staging name.
    'if command -v perl >/dev/null 2>&1; then',
    `perl -e ${shellQuote(RENAME)} "./${tmp}" <<'${tmp}'`,
    ...sorted,
    tmp,
    'else',
    `into() { find "./${tmp}/$1" -mindepth 1 -maxdepth 1 ! -type d -exec mv -f -t "./$1" -- {} +; }`,
    ...sorted.map((d) => `into ${shellQuote(d)}`),
    'fi',
    '',
  ].join('\n');
}

/** Moves every file and symlink (not directory) in STAGING/DIR to DIR, for each DIR line on stdin. */
const RENAME = String.raw`my $t = shift;
while (my $d = <STDIN>) {
  chomp $d;
  opendir(my $h, "$t/$d") or die "$t/$d: $!\n";
  for my $e (readdir $h) {
    my $p = "$t/$d/$e";
    next if $e eq "." || $e eq ".." || ((lstat $p) && -d _);
    rename($p, "$d/$e") or die "$d/$e: $!\n";
  }
}`;
