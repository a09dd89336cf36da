#!/usr/bin/env bash
# Runs the whole benchmark suite and writes BENCHMARKS.md, BENCHMARKS.json and
# docs/latency.svg from that run alone.
#   scripts/bench.sh           full run (about 25 minutes on 2 cores)
#   scripts/bench.sh --quick   shorter measurements (about 8 minutes)
# Needs redis-server and wrk; on Debian/Ubuntu this installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
load_args=()
if [ "${1:-}" = "--quick" ]; then
  mode=quick
  load_args=(--quick)
  export BENCH_QUICK=1
fi

. scripts/lib.sh
ensure_commands redis-server wrk

# No figure from an earlier run may leak into this report.
rm -rf target/criterion/ours target/criterion/tower-sessions target/criterion/tower-sessions-always-save target/bench

cargo bench --bench session
cargo bench -p trs-bench --bench tower_sessions
cargo run --release -p trs-bench --bin bench-load -- "${load_args[@]}"
cargo run --release -p trs-bench --bin bench-report -- --mode "$mode" --command "scripts/bench.sh${1:+ $1}"
