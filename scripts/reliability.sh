#!/usr/bin/env bash
# Runs the reliability tests with their figures recorded, measures the same races through
# tower-sessions, optionally fuzzes, and writes RELIABILITY.md from that run alone.
#   scripts/reliability.sh                    the iterations of the default test run
#   scripts/reliability.sh --soak             ten times as many iterations
#   FUZZ_SECONDS=300 scripts/reliability.sh   also fuzz the Cookie header for 300 s
#                                             (needs `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--soak" ]; then export RELIABILITY_SOAK=1; fi
export RELIABILITY_OUT="$PWD/target/reliability"
rm -rf "$RELIABILITY_OUT"

. scripts/lib.sh
ensure_commands redis-server

cargo test --all-features
cargo run --release -p trs-bench --bin races-tower-sessions

if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
  log="$RELIABILITY_OUT/fuzz.log"
  mkdir -p "$RELIABILITY_OUT" && touch "$RELIABILITY_OUT/fuzz.start"
  # cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run cookie -- -max_total_time="$FUZZ_SECONDS") 2>&1 | tee "$log" | tail -5
  runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1)
  # A crash stops cargo-fuzz with an error (and this script with it); count what it saved.
  crashes=$(find fuzz/artifacts -name 'crash-*' -newer "$RELIABILITY_OUT/fuzz.start" 2>/dev/null | wc -l)
  printf '{"seconds": %s, "inputs": %s, "crashes": %s}\n' "$FUZZ_SECONDS" "${runs:-0}" "$crashes" > "$RELIABILITY_OUT/fuzz.json"
fi

cargo run --release -p trs-bench --bin reliability-report -- --command "scripts/reliability.sh${1:+ $1}"
echo "wrote RELIABILITY.md"
