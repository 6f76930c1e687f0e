#!/usr/bin/env python3
"""Golden fixtures for vl3c's video processor (runtime/src/video/process).

Writes tests/fixtures/video_processor/:

  <case>/                      one call of transformers' `VideoLlama3VideoProcessor`
      u<k>.png                 the distinct frames (every video frame is one of them)
      video_preprocessor_config.json
                               the processor's settings, as `save_pretrained` would write them
      case.json                the videos (frame files in order, metadata), the call's sampling
                               arguments, what was expected and the versions
      expected.safetensors
          pixels_u8            u8 [N, 588]  round(pixel_values_videos*127.5 + 127.5) (checked exact)
            or, where the pixels would be too big to store,
          row_sum, row_wsum    u64 [N]      per row of pixels_u8: Σ v and Σ (k+1)·v
          video_grid_thw       i64 [n, 3]
          video_merge_sizes    i64 [n]
          video_compression_mask bool [Σ t·h·w/4]
          frames_indices_<v>   i64 [T_v]    the frames the processor used
          timestamps_<v>       f64 [T_v]    `VideoMetadata.timestamps` after the processor's fps = 1
                                            fallback (float32 values where sample_frames chose the
                                            frames: the indices are an int32 tensor)

  sampling.json                `sample_frames` and `torch.arange(0, total, total/n).int()` tables:
      arange         [[total, n, [indices]]]      raw `.int()` values; may hold n+1 entries whose
                                                  last is `total` (transformers then fails to index)
      sample_frames  [{total, video_fps_bits, fps_bits, num_frames, temporal_patch_size,
                       min_frames, max_frames, indices | error}]
      timestamps     [{indices, video_fps_bits, sampled, seconds_bits, text}]
  Exact floats are written as the hex of their f64 bits ("0x3fb999999999999a"): serde_json's
  default float parsing is not always correctly rounded.

Transformers is used as users use it: `VideoLlama3VideoProcessor(**config)(videos=[uint8 THWC],
video_metadata=..., do_sample_frames=..., fps/num_frames=..., return_tensors="pt")`.

Run: /work/pyenv/bin/python tools/golden/make_video_processor_fixtures.py   (deterministic, ~10 s)
"""
import json
import math
import os
import random
import shutil
import struct
import sys

import numpy as np
import PIL
import PIL.Image
import skimage
import skimage.data
import torch
import torchvision
import transformers
from safetensors.numpy import save_file
from transformers import VideoLlama3VideoProcessor
from transformers.video_utils import VideoMetadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "video_processor")

VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "pillow": PIL.__version__,
    "scikit-image": skimage.__version__,
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
}

# One 84x112 frame holds a 6x8 patch grid: 3x4 merged tokens of 28x28 pixels.
GRID_FRAME = 84 * 112


def f64_hex(x):
    return None if x is None else "0x" + struct.pack(">d", float(x)).hex()


def norm_table():
    x = np.arange(256, dtype=np.float32)
    return (x - np.float32(127.5)) / np.float32(127.5)


def encode_u8(pv):
    u8 = np.round(pv.astype(np.float64) * 127.5 + 127.5)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    assert np.array_equal(norm_table()[u8], pv), "pixels_u8 is not an exact encoding"
    return u8


def save_png(arr, path):
    PIL.Image.fromarray(arr).save(path, optimize=True)


def timestamps_like_processor(md):
    """`VideoLlama3Processor.replace_video_token`: fps None falls back to 1, then
    `metadata.timestamps` (frame_idx / fps per index)."""
    fps = 1 if md.fps is None else md.fps
    return [float(idx / fps) for idx in md.frames_indices]


