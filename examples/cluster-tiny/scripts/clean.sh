#!/bin/bash
set -e
cd "$(dirname "$0")"
# What the example's hooks and app left on the host.
rm -rf /var/lib/sealimg-example
