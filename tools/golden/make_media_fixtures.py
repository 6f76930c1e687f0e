#!/usr/bin/env python3
"""Golden fixtures for vl3c's FFmpeg video decoding (runtime/src/video/decode/ffmpeg): real media
as users have it, made with Debian's `ffmpeg` CLI, and what transformers' PyAV loader gives for it.

Writes tests/fixtures/video_media/ (a directory of its own: make_video_fixtures.py rewrites
tests/fixtures/video/ whole):

  <clip files>     12 frames each of FFmpeg's `testsrc2` pattern (moving), 10 fps unless said:
                   h264_444.mp4        H.264 High 4:4:4 Predictive (yuv444p), B-frames
                   h264_high10.mp4     H.264 High 10 (yuv420p10le), B-frames
                   h264_interlaced.mp4 H.264 interlaced (PAFF/MBAFF, top field first)
                   h264.mkv            H.264 High in Matroska (no frame count in the container)
                   h264_fragmented.mp4 fragmented MP4 (moof per keyframe, empty moov)
                   h264_aac.mov        QuickTime with an AAC audio track beside the video
                   hevc.mkv            HEVC Main (libx265) in Matroska
                   av1.mkv             AV1 (libaom) in Matroska
                   vp9.webm            VP9 (libvpx) in WebM
                   mpeg4.avi           MPEG-4 Part 2 with B-frames in AVI
                   rotated.mp4         160x96 coded, display matrix rotating it 90°: a portrait
                                       phone video (PyAV does not rotate)
                   vfr.mp4             variable frame rate: frame k at k²/40 s, on the encoder's
                                       0.1 s grid (0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.9, …)
                   hevc10_phone.mov    what a phone records: HEVC Main 10 (yuv420p10le, `hvc1`),
                                       BT.2020 HLG tags, 30 fps, an AAC track, display matrix
                                       rotating it 90° (portrait)
                   hevc10_topleft.mkv  HEVC Main 10 with chroma signalled at the top-left luma
                                       sample (chroma_sample_loc_type 2; BT.2100 material)
  case.json        per clip: PyAV's metadata (`streams.video[0].frames`, `average_rate`, every
                   decoded frame's time, picture types, colour description, rotation), the sha256
                   of every PyAV rgb24 frame (`to_ndarray(format="rgb24")`, what transformers
                   stacks), whether transformers' `load_video(backend="pyav")` works on it, and
                   for the processor cases the sampled indices, timestamps, grid and mask counts;
                   `rotated.upright_sha256`: PyAV's frames turned by the display matrix (the
                   direction checked against the ffmpeg CLI's autorotation); the two clips of
                   ../video/unsupported (hevc.mp4, av1.mp4), which FFmpeg now decodes, by hash.
  expected.safetensors
      pixels_u8_<clip>               u8  [N, 588]  transformers' pixel_values_videos as u8 (exact)
      video_grid_thw_<clip>          i64 [1, 3]
      video_compression_mask_<clip>  u8  [tokens]
                   for the processor cases, with video_preprocessor_config.json (the one of
                   ../video/static_bg with size.longest_edge 4·84·112) and num_frames=4.

Where PyAV reports 0 frames (Matroska, WebM, fragmented MP4), transformers' `load_video` fails
(sample_frames gets total_num_frames 0); the processor case then uses every frame PyAV decodes
with total_num_frames = their count and fps = average_rate, which is what vl3c does (it counts
the frames). case.json records transformers' error for those clips.

Run: /work/pyenv/bin/python tools/golden/make_media_fixtures.py   (needs Debian's ffmpeg CLI
with libx264, libx265, libvpx, libaom; ~20 s)
"""
import hashlib
import json
import os
import shutil
import subprocess

import av
import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import VideoLlama3VideoProcessor
from transformers.video_utils import VideoMetadata, load_video

torch.set_num_threads(2)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "video_media")
OLD = os.path.join(ROOT, "tests", "fixtures", "video")
CONFIG = os.path.join(OLD, "static_bg", "video_preprocessor_config.json")
SRC = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"]
X264 = ["-frames:v", "12", "-c:v", "libx264", "-threads", "1", "-crf", "28", "-bf", "2", "-g", "6"]


def ffmpeg_version():
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0]


VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "av": av.__version__,
    "pyav_ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
    "ffmpeg_cli": ffmpeg_version(),
}

