#!/usr/bin/env bash
# Fuzzes vl3c's input surfaces with libFuzzer (cargo fuzz): every target in fuzz/fuzz_targets/,
# or those named, for FUZZ_SECONDS each (default 60), starting from the committed seeds in
# fuzz/corpus/<target>/ and a working corpus in fuzz/corpus-work/<target>/ (not committed).
#
#   tools/fuzz.sh                      # all targets, 60 s each
#   FUZZ_SECONDS=600 tools/fuzz.sh engine video
#   FUZZ_JOBS=2 tools/fuzz.sh image    # parallel workers per target
#   FUZZ_ARGS=--no-default-features tools/fuzz.sh video   # the cargo-only video fallback
#
# A crash, timeout or out-of-memory input lands in fuzz/artifacts/<target>/. Minimize it
# (`cargo fuzz tmin <target> <file>` in fuzz/), fix the bug, and commit the minimized input to
# fuzz/regressions/<target>/: `cargo test -p vl3c-fuzz-targets` replays every one of them.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It passes `-Z` flags to rustc; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through (set here), so no nightly is needed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
read -r -a extra <<< "${FUZZ_ARGS:-}"
cargo fuzz build -O --debug-assertions -s "$sanitizer" "${extra[@]}"
found=0
for t in "${targets[@]}"; do
  mkdir -p "corpus-work/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  # -rss_limit_mb: an input that makes vl3c allocate past this is a bug (limits before
  # allocation); -timeout: one input taking longer than this is a hang.
  parallel=()
  # libFuzzer's -jobs (even 1) forks workers that log to files; one job runs in-process.
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  # Known leaks inside the system's FFmpeg (fuzz/lsan-video.supp) need full stacks to match.
  if [ "$t" = video ]; then
    export LSAN_OPTIONS="suppressions=$PWD/lsan-video.supp" ASAN_OPTIONS="fast_unwind_on_malloc=0"
  else
    unset LSAN_OPTIONS ASAN_OPTIONS
  fi
  cargo fuzz run -O --debug-assertions -s "$sanitizer" "${extra[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=3072 -malloc_limit_mb=3072 -timeout=20 \
    -print_final_stats=1 "${parallel[@]}" >"artifacts/$t.log" 2>&1 || true
  after=$(find "artifacts/$t" -type f | wc -l)
  runs=$(cat "artifacts/$t.log" fuzz-*.log 2>/dev/null | grep -o 'stat::number_of_executed_units: *[0-9]*' | awk '{s+=$2} END {print s+0}' || true)
  rm -f fuzz-*.log
  echo "$t: $(( $(date +%s) - start )) s, $runs inputs run, $(( after - before )) new finding(s)"
  if [ "$after" -gt "$before" ]; then
    found=1
    find "artifacts/$t" -type f -newer "corpus/$t" | head -5 | sed 's/^/  /'
  fi
done
exit $found
