#!/usr/bin/env bash
# Runs on the first master, in the image's directory.
set -euo pipefail
kubectl create namespace "${NAMESPACE:-hello}" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f manifests/
helm upgrade --install hello-cache charts/hello-cache -f charts/hello-cache.values.yaml -n "${NAMESPACE:-hello}"
