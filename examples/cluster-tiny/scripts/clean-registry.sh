#!/bin/bash
set -e
cd "$(dirname "$0")"
pkill -f "bin/registry serve" || true
rm -f "${registryData:-/var/lib/registry}" /var/log/sealimg-example-registry.log
