#!/usr/bin/env bash
# bench/build.sh: sealimg build against `umoci insert` on the same context, in one run.
# The context: shared libraries (compressible) plus already-compressed registry
# blobs, as in a cluster image. Prints time, blob size and peak memory ratios,
# and the time of a rebuild after one small file changed against a full build.
#   BENCH_LIB=/usr/lib/x86_64-linux-gnu  what to copy as the compressible part
#   BENCH_BLOB_MB=300                     MB of gzip blobs
# Run by hand (it takes a few minutes and ~3 GB of /tmp); not part of npm test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sealimg="node $here/../dist/src/cli/main.js"
lib=${BENCH_LIB:-/usr/lib/x86_64-linux-gnu}
blob_mb=${BENCH_BLOB_MB:-300}
work=$(mktemp -d /tmp/sealimg-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ctx=$work/ctx
mkdir -p "$ctx/scripts" "$ctx/registry/docker/registry/v2/blobs/sha256"
echo "preparing the context in $ctx ..."
cp -a "$lib" "$ctx/lib"
find "$ctx/lib" -xtype l -delete   # links that point outside the copy
find "$ctx/lib" -type l -lname '/*' -delete
for i in $(seq 1 $((blob_mb / 20))); do
  hex=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
  d=$ctx/registry/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex
  mkdir -p "$d"
  head -c $((20 << 20)) /dev/urandom | gzip -1 > "$d/data"
done
echo 'echo init' > "$ctx/scripts/init.sh"
cat > "$ctx/Sealfile" <<'SEALFILE'
FROM scratch
COPY lib /lib/
COPY registry /registry/
COPY scripts /scripts/
SEALFILE
echo "context: $(du -sh --exclude=Sealfile "$ctx" | cut -f1)"

measure() { # label, command...: prints "seconds peak_kb cpu_seconds" (cpu: user+system, steadier on a shared machine)
  local out=$work/time.$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$@" > /dev/null 2> "$work/log" || { cat "$work/log"; exit 1; }
  read -r e m u s < "$out"
  echo "$e $m $(node -e "console.log((Number(process.argv[1])+Number(process.argv[2])).toFixed(2))" "$u" "$s")"
}

layers_size() { # manifest file -> total bytes of its layers
  node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(m.layers.reduce((a,l)=>a+l.size,0))' "$1"
}

umoci_build() {
  rm -rf "$work/umoci"
  umoci init --layout "$work/umoci" &&
  umoci new --image "$work/umoci:b" &&
  umoci insert --image "$work/umoci:b" "$ctx/lib" /lib &&
  umoci insert --image "$work/umoci:b" "$ctx/registry" /registry &&
  umoci insert --image "$work/umoci:b" "$ctx/scripts" /scripts
}
sealimg_build() {
  rm -rf "$work/store"
  $sealimg --root "$work/store" build -q -t bench:1 "$ctx"
}
export -f umoci_build sealimg_build
export work ctx sealimg

# Two rounds, taking turns, best of each: the first run of either pays for whatever the machine did before.
best() { # "time mem cpu" lines on stdin -> the line with the least time
  sort -n | head -1
}
rounds=${BENCH_ROUNDS:-2}
u_runs=; s_runs=
for _ in $(seq 1 "$rounds"); do
  sync; s_runs+="$(measure sealimg bash -c sealimg_build)"$'\n'
  sync; u_runs+="$(measure umoci bash -c umoci_build)"$'\n'
done
read -r u_time u_mem u_cpu < <(printf '%s' "$u_runs" | best)
read -r s_time s_mem s_cpu < <(printf '%s' "$s_runs" | best)
skopeo inspect --raw "oci:$work/umoci:b" > "$work/umoci.json"
u_size=$(layers_size "$work/umoci.json")
skopeo inspect --raw "oci:$work/store:docker.io/library/bench:1" > "$work/sealimg.json"
s_size=$(layers_size "$work/sealimg.json")

read -r z_time z_mem z_cpu < <(measure zstd $sealimg --root "$work/zstore" build -q --compression zstd -t bench:1 "$ctx")
skopeo inspect --raw "oci:$work/zstore:docker.io/library/bench:1" > "$work/zstd.json"
z_size=$(layers_size "$work/zstd.json")

# The rebuild, best of as many rounds as the full build (one small file changed before each): a single
# half-second run is mostly node starting, and varies by a tenth of a second here from one run to the next.
r_runs=
for i in $(seq 1 "$rounds"); do
  echo "echo init, changed $i" > "$ctx/scripts/init.sh"
  r_runs+="$(measure rebuild $sealimg --root "$work/store" build -q -t bench:2 "$ctx")"$'\n'
done
read -r r_time r_mem r_cpu < <(printf '%s' "$r_runs" | best)

ratio() { node -e "console.log((Number(process.argv[1])/Number(process.argv[2])).toFixed(2))" "$1" "$2"; }
echo
echo "best of $rounds runs each, taking turns:"
echo "umoci insert:    ${u_time}s (cpu ${u_cpu}s), layers ${u_size} bytes, peak ${u_mem} kB"
echo "sealimg build:   ${s_time}s (cpu ${s_cpu}s), layers ${s_size} bytes, peak ${s_mem} kB"
echo "sealimg rebuild: ${r_time}s (one small file changed; best of $rounds), peak ${r_mem} kB"
echo "sealimg --compression zstd: ${z_time}s, layers ${z_size} bytes, peak ${z_mem} kB"
echo "time ratio (sealimg/umoci):      $(ratio "$s_time" "$u_time")   (target <= 0.5; cpu ratio $(ratio "$s_cpu" "$u_cpu"))"
echo "size ratio (sealimg/umoci):      $(ratio "$s_size" "$u_size")   (target <= 1.1)"
echo "rebuild ratio (rebuild/full):    $(ratio "$r_time" "$s_time")   (target <= 0.10)"
echo "zstd: time ratio $(ratio "$z_time" "$u_time"), size ratio $(ratio "$z_size" "$u_size") against umoci's gzip"
echo "sealimg peak memory:             $((s_mem / 1024)) MB   (target < 200 MB)"
