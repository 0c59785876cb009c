#!/usr/bin/env bash
# The quick start: make a small image in an OCI layout with umoci, pull it into
# a sealimg store, list and inspect it, push it to a second layout, and let
# skopeo read the result. Runs offline; everything stays under one temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sealimg="node $here/../dist/src/cli/main.js"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SEALIMG_ROOT="$work/store"

umoci init --layout "$work/src"
umoci new --image "$work/src:hello"
umoci insert --image "$work/src:hello" "$here/hello/rootfs" /
umoci config --image "$work/src:hello" --config.label sealos.io.type=application --config.cmd 'cat /etc/motd'

$sealimg pull "oci:$work/src:hello"
$sealimg tag hello example.com/hello:v1
$sealimg images
$sealimg inspect example.com/hello:v1 | head -n 8
$sealimg push example.com/hello:v1 "oci:$work/out:hello"
skopeo inspect "oci:$work/out:hello" | head -n 4
echo "quickstart: ok"