def run_case(name, uniques, videos, config, call, note, store_pixels=True):
    """uniques: {file stem: HxWx3 u8}; videos: [{"frames": [stem, ...], "metadata": dict | None}];
    config: the processor's constructor kwargs (= its json); call: do_sample_frames / fps / num_frames."""
    d = os.path.join(OUT, name)
    os.makedirs(d)
    for stem, arr in uniques.items():
        save_png(arr, os.path.join(d, f"{stem}.png"))
    # read the PNGs back so the processor sees exactly what the Rust test decodes
    loaded = {stem: np.asarray(PIL.Image.open(os.path.join(d, f"{stem}.png")).convert("RGB")) for stem in uniques}
    arrays = [np.stack([loaded[s] for s in v["frames"]]) for v in videos]
    metadata = None
    if any(v["metadata"] is not None for v in videos):
        metadata = []
        for v, a in zip(videos, arrays):
            md = dict(v["metadata"] or {"total_num_frames": len(a), "fps": None})
            # without sampling the processor keeps the metadata's indices (None would make
            # `timestamps` raise); all frames, as make_batched_metadata assumes when none is given
            md.setdefault("frames_indices", list(range(len(a))))
            metadata.append(VideoMetadata(**md))
    proc = VideoLlama3VideoProcessor(**config)
    out = proc(videos=arrays, video_metadata=metadata, return_tensors="pt", **call)
    pv = out["pixel_values_videos"].numpy()
    grid = out["video_grid_thw"].numpy().astype(np.int64)
    ms = out["video_merge_sizes"].numpy().astype(np.int64)
    mask = out["video_compression_mask"].numpy()
    assert pv.dtype == np.float32 and pv.shape[1] == 588 and mask.dtype == np.bool_
    u8 = encode_u8(pv)
    tensors = {"video_grid_thw": grid, "video_merge_sizes": ms, "video_compression_mask": mask}
    if store_pixels:
        tensors["pixels_u8"] = u8
    else:
        w = np.arange(1, u8.shape[1] + 1, dtype=np.uint64)
        tensors["row_sum"] = u8.astype(np.uint64).sum(axis=1)
        tensors["row_wsum"] = (u8.astype(np.uint64) * w).sum(axis=1)
    info_videos = []
    for i, md in enumerate(out["video_metadata"]):
        idx = [int(x) for x in md.frames_indices]
        ts = timestamps_like_processor(md)
        tensors[f"frames_indices_{i}"] = np.array(idx, dtype=np.int64)
        tensors[f"timestamps_{i}"] = np.array(ts, dtype=np.float64)
        info_videos.append({
            "frames": [f"{s}.png" for s in videos[i]["frames"]],
            "metadata": videos[i]["metadata"],
            "metadata_fps_bits": f64_hex((videos[i]["metadata"] or {}).get("fps")),
            "frames_indices": idx,
            "timestamps_text": [f"{t:.1f}" for t in ts],
        })
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "video_preprocessor_config.json"), "w") as f:
        json.dump({"video_processor_type": "VideoLlama3VideoProcessor", **config}, f, indent=2)
        f.write("\n")
    m = 2
    per_frame = [int(g[1] * g[2]) // (m * m) for g in grid]
    info = {
        "case": name,
        "note": note,
        "videos": info_videos,
        "call": call,
        "call_fps_bits": f64_hex(call.get("fps")),
        "constructed_with": config,
        "video_grid_thw": grid.tolist(),
        "n_patches": int(pv.shape[0]),
        "kept_tokens": int(mask.sum()),
        "tokens_per_frame": per_frame,
        "pixels": "pixels_u8 = round(pv*127.5+127.5), exact" if store_pixels
        else "row_sum / row_wsum of round(pv*127.5+127.5) per row (k = column, from 0)",
        "versions": VERSIONS,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"{name}: grid {grid.tolist()}, mask kept {int(mask.sum())}/{mask.size}, "
          f"indices {[v['frames_indices'] for v in info_videos]}")
    return out


def perturb(frame, block, count, level, rng):
    """Changes `count` of the 28x28x3 values of merged-token block (bi, bj) by ±level (no clipping)."""
    f = frame.copy()
    bi, bj = block
    sub = f[bi * 28:(bi + 1) * 28, bj * 28:(bj + 1) * 28].reshape(-1)
    pos = rng.choice(sub.size, size=count, replace=False)
    for p in pos:
        v = int(sub[p])
        sign = 1 if rng.random() < 0.5 else -1
        if not 0 <= v + sign * level <= 255:
            sign = -sign
        sub[p] = v + sign * level
    f[bi * 28:(bi + 1) * 28, bj * 28:(bj + 1) * 28] = sub.reshape(28, 28, 3)
    return f


def synthetic_frames():
    """84x112 frames (a 6x8 grid, no resize at 9408 pixels per frame)."""
    astro = skimage.data.astronaut()
    coffee = skimage.data.coffee()
    u0 = astro[100:184, 150:262].copy()
    u1 = u0.copy()
    u1[28:56, 56:84] = coffee[200:228, 300:328]  # one merged token (block row 1, col 2) changes
    rng = np.random.default_rng(7)
    # d = 2·(Σ|Δlevel|)/2352 per block: 118 values at ±1 give 0.1003 (kept), 117 give 0.0995
    # (pruned); 59 at ±2 give 0.1003 (kept), 58 give 0.0986 (pruned)
    u2 = perturb(u1, (0, 0), 118, 1, rng)
    u2 = perturb(u2, (2, 3), 117, 1, rng)
    u2 = perturb(u2, (1, 0), 59, 2, rng)
    u2 = perturb(u2, (0, 3), 58, 2, rng)
    u3 = astro[103:187, 155:267].copy()  # the crop shifted by (3, 5): every token changes
    return {"u0": u0, "u1": u1, "u2": u2, "u3": u3}


def make_cases():
    syn = synthetic_frames()

    run_case(
        "still_block_threshold", syn,
        [{"frames": ["u0", "u0", "u1", "u2", "u3", "u3"], "metadata": {"total_num_frames": 6, "fps": 2.0}}],
        {"size": {"shortest_edge": 784, "longest_edge": GRID_FRAME * 6}},
        {},
        "all 6 frames (no sampling), no resize; frame 1 repeats 0, frame 2 changes one 28x28 block, "
        "frame 3 changes blocks by +-1/+-2 levels just above / below the 0.1 threshold, "
        "frame 4 is a shifted crop, frame 5 repeats 4")

    chelsea = skimage.data.chelsea()
    pan = {f"u{k}": chelsea[60:140, 100 + 3 * k:220 + 3 * k].copy() for k in range(6)}
    run_case(
        "num_frames_resize", pan,
        [{"frames": ["u0", "u1", "u2", "u3", "u4", "u5", "u5", "u5", "u2", "u0"],
          "metadata": {"total_num_frames": 10, "fps": 30000 / 1001}}],
        {"size": {"shortest_edge": 784, "longest_edge": GRID_FRAME * 4}},
        {"do_sample_frames": True, "num_frames": 4},
        "num_frames=4 of 10 at 29.97 fps: arange(0, 10, 2.5) -> 0,2,5,7 (7 repeats 5); "
        "80x120 frames resized to 84x112 (up in h, down in w)")

    coffee = skimage.data.coffee()
    quads = {f"u{k}": coffee[40 * k:40 * k + 64, 60 * k + 100:60 * k + 196].copy() for k in range(4)}
    run_case(
        "fps_min_frames", quads,
        [{"frames": [f"u{k // 3}" for k in range(12)], "metadata": {"total_num_frames": 12, "fps": 7.5}}],
        {"size": {"shortest_edge": 6000, "longest_edge": 56 * 84 * 4}, "min_pixels": 784},
        {"do_sample_frames": True, "fps": 1},
        "fps=1 of 12 frames at 7.5 fps gives 1.6 frames, raised to min_frames=4: 0,3,6,9; "
        "64x96 frames resized down to 56x84 (a 4x6 grid); the legacy min_pixels key overrides "
        "size.shortest_edge (6000 would upscale to 84x112)")

    rocket = skimage.data.rocket()
    big0 = rocket[100:310, 150:430].copy()
    big1 = big0.copy()
    big1[:, 140:] = rocket[100:310, 200:340]
    h, w = big0.shape[:2]
    T = 12
    per = 602112 // T
    rounded = (round(h / 28) * 28, round(w / 28) * 28)
    assert rounded[0] * rounded[1] > per, "the budget rule must bind"
    run_case(
        "default_budget", {"u0": big0, "u1": big1},
        [{"frames": ["u0", "u0", "u1", "u1", "u1", "u0", "u0", "u1", "u0", "u0", "u1", "u1"], "metadata": None}],
        {},
        {},
        f"class-default size (100352 / 602112): {T} frames of {h}x{w} share 602112 pixels, "
        f"{per} each, so smart_resize's max branch binds ({rounded[0]}x{rounded[1]} rounded is "
        f"{rounded[0] * rounded[1]} > {per}); no metadata: fps falls back to 1",
        store_pixels=False)

    run_case(
        "no_compression", {"u0": syn["u0"], "u1": syn["u1"]},
        [{"frames": ["u0", "u0", "u1"], "metadata": {"total_num_frames": 3, "fps": 1.0}}],
        {"size": {"shortest_edge": 784, "longest_edge": GRID_FRAME * 3}, "use_token_compression": False},
        {},
        "use_token_compression=False: the mask is all true although frame 1 repeats frame 0")

    small = coffee[100:156, 200:284].copy()
    run_case(
        "multi", {"u0": syn["u0"], "u1": syn["u1"], "u3": syn["u3"], "s0": small},
        [{"frames": ["u0", "u1", "u3"], "metadata": {"total_num_frames": 3, "fps": 25.0}},
         {"frames": ["s0"], "metadata": None},
         {"frames": ["u3", "u3"], "metadata": {"total_num_frames": 2, "fps": 10.0}}],
        {"size": {"shortest_edge": 784, "longest_edge": 1000}, "max_pixels": GRID_FRAME * 3},
        {},
        "three videos in one call: 3 frames 84x112, 1 frame 56x84 (t == 1: mask all true), 2 equal "
        "frames 84x112 (same frame shape as the first, other frame count: another torch group); "
        "the budget is longest_edge // T per video; the legacy max_pixels key overrides size.longest_edge")


def arange_int(total, n):
    return torch.arange(0, total, total / n).int().tolist()


def plain_f32(total, n):
    """What a per-element f32(i*step) would give; the table includes pairs where torch differs."""
    step = total / n
    length = math.ceil(total / step)
    return [int(np.float32(i * step)) for i in range(length)]


def sampling_tables():
    proc = VideoLlama3VideoProcessor()
    pairs = [(31, 7), (1799, 60), (7, 4), (15, 13), (17, 7), (34, 7), (30, 6), (10, 4), (12, 4),
             (1, 1), (2, 1), (100, 33), (5000, 180), (3600, 180), (90000, 180), (1000000, 128)]
    pairs += [(t, n) for t in range(1, 49) for n in range(1, t + 1)]
    rng = random.Random(1234)
    for _ in range(150):
        t = rng.choice([rng.randint(50, 5000), rng.randint(5000, 200000)])
        pairs.append((t, rng.randint(1, min(t, 200))))
    # long videos where f32 storage and torch's 8-wide chunks decide the truncation
    found = 0
    while found < 12:
        t = rng.randint(10 ** 6, 3 * 10 ** 7)
        n = rng.randint(16, 200)
        if arange_int(t, n) != plain_f32(t, n):
            pairs.append((t, n))
            found += 1
    seen = set()
    arange = []
    for t, n in pairs:
        if (t, n) in seen:
            continue
        seen.add((t, n))
        arange.append([t, n, arange_int(t, n)])

    cases = []

    def sample(total, video_fps=None, fps=None, num_frames=None, tps=1, min_frames=4, max_frames=180):
        entry = {"total": total, "video_fps_bits": f64_hex(video_fps), "video_fps": video_fps,
                 "fps_bits": f64_hex(fps), "fps": fps, "num_frames": num_frames,
                 "temporal_patch_size": tps, "min_frames": min_frames, "max_frames": max_frames}
        md = VideoMetadata(total_num_frames=total, fps=video_fps)
        try:
            idx = proc.sample_frames(md, temporal_patch_size=tps, min_frames=min_frames,
                                     max_frames=max_frames, num_frames=num_frames, fps=fps)
            entry["indices"] = idx.tolist()
        except Exception as e:  # the Rust side must fail too
            entry["error"] = f"{type(e).__name__}: {e}"
        cases.append(entry)

    sample(30, 10.0, fps=2)                      # spec: 0,5,..,25
    sample(12, 7.5, fps=1)                       # min_frames
    sample(20, 10.0, fps=2)
    sample(1799, 29.97, fps=1)                   # 60 s at 29.97: 60 frames
    sample(1799, 30000 / 1001, fps=2)
    sample(18000, 30.0, fps=1)                   # 600 s: capped by max_frames=180
    sample(18000, 30.0, fps=1, max_frames=64)
    sample(3, 30.0, fps=1)                       # min_frames > total: all 3
    sample(7, 1.0, fps=0.5)                      # 3.5 -> min_frames 4: arange(0,7,1.75)
    sample(100, 25.0, fps=0.1)
    sample(101, 25.0, fps=3, tps=2)              # floor to a multiple of temporal_patch_size
    sample(9, 25.0, fps=100, tps=2)
    sample(5, 10.0, fps=1, min_frames=1, max_frames=1)
    sample(15, 10.0, num_frames=13)              # arange gives 14 indices, the last is 15
    sample(17, None, num_frames=7)
    sample(31, None, num_frames=7)
    sample(1799, 29.97, num_frames=60)
    sample(7, None, num_frames=4)
    sample(10, None, num_frames=10)
    sample(10, None, num_frames=5, tps=2)
    sample(10, None, num_frames=3, tps=2)        # round(1.5)*2 = 4 (banker's)
    sample(10, None, num_frames=5, tps=4)        # round(1.25)*4 = 4
    sample(10, None, num_frames=7, tps=2)        # round(3.5)*2 = 8
    sample(300, None, num_frames=250)            # num_frames ignores max_frames
    sample(0, 10.0, fps=1)                       # no frames
    sample(10, None, num_frames=11)              # more than the video has
    sample(10, None, num_frames=0)
    sample(10, None, fps=1)                      # fps needs the video's fps
    sample(10, 10.0, fps=1, num_frames=4)        # mutually exclusive
    sample(10, 10.0)                             # sampling with neither
    sample(10, None, num_frames=1, tps=4)        # round(0.25)*4 = 0

    stamps = []

    def stamp(indices, video_fps, sampled):
        if sampled:
            frames_indices = torch.tensor(indices, dtype=torch.int32)  # what sample_frames returns
        else:
            frames_indices = list(indices)
        md = VideoMetadata(total_num_frames=max(indices) + 1, fps=video_fps, frames_indices=frames_indices)
        ts = timestamps_like_processor(md)
        stamps.append({"indices": list(indices), "video_fps_bits": f64_hex(video_fps), "video_fps": video_fps,
                       "sampled": sampled, "seconds_bits": [f64_hex(t) for t in ts],
                       "text": [f"{t:.1f}" for t in ts]})

    for sampled in (True, False):
        stamp(list(range(0, 40)), 20.0, sampled)            # 9/20 = 0.45: "0.4" in f32, "0.5" in f64
        stamp(list(range(0, 1799, 29)), 29.97, sampled)
        stamp(list(range(0, 1799, 30)), 30000 / 1001, sampled)
        stamp(list(range(0, 500, 7)), 23.976, sampled)
        stamp([0, 3, 6, 9], 7.5, sampled)
        stamp([0, 5, 10, 15, 20], None, sampled)               # fps unknown: 1
        stamp(list(range(0, 100)), 0.3, sampled)
    return {"arange": arange, "sample_frames": cases, "timestamps": stamps, "versions": VERSIONS}


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.set_num_threads(1)
    make_cases()
    tables = sampling_tables()
    with open(os.path.join(OUT, "sampling.json"), "w") as f:
        json.dump(tables, f, separators=(",", ":"))
        f.write("\n")
    print(f"sampling.json: {len(tables['arange'])} arange pairs, {len(tables['sample_frames'])} "
          f"sample_frames cases, {len(tables['timestamps'])} timestamp lists")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"fixture dir size: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
