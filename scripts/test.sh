#!/usr/bin/env bash
# Runs the whole test suite, then its conformance, round-trip and fault suites on Valkey 8
# (see scripts/valkey.sh). The tests start their own redis-server processes on free
# loopback ports (and make TLS certificates with openssl), so both must be installed; on
# Debian/Ubuntu this installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_commands redis-server openssl

cargo test --all-features "$@"

# The conformance, round-trip and fault suites again on Valkey 8 (TLS stays on redis-server),
# and the examples without axum, run: a bare tower Service, and plain hyper calling itself.
if [ $# -eq 0 ]; then
  cargo run --quiet --example tower_service
  cargo run --quiet --example hyper -- --self-test
  valkey=$(scripts/valkey.sh)
  TEST_REDIS_SERVER="$valkey" cargo test --all-features \
    --test conformance --test round_trips --test faults
fi
