#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
install -m 0755 bin/kubeadm /usr/bin/kubeadm
