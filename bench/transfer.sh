#!/usr/bin/env bash
# bench/transfer.sh: push and pull a ~700 MB image to/from a fresh CNCF registry
# (docker-registry) on loopback, sealimg against `skopeo copy`, in one run, and
# print the time ratios and peak memory. Run by hand after `npm run build`:
#   bash bench/transfer.sh [SIZE_MB]   (default 680)
#   PULLS=N bash bench/transfer.sh      each pull pair N times, alternating; the median counts
#   (on a shared machine one pull can take 2-4x another: the median is what to quote)
# Both tools read the same OCI layout and write a fresh one (pull), so the only
# difference is the client.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-680}
PULLS=${PULLS:-1}
SEALIMG="node $PWD/dist/src/cli/main.js"
WORK=$(mktemp -d /tmp/sealimg-bench-XXXXXX)
REG_PID=
OWN_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  [ -n "$OWN_PID" ] && kill "$OWN_PID" 2>/dev/null && wait "$OWN_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

start_registry() {
  [ -n "$REG_PID" ] && { kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; }
  rm -rf "$WORK/reg"; mkdir -p "$WORK/reg"
  PORT=$(free_port)
  cat > "$WORK/reg.yml" <<YML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $WORK/reg } }
http: { addr: 127.0.0.1:$PORT, secret: bench }
YML
  docker-registry serve "$WORK/reg.yml" 2>"$WORK/reg.log" & REG_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && return; sleep 0.05; done
  echo "registry did not start" >&2; exit 1
}

# --- the image: one big layer (a tar of random bytes, so nothing compresses) and a small one
echo "making a ${SIZE_MB} MB image..."
IMG="$WORK/img"; mkdir -p "$IMG/blobs/sha256" "$WORK/files"
head -c $((SIZE_MB * 1024 * 1024 * 9 / 10)) /dev/urandom > "$WORK/files/big.bin"
head -c $((SIZE_MB * 1024 * 1024 / 10)) /dev/urandom > "$WORK/files/small.bin"
put_blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$IMG/blobs/sha256/$d"; echo "$d"; }
tar -C "$WORK/files" -cf "$WORK/l1.tar" big.bin; tar -C "$WORK/files" -cf "$WORK/l2.tar" small.bin
rm -rf "$WORK/files"
S1=$(stat -c %s "$WORK/l1.tar"); D1=$(put_blob "$WORK/l1.tar")
S2=$(stat -c %s "$WORK/l2.tar"); D2=$(put_blob "$WORK/l2.tar")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' "$D1" "$D2" > "$WORK/cfg"
SC=$(stat -c %s "$WORK/cfg"); DC=$(put_blob "$WORK/cfg")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$DC" "$SC" "$D1" "$S1" "$D2" "$S2" > "$WORK/man"
SM=$(stat -c %s "$WORK/man"); DM=$(put_blob "$WORK/man")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"img"}}]}' "$DM" "$SM" > "$IMG/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$IMG/oci-layout"
echo "image: $(( (S1 + S2) / 1000000 )) MB in 2 layers, manifest sha256:$DM"