CLIPS = {
    "h264_444.mp4": SRC + X264 + ["-pix_fmt", "yuv444p", "-profile:v", "high444"],
    "h264_high10.mp4": SRC + X264 + ["-pix_fmt", "yuv420p10le", "-profile:v", "high10"],
    "h264_interlaced.mp4": SRC + X264 + ["-pix_fmt", "yuv420p", "-flags", "+ilme+ildct",
                                         "-x264-params", "tff=1"],
    "h264.mkv": SRC + X264 + ["-pix_fmt", "yuv420p"],
    "h264_fragmented.mp4": SRC + X264 + ["-pix_fmt", "yuv420p", "-movflags",
                                         "frag_keyframe+empty_moov+default_base_moof"],
    "h264_aac.mov": SRC + ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1.2"]
    + X264 + ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "16k"],
    "hevc.mkv": SRC + ["-frames:v", "12", "-c:v", "libx265", "-pix_fmt", "yuv420p", "-crf", "30",
                       "-x265-params", "log-level=none:pools=none:frame-threads=1:bframes=2"],
    "av1.mkv": SRC + ["-frames:v", "12", "-c:v", "libaom-av1", "-threads", "1", "-cpu-used", "8", "-crf", "45",
                      "-pix_fmt", "yuv420p"],
    "vp9.webm": SRC + ["-frames:v", "12", "-c:v", "libvpx-vp9", "-threads", "1", "-deadline", "realtime", "-crf", "45",
                       "-b:v", "0", "-pix_fmt", "yuv420p"],
    "mpeg4.avi": SRC + ["-frames:v", "12", "-c:v", "mpeg4", "-threads", "1", "-q:v", "6", "-bf", "2", "-g", "6"],
    "rotated.mp4": ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=10"]
    + X264 + ["-pix_fmt", "yuv420p"],
    "vfr.mp4": SRC + ["-vf", "setpts=N*N/40/TB", "-fps_mode", "vfr"] + X264
    + ["-pix_fmt", "yuv420p", "-video_track_timescale", "1000"],
    "hevc10_phone.mov": ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30", "-f", "lavfi", "-i",
                         "sine=frequency=440:sample_rate=8000:duration=0.5", "-frames:v", "12",
                         "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1", "-x265-params",
                         "log-level=none:pools=none:frame-threads=1:bframes=2:colorprim=bt2020"
                         ":transfer=arib-std-b67:colormatrix=bt2020nc", "-c:a", "aac", "-b:a", "16k"],
    "hevc10_topleft.mkv": SRC + ["-frames:v", "12", "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-crf", "30",
                                 "-x265-params",
                                 "log-level=none:pools=none:frame-threads=1:bframes=2:chromaloc=2"],
}
# Applied by a stream copy after encoding: ffmpeg 5.1 writes the display matrix of a `rotate` tag
# only when it copies the stream.
REMUX = {name: ["-c", "copy", "-metadata:s:v:0", "rotate=90"] for name in ("rotated.mp4", "hevc10_phone.mov")}
# The processor cases: transformers' VideoLlama3VideoProcessor on the PyAV frames.
PROCESSED = list(CLIPS)
# 4 frames of 84x112 (6x8 patches) from a 160x120 clip: keeps the stored pixels small.
SIZE = {"shortest_edge": 3136, "longest_edge": 4 * 84 * 112}


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def pyav_info(path):
    """What PyAV reports and decodes: metadata and every frame as rgb24, as transformers gets it."""
    c = av.open(path)
    s = c.streams.video[0]
    frames, times, types, rotation = [], [], [], None
    color = None
    for f in c.decode(video=0):
        frames.append(f.to_ndarray(format="rgb24"))
        times.append(float(f.time) if f.time is not None else None)
        types.append({1: "I", 2: "P", 3: "B"}.get(int(f.pict_type), str(int(f.pict_type))))
        color = {"colorspace": int(f.colorspace), "color_range": int(f.color_range), "format": f.format.name}
        rotation = getattr(f, "rotation", None)
    info = {
        "total_frames": int(s.frames),
        "decoded_frames": len(frames),
        "average_rate": [s.average_rate.numerator, s.average_rate.denominator] if s.average_rate else None,
        "fps": float(s.average_rate) if s.average_rate else None,
        "width": s.width,
        "height": s.height,
        "codec": s.codec_context.name,
        "frame_times": times,
        "picture_types": types,
        "color": color,
        "rotation": rotation,
        "frame_sha256": [sha(f) for f in frames],
    }
    c.close()
    return np.stack(frames), info


