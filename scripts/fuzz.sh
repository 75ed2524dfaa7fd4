#!/usr/bin/env bash
# Fuzzes the parsers and checks that read what clients send, with cargo-fuzz (libFuzzer):
#   scripts/fuzz.sh [seconds per target] [target...]
# Targets (fuzz/fuzz_targets/): config_text, tensor_proto, rest_json, wechat_xml, batch_merge.
# Seeds are in fuzz/corpus/<target>/ (committed); what the fuzzer learns goes to
# .cache/fuzz/<target>/ (not committed); crashes go to fuzz/artifacts/<target>/, and each one
# found is fixed and kept as a regression test. The machine has only a stable toolchain:
# RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags cargo-fuzz passes.
# Prints, per target, the executions and what was found.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config_text tensor_proto rest_json wechat_xml batch_merge)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.1
fi
export RUSTC_BOOTSTRAP=1

# One build for all targets; `-s none`: libFuzzer's coverage without AddressSanitizer
# (safe Rust; ASan costs 2-3x the executions), debug assertions on (overflow checks).
cargo fuzz build -s none --debug-assertions

summary=()
for target in "${targets[@]}"; do
  mkdir -p ".cache/fuzz/$target" "fuzz/artifacts/$target"
  log=".cache/fuzz/$target.log"
  echo "== $target for ${seconds}s"
  set +e
  cargo fuzz run -s none --debug-assertions "$target" ".cache/fuzz/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1
  status=$?
  set -e
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
  summary+=("$target: $runs executions, exit $status, $crashes artifact(s)")
  if [ $status -ne 0 ]; then
    tail -40 "$log"
  fi
done
printf '%s\n' "${summary[@]}"
