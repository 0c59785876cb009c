#!/usr/bin/env bash
# The quick start, offline: build a cluster image from examples/app-hello,
# list and inspect it, save it to a tarball and load that into a second store
# (the air-gapped path), and let skopeo read the result as an independent check.
# Everything stays under one temporary directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sealimg() { node "$here/../dist/src/cli/main.js" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SEALIMG_ROOT="$work/store"

echo "== build (the container images it needs are listed, not fetched: this runs offline)"
sealimg build --save-images=false -t example.com/app-hello:v1 "$here/app-hello"
echo "== images"
sealimg images
echo "== inspect (labels)"
sealimg inspect example.com/app-hello:v1 | grep -A4 '"Labels"'
echo "== save, then load into a fresh store"
sealimg save -q -o "$work/app-hello.tar" example.com/app-hello:v1
SEALIMG_ROOT="$work/offline-store" sealimg load -q -i "$work/app-hello.tar"
SEALIMG_ROOT="$work/offline-store" sealimg images
echo "== skopeo reads the tarball and the store"
skopeo inspect "oci-archive:$work/app-hello.tar:example.com/app-hello:v1" | grep '"Digest"'
skopeo inspect "oci:$work/offline-store:example.com/app-hello:v1" | grep '"Digest"'
echo "quickstart: ok"
