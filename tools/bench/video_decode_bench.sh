#!/usr/bin/env bash
# Decoding and preprocessing a long 4K video (docs/PERFORMANCE.md, "Video decoding"): vl3c
# preprocess --video against transformers' PyAV loader + VideoLlama3VideoProcessor on the same
# clip and sampling, each under /usr/bin/time -v (wall time, peak RSS).
#
#   tools/bench/video_decode_bench.sh [--frames 200] [--size 3840x2160] [--sample 180] [--out DIR]
#
# Makes the clip with Debian's ffmpeg CLI (testsrc2, H.264 High, 30 fps) unless it exists;
# needs target/release/vl3c (cargo build --release; or VL3C_EXAMPLE=1: the runtime's
# `video_preprocess` example, the same load_video without the CLI, built with
# `cargo build -p vl3c-runtime --example video_preprocess --profile test`) and /work/pyenv (or
# $PYTHON) with transformers and av. Both sides use the processor's class defaults.
set -euo pipefail

frames=200 size=3840x2160 sample=180 out=/tmp/vl3c-video-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --frames) frames="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --sample) sample="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/../.." && pwd)"
vl3c="${VL3C:-$root/target/release/vl3c}"
python="${PYTHON:-/work/pyenv/bin/python}"
mkdir -p "$out"
clip="$out/clip_${size}_${frames}.mp4"
if [ ! -f "$clip" ]; then
  ffmpeg -v error -y -f lavfi -i "testsrc2=size=$size:rate=30" -frames:v "$frames" \
    -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p "$clip"
fi
echo "clip: $clip ($(du -h "$clip" | cut -f1), $frames frames of $size), sampling $sample frames; $(nproc) cores"

summary() { grep -E "Elapsed \(wall|Maximum resident" "$1" | sed 's/^\s*/  /'; }

if [ "${VL3C_EXAMPLE:-0}" = 1 ]; then
  cmd=("${CARGO_TARGET_DIR:-$root/target}/debug/examples/video_preprocess" "$clip" "$sample" "$out/vl3c.safetensors")
else
  cmd=("$vl3c" preprocess --video "$clip" --num-frames "$sample" --out "$out/vl3c.safetensors")
fi
echo "== ${cmd[*]}"
/usr/bin/time -v "${cmd[@]}" 2> "$out/vl3c.time" >/dev/null || { cat "$out/vl3c.time"; exit 1; }
grep -E "^preprocess:" "$out/vl3c.time" || true
summary "$out/vl3c.time"

echo "== transformers: load_video(backend=\"pyav\") + VideoLlama3VideoProcessor"
cat > "$out/transformers_side.py" <<'PY'
import functools, sys, time
import torch
from transformers import VideoLlama3VideoProcessor
from transformers.video_utils import load_video
torch.set_num_threads(2)
path, n = sys.argv[1], int(sys.argv[2])
vp = VideoLlama3VideoProcessor()
t0 = time.time()
frames, meta = load_video(path, backend="pyav", sample_indices_fn=functools.partial(vp.sample_frames, num_frames=n))
t1 = time.time()
out = vp(videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt")
t2 = time.time()
print(f"decode {t1 - t0:.2f} s, processor {t2 - t1:.2f} s, grid {out['video_grid_thw'].tolist()}", file=sys.stderr)
PY
/usr/bin/time -v "$python" "$out/transformers_side.py" "$clip" "$sample" 2> "$out/transformers.time" >/dev/null \
  || { cat "$out/transformers.time"; exit 1; }
grep -E "^decode" "$out/transformers.time" || true
summary "$out/transformers.time"
