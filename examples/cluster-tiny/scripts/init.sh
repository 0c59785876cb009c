#!/bin/bash
set -e
cd "$(dirname "$0")"
. ./record.sh init
