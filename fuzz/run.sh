#!/usr/bin/env bash
# Runs the fuzz targets, each for SECONDS (default 30), on the nightly
# toolchain with cargo-fuzz (installed if missing). New inputs go to
# fuzz/corpus/TARGET (not committed); the committed seeds are read from
# fuzz/seeds/TARGET. A crash stops the run with its input in
# fuzz/artifacts/TARGET. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_head request_differential upstream_answer route_file registry_json settings_file)
fi
cargo +nightly --version >/dev/null || { echo "fuzz/run.sh: the nightly toolchain is needed" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# No sanitizer: the code is safe Rust (unsafe_code is forbidden), and
# without ASan each run does several times the executions.
if [ "$#" -eq 0 ]; then
  cargo +nightly fuzz build -s none 2>&1 | tail -n 1
else
  for t in "${targets[@]}"; do cargo +nightly fuzz build -s none "$t" 2>&1 | tail -n 1; done
fi
log=$(mktemp)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  echo "== fuzz $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units)|panicked|ERROR|SUMMARY|Test unit written' "$log" || true
  if [ "$status" -ne 0 ] || [ "$(ls "artifacts/$t" | wc -l)" -ne "$before" ] || ! grep -q '^Done' "$log"; then
    tail -n 30 "$log" >&2
    echo "fuzz/run.sh: $t failed (exit $status); inputs in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
rm -f "$log"
