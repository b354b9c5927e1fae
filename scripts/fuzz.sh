#!/usr/bin/env bash
# Coverage-guided fuzzing of drctl's parsers: every target in src/fuzz.rs under cargo fuzz
# (libFuzzer), two at a time, each for a fixed time, starting from fuzz/seeds and
# fuzz/regressions. Prints executions per target and exits non-zero if any input crashed one
# (saved under fuzz/artifacts/<target>/; once fixed, it belongs in fuzz/regressions/<target>/).
#
#   bash scripts/fuzz.sh               # 10 minutes per target
#   bash scripts/fuzz.sh 60 payload    # one target for a minute
#
# Runs on a stable toolchain: without a sanitizer (-s none) libFuzzer needs no nightly flags, and
# Rust's own bounds checks, overflow checks (on in these builds) and the allocation bound in
# src/fuzz.rs catch what a sanitizer would here.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build -s none --release --debug-assertions
mkdir -p logs
run_one() {
  t=$1 seconds=$2
  mkdir -p "corpus/$t" "artifacts/$t"
  dirs=("corpus/$t" "seeds/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  "target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 "${dirs[@]}" >"logs/$t.log" 2>&1 || true
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*' || echo 0)
  found=$(find "artifacts/$t" -type f | wc -l)
  printf '%-16s %12s executions  %6s edges  %3s crashing inputs\n' "$t" "$runs" "$cov" "$found"
}
export -f run_one
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run_one "$@"' _ {} "$seconds"
crashes=$(find artifacts -type f | wc -l)
if [ "$crashes" -gt 0 ]; then
  echo "$crashes crashing input(s) under fuzz/artifacts/ (logs in fuzz/logs/)" >&2
  exit 1
fi