# --- timing: wall seconds and peak RSS of one command
measure() { # label, command...
  local label=$1; shift
  local t0 t1
  # Each tool starts with no dirty pages left by what ran before it (both tools fsync
  # the blobs they write, so neither leaves its own for the next one).
  sync
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$WORK/out" 2>"$WORK/err" || { echo "$label failed:"; cat "$WORK/err"; exit 1; }
  t1=$(date +%s.%N)
  T=$(echo "$t1 - $t0" | bc -l)
  RSS=$(( $(cat "$WORK/rss") / 1024 ))
  printf '  %-22s %6.2f s   peak RSS %4d MB\n' "$label" "$T" "$RSS"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# PULLS pairs of pulls from the registry on port $1, each into a fresh destination; sets the medians
pulls() {
  local port=$1 sk='' se=''
  # One untimed pull by each tool first: without it, the first pulls of a just-pushed blob were
  # the slowest of a run for both tools (why was not measured).
  rm -rf "$WORK/out1" "$WORK/out2"
  skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/app:sealimg" "oci:$WORK/out1:x" >/dev/null
  $SEALIMG --root "$WORK/root" copy --quiet --plain-http "127.0.0.1:$port/bench/app:sealimg" "oci:$WORK/out2:x" >/dev/null
  for _ in $(seq "$PULLS"); do
    rm -rf "$WORK/out1" "$WORK/out2"
    measure "skopeo copy (pull)" skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/app:sealimg" "oci:$WORK/out1:x"; sk="$sk $T"
    measure "sealimg copy (pull)" $SEALIMG --root "$WORK/root" copy --quiet --plain-http "127.0.0.1:$port/bench/app:sealimg" "oci:$WORK/out2:x"; se="$se $T"
  done
  SKOPEO_MED=$(echo "$sk" | median); SEALIMG_MED=$(echo "$se" | median)
  [ "$PULLS" -gt 1 ] && printf '  median of %d: skopeo %.2f s, sealimg %.2f s\n' "$PULLS" "$SKOPEO_MED" "$SEALIMG_MED"
  return 0
}

sync
echo "push (fresh registry each time):"
start_registry
measure "skopeo copy (push)" skopeo copy --quiet --dest-tls-verify=false "oci:$IMG:img" "docker://127.0.0.1:$PORT/bench/app:skopeo"; SKOPEO_PUSH=$T
start_registry
measure "sealimg copy (push)" $SEALIMG --root "$WORK/root" copy --quiet --plain-http "oci:$IMG:img" "127.0.0.1:$PORT/bench/app:sealimg"; SEALIMG_PUSH=$T

echo "pull (same registry, fresh destination each time):"
pulls "$PORT"; SKOPEO_PULL=$SKOPEO_MED; SEALIMG_PULL=$SEALIMG_MED
test "$(sha256sum < "$WORK/out2/blobs/sha256/$D1" | cut -d' ' -f1)" = "$D1" || { echo "pulled layer does not match"; exit 1; }

printf 'ratios against docker-registry (skopeo time / sealimg time, higher is better for sealimg):\n  push %.2fx   pull %.2fx\n' \
  "$(echo "$SKOPEO_PUSH / $SEALIMG_PUSH" | bc -l)" "$(echo "$SKOPEO_PULL / $SEALIMG_PULL" | bc -l)"

# --- the same against sealimg's own registry (`sealimg registry serve`), fresh storage for each push
start_own() {
  [ -n "$OWN_PID" ] && { kill "$OWN_PID"; wait "$OWN_PID" 2>/dev/null || true; }
  rm -rf "$WORK/own"; mkdir -p "$WORK/own"
  OWN_PORT=$(free_port)
  $SEALIMG --root "$WORK/own" registry serve --addr "127.0.0.1:$OWN_PORT" --log-level error >/dev/null 2>&1 & OWN_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$OWN_PORT/v2/" >/dev/null && return; sleep 0.05; done
  echo "sealimg registry did not start" >&2; exit 1
}
echo "against sealimg's own registry:"
start_own
measure "skopeo copy (push)" skopeo copy --quiet --dest-tls-verify=false "oci:$IMG:img" "docker://127.0.0.1:$OWN_PORT/bench/app:skopeo"; SKOPEO_PUSH2=$T
start_own
measure "sealimg copy (push)" $SEALIMG --root "$WORK/root" copy --quiet --plain-http "oci:$IMG:img" "127.0.0.1:$OWN_PORT/bench/app:sealimg"; SEALIMG_PUSH2=$T
pulls "$OWN_PORT"; SKOPEO_PULL2=$SKOPEO_MED; SEALIMG_PULL2=$SEALIMG_MED
printf 'ratios against sealimg registry:\n  push %.2fx   pull %.2fx\n' \
  "$(echo "$SKOPEO_PUSH2 / $SEALIMG_PUSH2" | bc -l)" "$(echo "$SKOPEO_PULL2 / $SEALIMG_PULL2" | bc -l)"
