#!/usr/bin/env bash
# Runs the whole benchmark suite and writes BENCHMARKS.md, BENCHMARKS.json and
# docs/latency.svg from that run alone.
#   scripts/bench.sh           full run (about 20 minutes on 2 cores, warm build)
#   scripts/bench.sh --quick   fewer rounds and shorter runs (under 5 minutes, warm build)
# The libraries run interleaved in rounds (bench-latency, bench-load; bench-growth: reads at
# 1M sessions against 1k, and a user's 100k index entries) so that each ratio is
# taken within a round; Criterion only measures the layer's CPU cost on the in-process backend.
# Needs redis-server and wrk; on Debian/Ubuntu this installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
args=()
if [ "${1:-}" = "--quick" ]; then
  mode=quick
  args=(--quick)
  export BENCH_QUICK=1
fi

. scripts/lib.sh
ensure_commands redis-server wrk

# Criterion writes here whatever CARGO_TARGET_DIR is, so that bench-report finds it.
export CRITERION_HOME="$PWD/target/criterion"
# No figure from an earlier run may leak into this report.
rm -rf "$CRITERION_HOME/ours" target/bench

# Build everything first, so that no compilation runs between measurements.
cargo bench --bench session --no-run
cargo build --release -p trs-bench --bin bench-latency --bin bench-load --bin bench-memory \
  --bin bench-growth --bin bench-report

cargo bench --bench session
cargo run --release -p trs-bench --bin bench-latency -- "${args[@]}"
cargo run --release -p trs-bench --bin bench-load -- "${args[@]}"
cargo run --release -p trs-bench --bin bench-memory -- "${args[@]}"
cargo run --release -p trs-bench --bin bench-growth -- "${args[@]}"
cargo run --release -p trs-bench --bin bench-report -- --mode "$mode" --command "scripts/bench.sh${1:+ $1}"
