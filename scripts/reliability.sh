#!/usr/bin/env bash
# Runs the reliability tests with their figures recorded, measures the same races through
# tower-sessions, optionally fuzzes, and writes RELIABILITY.md from that run alone.
#   scripts/reliability.sh                    the iterations of the default test run
#   scripts/reliability.sh --soak             ten times as many iterations
#   FUZZ_SECONDS=300 scripts/reliability.sh   also fuzz for 300 s each the Cookie header and
#                                             the RESP reader (`cargo install cargo-fuzz`)
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
  mkdir -p "$RELIABILITY_OUT" && touch "$RELIABILITY_OUT/fuzz.start"
  # Each target for FUZZ_SECONDS: `cookie` (the Cookie header through the layer) and `resp`
  # (replies from Redis through our RESP2 reader, checked against redis-rs's parser).
  targets=() failed=0
  for target in cookie resp; do
    log="$RELIABILITY_OUT/fuzz-$target.log"
    # cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
    # A crash stops cargo-fuzz with an error: it is counted, the other target still runs, and
    # this script stops once fuzz.json is written.
    status=0
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1) 2>&1 | tee "$log" | tail -5 || status=$?
    # Executions: the final stats (printed on a crash too), else the closing "Done N runs".
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    [ -n "$runs" ] || runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    # What the fuzzer saved in this run: crashes (panics among them), leaks, timeouts, OOMs.
    crashes=$( (find "fuzz/artifacts/$target" -newer "$RELIABILITY_OUT/fuzz.start" \
      \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null || true) | wc -l)
    targets+=("$(printf '"%s": {"seconds": %s, "inputs": %s, "crashes": %s}' \
      "$target" "$FUZZ_SECONDS" "${runs:-0}" "$crashes")")
    if [ "$target" = cookie ]; then cookie=("${runs:-0}" "$crashes"); fi
    if [ "$status" -ne 0 ]; then failed=1; fi
  done
  # The Cookie target's figures stay at the top level, as before the `resp` target; every
  # target's are under "targets".
  joined=$(IFS=,; echo "${targets[*]}")
  printf '{"seconds": %s, "inputs": %s, "crashes": %s, "targets": {%s}}\n' \
    "$FUZZ_SECONDS" "${cookie[0]}" "${cookie[1]}" "$joined" > "$RELIABILITY_OUT/fuzz.json"
  if [ "$failed" -ne 0 ]; then
    echo "fuzzing failed: see $RELIABILITY_OUT/fuzz-*.log and fuzz/artifacts/" >&2
    exit 1
  fi
fi

cargo run --release -p trs-bench --bin reliability-report -- --command "scripts/reliability.sh${1:+ $1}"
echo "wrote RELIABILITY.md"
