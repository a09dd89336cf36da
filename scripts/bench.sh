#!/usr/bin/env bash
# Runs the whole benchmark suite and writes BENCHMARKS.md, BENCHMARKS.json and
# docs/latency.svg from that run alone.
#   scripts/bench.sh           full run (about 32 minutes on 2 cores, warm build: 20 on plain
#                              TCP, 4 for growth, 8 on TLS and on a 3-master Redis Cluster)
#   scripts/bench.sh --quick   fewer rounds and shorter runs (under 5 minutes, warm build)
# The libraries run interleaved in rounds (bench-latency, bench-load; bench-growth: reads at
# 1M sessions against 1k, and a user's 100k index entries) so that each ratio is
# taken within a round; Criterion only measures the layer's CPU cost on the in-process backend.
# Needs redis-server, wrk and (for the TLS run) openssl; on Debian/Ubuntu this installs them
# when missing.
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
ensure_commands redis-server wrk openssl

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
# Full mode only: the same read and session scenarios over TLS and on a 3-master Redis
# Cluster, ours against tower-sessions on the same deployment (issue 30). Sized to add about
# 8 minutes on 2 cores: latency, the small session only, 9 rounds of at most 21 library cells
# × 0.3 s (about 1 minute each); HTTP read, 7 apps × 16 and 256 connections × 10 rounds of
# 1 s (about 2.7 minutes each). Each runner's defaults for a topology are these sizes.
if [ "$mode" = full ]; then
  for topology in tls cluster; do
    cargo run --release -p trs-bench --bin bench-latency -- --topology "$topology" \
      --out "target/bench/latency-$topology.json"
    cargo run --release -p trs-bench --bin bench-load -- --topology "$topology" \
      --out "target/bench/load-$topology.json"
  done
fi
cargo run --release -p trs-bench --bin bench-report -- --mode "$mode" --command "scripts/bench.sh${1:+ $1}"
