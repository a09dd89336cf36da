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

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# No figure from an earlier run may leak into this report.
rm -rf target/criterion/ours target/criterion/tower-sessions target/criterion/tower-sessions-always-save target/bench

cargo bench --bench session
cargo bench -p trs-bench --bench tower_sessions
cargo run --release -p trs-bench --bin bench-load -- "${load_args[@]}"
cargo run --release -p trs-bench --bin bench-report -- --mode "$mode" --command "scripts/bench.sh${1:+ $1}"
