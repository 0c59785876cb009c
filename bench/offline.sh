#!/usr/bin/env bash
# save and load of one ~700 MB image (gzipped random layers), sealimg against
# `skopeo copy` to and from oci-archive:, in one run on the same input.
# Each step runs RUNS times (default 3), the best time counts.
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

# Best wall-clock seconds of RUNS runs of a command (the machine is shared: the best run is the
# least disturbed one). $1 is what to remove before each run, so every run starts from scratch.
RUNS=${RUNS:-3}
t() {
  local out=$1 best='' s e d
  shift
  for _ in $(seq "$RUNS"); do
    rm -rf "$out"
    sync
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc)" = 1 ]; then best=$d; fi
  done
  echo "$best"
}

skopeo_save=$(t "$W/skopeo.tar" skopeo copy -q "oci:$W/src:$REF" "oci-archive:$W/skopeo.tar:$REF")
sealimg_save=$(t "$W/sealimg.tar" "${SEALIMG[@]}" --root "$W/src" save -q -o "$W/sealimg.tar" "$REF")
skopeo_load=$(t "$W/skopeo-loaded" skopeo copy -q "oci-archive:$W/sealimg.tar:$REF" "oci:$W/skopeo-loaded:$REF")
sealimg_load=$(t "$W/loaded" "${SEALIMG[@]}" --root "$W/loaded" load -q -i "$W/sealimg.tar")
sealimg_stdin=$(t "$W/loaded2" sh -c "${SEALIMG[*]} --root '$W/loaded2' load -q < '$W/sealimg.tar'")
tar_hash=$(t "$W/none" sh -c "tar -C '$W/src' -cf - . | sha256sum")

# Both loads must give the same image.
want=$(skopeo inspect --raw "oci:$W/src:$REF" | sha256sum | cut -d' ' -f1)
got=$(skopeo inspect --raw "oci:$W/loaded:$REF" | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ] || { echo "sealimg load changed the manifest" >&2; exit 1; }

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '%-34s %8s\n' "step" "seconds"
printf '%-34s %8.2f\n' "skopeo copy oci: -> oci-archive:" "$skopeo_save" "sealimg save" "$sealimg_save" \
  "skopeo copy oci-archive: -> oci:" "$skopeo_load" "sealimg load -i FILE" "$sealimg_load" \
  "sealimg load < FILE (one pass)" "$sealimg_stdin" "tar | sha256sum (floor)" "$tar_hash"
echo "save ratio (skopeo/sealimg): $(ratio "$skopeo_save" "$sealimg_save")x"
echo "load ratio (skopeo/sealimg): $(ratio "$skopeo_load" "$sealimg_load")x"
echo "load from stdin ratio (skopeo/sealimg): $(ratio "$skopeo_load" "$sealimg_stdin")x"
