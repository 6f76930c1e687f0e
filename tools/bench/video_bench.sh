#!/usr/bin/env bash
# The video figures of docs/PERFORMANCE.md: a 60-second clip sampled at 1 fps through a compiled
# engine, two prompts per run (the second one's vision comes from the encoder cache), with and
# without Differential Frame Pruning. Prints vl3c's summary lines.
#
#   tools/bench/video_bench.sh --engine ENGINE --clip /tmp/clip60.mp4 [--threads 2] [--new-tokens 8]
#
# Make the clip with tools/bench/make_clip.py and a 2B-shaped engine with
#   cargo run --release --example random_checkpoint -- --preset 2b --out /tmp/vl3-2b
#   target/release/vl3c compile --model /tmp/vl3-2b --target cpu --out /tmp/vl3c-bench/engine
set -euo pipefail

engine="" clip="" threads=2 new_tokens=8
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine="$2"; shift 2 ;;
    --clip) clip="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --new-tokens) new_tokens="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$engine" ] && [ -n "$clip" ] || { echo "usage: $0 --engine ENGINE --clip FILE [--threads N] [--new-tokens N]" >&2; exit 2; }

vl3c="$(dirname "$0")/../../target/release/vl3c"
for mode in prune no-prune; do
  extra=()
  [ "$mode" = no-prune ] && extra=(--no-prune)
  echo "== $mode"
  "$vl3c" run --engine "$engine" --video "$clip" --fps 1 --threads "$threads" --max-new-tokens "$new_tokens" \
    --prompt "What happens in this video?" --prompt "What color is the ball?" "${extra[@]}" 2>&1 >/dev/null \
    | grep -E "prompt tokens|^\[|error" || true
done