def transformers_frames(path, frames_all, info, vp):
    """The frames and metadata transformers' loader gives, or its error and the fallback."""
    try:
        frames, meta = load_video(path, backend="pyav")
        assert np.array_equal(frames, frames_all)
        return frames, meta, "ok"
    except Exception as e:  # noqa: BLE001 - recorded in case.json
        meta = VideoMetadata(total_num_frames=len(frames_all), fps=info["fps"], width=info["width"],
                             height=info["height"], duration=len(frames_all) / info["fps"],
                             video_backend="pyav")
        return frames_all, meta, f"{type(e).__name__}: {e}".splitlines()[0]


def upright(path, frames, info):
    """PyAV's frames turned as the ffmpeg CLI displays the clip (its autorotation)."""
    h, w = info["width"], info["height"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    cli = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).astype(np.int32)
    # Debian's ffmpeg converts 10-bit frames with an older libswscale than PyAV's (mean ~4 levels
    # apart), so the direction is the one far closer to the CLI's output, not an exact match.
    errs = {k: np.abs(np.rot90(frames, k, axes=(1, 2)).astype(np.int32) - cli[: len(frames)]).mean()
            for k in (1, 3)}
    k = min(errs, key=errs.get)
    err = errs[k]
    assert err < 6 and errs[4 - k] > 4 * err, f"no rotation matches ffmpeg's autorotation {errs}"
    turned = np.rot90(frames, k, axes=(1, 2))
    return {"np_rot90_k": k, "mean_abs_diff_vs_ffmpeg_cli": float(err),
            "upright_sha256": [sha(f) for f in turned]}


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    with open(CONFIG) as f:
        cfg = json.load(f)
    cfg["size"] = SIZE
    with open(os.path.join(OUT, "video_preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    vp = VideoLlama3VideoProcessor(**{k: v for k, v in cfg.items() if k != "video_processor_type"})
    env = {**os.environ, "SVT_LOG": "1"}
    cases, tensors = {}, {}
    for name, args in CLIPS.items():
        path = os.path.join(OUT, name)
        encoded = path + ".tmp" + os.path.splitext(name)[1] if name in REMUX else path
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-map_metadata", "-1", "-fflags", "+bitexact",
                        encoded], check=True, env=env)
        if name in REMUX:
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", encoded, *REMUX[name], "-fflags", "+bitexact",
                            path], check=True)
            os.remove(encoded)
        frames_all, info = pyav_info(path)
        case = {"file": name, "ffmpeg_args": args, "remux_args": REMUX.get(name), "pyav": info}
        frames, meta, loader = transformers_frames(path, frames_all, info, vp)
        case["transformers_load_video"] = loader
        if name in REMUX:
            case["rotated"] = upright(path, frames_all, info)
        if name in PROCESSED:
            out = vp(videos=[frames], video_metadata=[meta], do_sample_frames=True, num_frames=4,
                     return_tensors="pt")
            pv = out["pixel_values_videos"].numpy()
            u8 = np.round(pv.astype(np.float64) * 127.5 + 127.5).astype(np.uint8)
            assert np.array_equal((u8.astype(np.float32) - np.float32(127.5)) / np.float32(127.5), pv)
            key = name.replace(".", "_")
            mask = out["video_compression_mask"].numpy()
            tensors["pixels_u8_" + key] = u8
            tensors["video_grid_thw_" + key] = out["video_grid_thw"].numpy().astype(np.int64)
            tensors["video_compression_mask_" + key] = mask.astype(np.uint8)
            m = out["video_metadata"][0] if "video_metadata" in out else None
            indices = [int(i) for i in vp.sample_frames(metadata=VideoMetadata(**dict(meta)), num_frames=4)]
            case["processed"] = {
                "key": key,
                "num_frames": 4,
                "metadata_given_to_processor": {"total_num_frames": meta.total_num_frames, "fps": meta.fps},
                "sampled_indices": indices,
                "timestamps": [float(t) for t in m.timestamps] if m is not None else None,
                "video_grid_thw": tensors["video_grid_thw_" + key].tolist(),
                "tokens_kept": int(mask.sum()),
                "tokens": int(mask.size),
            }
        cases[name] = case
    for name in ("hevc.mp4", "av1.mp4"):
        path = os.path.join(OLD, "unsupported", name)
        cases["../video/unsupported/" + name] = {"file": "../video/unsupported/" + name,
                                                 "pyav": pyav_info(path)[1]}
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump({"clips": cases, "versions": VERSIONS}, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    for name, c in cases.items():
        p = c["pyav"]
        print(f"{name:28} frames {p['total_frames']:3} decoded {p['decoded_frames']:3} fps {p['fps']} "
              f"{p['color']['format'] if p['color'] else ''} rot {p['rotation']} loader: {c.get('transformers_load_video')}")
    print(f"{total} bytes in {OUT}")


if __name__ == "__main__":
    main()
