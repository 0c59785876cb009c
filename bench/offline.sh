#!/usr/bin/env bash
# save and load of one ~700 MB image (gzipped random layers), sealimg against
# `skopeo copy` to and from oci-archive:, in one run on the same input.
# Each step runs RUNS times (default 3), alternating with its peer; the best run counts.
# Prints the times and the ratios (skopeo time / sealimg time: >1 means sealimg is faster).
# Usage: bench/offline.sh [LAYER_MB...]   (default 300 200 150 50)
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
SIZES=("${@:-300 200 150 50}")
# shellcheck disable=SC2206
SIZES=(${SIZES[*]})
W=$(mktemp -d "${TMPDIR:-/tmp}/sealimg-bench-offline.XXXXXX")
trap 'rm -rf "$W"' EXIT
REF=example.com/bench/cluster:v1
SEALIMG=(node dist/src/cli/main.js)

node dist/bench/offline-fixture.js "$W/src" "$REF" "${SIZES[@]}"
SET_MB=$(du -sm "$W/src/blobs" | cut -f1)
echo "image: ${SIZES[*]} MB layers, ${SET_MB} MB of blobs"

# The machine is shared, so each pair of commands runs RUNS times, alternating
# (both see the same conditions), and each keeps its best run: wall-clock
# seconds, and CPU seconds (user + system) of that run.
RUNS=${RUNS:-3}
# one OUT CMD...: one run from scratch; prints "wall cpu".
one() {
  local out=$1
  shift
  rm -rf "$out"
  sync
  /usr/bin/time -f '%e %U %S' -o "$W/time" "$@" >/dev/null 2>"$W/err" || { echo "failed: $*" >&2; cat "$W/err" >&2; exit 1; }
  awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' "$W/time"
}
best() { sort -n | head -1; }
# pair NAME_A OUT_A CMD_A -- NAME_B OUT_B CMD_B: sets A_WALL A_CPU B_WALL B_CPU.
pair() {
  local a_out=$1 b_out a=() b=() ra='' rb=''
  shift
  while [ "$1" != -- ]; do a+=("$1"); shift; done
  shift
  b_out=$1
  shift
  b=("$@")
  for _ in $(seq "$RUNS"); do
    ra+="$(one "$a_out" "${a[@]}")"$'\n'
    rb+="$(one "$b_out" "${b[@]}")"$'\n'
  done
  read -r A_WALL A_CPU <<<"$(printf '%s' "$ra" | best)"
  read -r B_WALL B_CPU <<<"$(printf '%s' "$rb" | best)"
}

pair "$W/skopeo.tar" skopeo copy -q "oci:$W/src:$REF" "oci-archive:$W/skopeo.tar:$REF" -- \
  "$W/sealimg.tar" "${SEALIMG[@]}" --root "$W/src" save -q -o "$W/sealimg.tar" "$REF"
skopeo_save=$A_WALL skopeo_save_cpu=$A_CPU sealimg_save=$B_WALL sealimg_save_cpu=$B_CPU
pair "$W/skopeo-loaded" skopeo copy -q "oci-archive:$W/sealimg.tar:$REF" "oci:$W/skopeo-loaded:$REF" -- \
  "$W/loaded" "${SEALIMG[@]}" --root "$W/loaded" load -q -i "$W/sealimg.tar"
skopeo_load=$A_WALL skopeo_load_cpu=$A_CPU sealimg_load=$B_WALL sealimg_load_cpu=$B_CPU
pair "$W/loaded2" sh -c "${SEALIMG[*]} --root '$W/loaded2' load -q < '$W/sealimg.tar'" -- \
  "$W/none" sh -c "tar -C '$W/src' -cf - . | sha256sum"
sealimg_stdin=$A_WALL sealimg_stdin_cpu=$A_CPU tar_hash=$B_WALL tar_hash_cpu=$B_CPU

# Both loads must give the same image.
want=$(skopeo inspect --raw "oci:$W/src:$REF" | sha256sum | cut -d' ' -f1)
got=$(skopeo inspect --raw "oci:$W/loaded:$REF" | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ] || { echo "sealimg load changed the manifest" >&2; exit 1; }

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '%-34s %8s %8s\n' "step" "wall s" "cpu s"
row() { printf '%-34s %8.2f %8.2f\n' "$1" "$2" "$3"; }
row "skopeo copy oci: -> oci-archive:" "$skopeo_save" "$skopeo_save_cpu"
row "sealimg save" "$sealimg_save" "$sealimg_save_cpu"
row "skopeo copy oci-archive: -> oci:" "$skopeo_load" "$skopeo_load_cpu"
row "sealimg load -i FILE" "$sealimg_load" "$sealimg_load_cpu"
row "sealimg load < FILE (one pass)" "$sealimg_stdin" "$sealimg_stdin_cpu"
row "tar | sha256sum (floor)" "$tar_hash" "$tar_hash_cpu"
echo "save ratio (skopeo/sealimg): wall $(ratio "$skopeo_save" "$sealimg_save")x, cpu $(ratio "$skopeo_save_cpu" "$sealimg_save_cpu")x"
echo "load ratio (skopeo/sealimg): wall $(ratio "$skopeo_load" "$sealimg_load")x, cpu $(ratio "$skopeo_load_cpu" "$sealimg_load_cpu")x"
echo "load from stdin ratio (skopeo/sealimg): wall $(ratio "$skopeo_load" "$sealimg_stdin")x, cpu $(ratio "$skopeo_load_cpu" "$sealimg_stdin_cpu")x"
