#!/usr/bin/env bash
# sealimg's registry against the CNCF registry (docker-registry) on this machine, in one run:
#   manifest GETs per second (wrk, 1 thread, 32 connections), blob push and pull
#   throughput through skopeo, peak memory of each server, and a load round
#   (CLIENTS concurrent clients pushing and pulling for SECONDS; errors must be 0).
# Prints each figure and the ratio sealimg/CNCF. Needs: wrk, skopeo, docker-registry.
# Usage: bash bench/registry.sh [LAYER_MB=256] [CLIENTS=64] [SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-256}; CLIENTS=${2:-64}; SECONDS_LOAD=${3:-60}
for t in wrk skopeo docker-registry; do command -v "$t" >/dev/null || { echo "bench needs $t (apt-get install $t)"; exit 2; }; done
npm run build >/dev/null
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

SIZE=$(node dist/bench/registry-fixture.js "$W" "$MB")
P1=$(free_port); P2=$(free_port)
node dist/src/cli/main.js --root "$W/ours" registry serve --addr 127.0.0.1:$P1 --log-level error >/dev/null 2>"$W/ours.log" & PIDS+=($!); OURS=$!
cat >"$W/cncf.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/cncf}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$P2}
YML
docker-registry serve "$W/cncf.yml" >/dev/null 2>&1 & PIDS+=($!); CNCF=$!
for p in $P1 $P2; do for i in $(seq 100); do curl -sf "http://127.0.0.1:$p/v2/" >/dev/null && break; sleep 0.1; done; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
now() { date +%s.%N; }
mbps() { awk -v s="$1" -v t="$2" 'BEGIN { printf "%.1f", s / 1048576 / t }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

declare -A R
for side in ours cncf; do
  port=$([ $side = ours ] && echo $P1 || echo $P2)
  skopeo copy -q --dest-tls-verify=false "oci:$W/layout:small" "docker://127.0.0.1:$port/bench/app:v1"
  # Push once: skopeo remembers where a blob went and would mount it the next time.
  t0=$(now); skopeo copy -q --dest-tls-verify=false "oci:$W/layout:big" "docker://127.0.0.1:$port/bench/big:v1"; t1=$(now)
  R[$side.push]=$(mbps "$SIZE" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
  # Pull best of 3 into a fresh directory each time: the machine is shared, the best run is the server's speed.
  R[$side.pull]=0
  for round in 1 2 3; do
    rm -rf "$W/out-$side"
    t0=$(now); skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$port/bench/big:v1" "oci:$W/out-$side:big"; t1=$(now)
    v=$(mbps "$SIZE" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"); R[$side.pull]=$(awk -v a="$v" -v b="${R[$side.pull]}" 'BEGIN{print (a>b)?a:b}')
  done
  # The server's own cost of serving the blob: plain GETs (curl, discarding), best of 3, and its CPU seconds per GiB.
  pid=$([ $side = ours ] && echo $OURS || echo $CNCF)
  big=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$port/bench/big:v1" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).layers[0].digest))')
  R[$side.get]=0; c0=$(cpu_ticks "$pid")
  for round in 1 2 3; do
    t0=$(now); curl -sf -o /dev/null "http://127.0.0.1:$port/v2/bench/big/blobs/$big"; t1=$(now)
    v=$(mbps "$SIZE" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"); R[$side.get]=$(awk -v a="$v" -v b="${R[$side.get]}" 'BEGIN{print (a>b)?a:b}')
  done
  R[$side.cpu]=$(awk -v t="$(( $(cpu_ticks "$pid") - c0 ))" -v hz="$(getconf CLK_TCK)" -v s="$SIZE" 'BEGIN { printf "%.2f", t / hz / (3 * s / 1073741824) }')
  R[$side.rps]=$(wrk -t1 -c32 -d10s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$port/v2/bench/app/manifests/v1" | awk '/Requests\/sec/ { print $2 }')
  R[$side.load]=$(node dist/bench/registry-load.js "http://127.0.0.1:$port" "$CLIENTS" "$SECONDS_LOAD")
done
R[ours.mem]=$(hwm $OURS); R[cncf.mem]=$(hwm $CNCF)

printf '%-32s %12s %12s %8s\n' "measure" "sealimg" "CNCF" "ratio"
printf '%-32s %12s %12s %8s\n' "manifest GET/s (wrk -t1 -c32)" "${R[ours.rps]}" "${R[cncf.rps]}" "$(ratio "${R[ours.rps]}" "${R[cncf.rps]}")"
printf '%-32s %12s %12s %8s\n' "skopeo push MB/s (${MB} MiB)" "${R[ours.push]}" "${R[cncf.push]}" "$(ratio "${R[ours.push]}" "${R[cncf.push]}")"
printf '%-32s %12s %12s %8s\n' "skopeo pull MB/s (best of 3)" "${R[ours.pull]}" "${R[cncf.pull]}" "$(ratio "${R[ours.pull]}" "${R[cncf.pull]}")"
printf '%-32s %12s %12s %8s\n' "curl GET MB/s (best of 3)" "${R[ours.get]}" "${R[cncf.get]}" "$(ratio "${R[ours.get]}" "${R[cncf.get]}")"
printf '%-32s %12s %12s %8s\n' "server CPU s per GiB served" "${R[ours.cpu]}" "${R[cncf.cpu]}" "$(ratio "${R[ours.cpu]}" "${R[cncf.cpu]}")"
printf '%-32s %12s %12s %8s\n' "peak RSS KiB" "${R[ours.mem]}" "${R[cncf.mem]}" "$(ratio "${R[ours.mem]}" "${R[cncf.mem]}")"
echo "load sealimg: ${R[ours.load]}"
echo "load CNCF:    ${R[cncf.load]}"
