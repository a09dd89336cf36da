#!/usr/bin/env bash
# Runs the whole test suite. The tests start their own redis-server processes on free
# loopback ports (and make TLS certificates with openssl), so both must be installed; on
# Debian/Ubuntu this installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_commands redis-server openssl

cargo test --all-features "$@"
