#!/bin/bash
# Serves the image's registry/ directory on :registryPort, as sealos' init-registry does.
set -e
cd "$(dirname "$0")"
. ./record.sh init-registry
rootfs=$(cd .. && pwd)
ln -sfn "$rootfs/registry" "${registryData:?}"
if ! (echo > "/dev/tcp/127.0.0.1/${registryPort:?}") 2>/dev/null; then
  setsid nohup "$rootfs/bin/registry" serve "$rootfs/etc/registry_config.yml" >/var/log/sealimg-example-registry.log 2>&1 </dev/null &
fi
for _ in $(seq 1 100); do
  (echo > "/dev/tcp/127.0.0.1/${registryPort}") 2>/dev/null && exit 0
  sleep 0.1
done
echo "registry did not start; see /var/log/sealimg-example-registry.log" >&2
exit 1
