#!/usr/bin/env bash
# Runs the whole test suite. The tests start their own redis-server processes on free
# loopback ports, so redis-server must be installed; on Debian/Ubuntu this installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_commands redis-server

cargo test --all-features "$@"
