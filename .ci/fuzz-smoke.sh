#!/usr/bin/env bash
# Optional: a short run of every fuzz target (default 30 s each), e.g. before a release or in a
# nightly job. Not part of .ci/run. See docs/fuzzing.md for full runs.
#   bash .ci/fuzz-smoke.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# libFuzzer needs nightly only for sanitizers; `--sanitizer none` builds on stable.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/gatehouse-fuzz-target}"
for target in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target"
  echo "== $target ($secs s)"
  nice cargo fuzz run --sanitizer none --target-dir "$CARGO_TARGET_DIR" "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" -- -max_total_time="$secs" -max_len=4096 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY|thread '.*' panicked)" || true
  # libFuzzer exits non-zero and leaves fuzz/artifacts/$target/crash-* on a failure.
  if ls "fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "crash in $target: $(ls fuzz/artifacts/"$target"/crash-*)"; exit 1
  fi
done
echo "fuzz smoke: all targets ran without a crash"
