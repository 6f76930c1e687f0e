#!/usr/bin/env python3
"""Golden fixtures for vl3c's video decoding (runtime/src/video/decode) and the video path end to
end (decode → VideoLlama3Processor → VideoLlama3ForConditionalGeneration).

Writes tests/fixtures/video/:

  static_bg/       a still photo (skimage coffee) with a small object (astronaut's face) moving
                   across; 160x120, 10 fps, 30 frames, H.264 (libx264 defaults: High profile,
                   B-frames). Sampled at fps=2: most merged tokens are pruned by Differential
                   Frame Pruning, not all.
  moving_camera/   a pan and zoom across skimage's astronaut; same size and rate; sampled with
                   num_frames=4; nothing is pruned.
  gif/             a 6-frame 96x64 GIF (rocket crops) with varying delays, one of 1/100 s;
                   sampled with num_frames=4.
  gif_transparent/ decode only: an object over transparency, disposed to background each frame
                   (case.json: PyAV's metadata and frame hashes).
  frames/          frame_0001.png … frame_0030.png: PyAV's rgb24 decode of static_bg.mp4, so the
                   reader of frame directories sees the same frames PyAV decoded. transformers
                   has no frame rate for them (fps None: the processor's timestamps fall back to
                   fps 1); sampled with num_frames=6 (the frames static_bg samples at fps 2).
  color/           decode-only clips (8 frames of 64x48 or 46x30): BT.709, full range, an odd
                   size, the Constrained Baseline profile; `expected.safetensors` holds every
                   PyAV frame (frames_u8_<clip>), case.json their metadata.
  unsupported/     hevc.mp4 (libx265, 'hev1'), av1.mp4 (SVT-AV1, 'av01'), audio_only.mp4 (AAC); the
                   first two were unsupported before vl3c decoded through FFmpeg and now decode
                   (make_media_fixtures.py records their frames); audio_only.mp4 stays an error.

Each pipeline case directory holds the input, `video_preprocessor_config.json` (the examples/tiny
video processor with a smaller `size`, so a 160x120 frame is 8x12 patches), `case.json` and
`expected.safetensors`:

  pixels_u8               u8  [N, 588]  round(pixel_values_videos*127.5 + 127.5); checked exact:
                                        pixel_values_videos == (f32(pixels_u8) - 127.5) / 127.5
                                        in float32 (stored as u8 to keep the fixtures small)
  video_grid_thw          i64 [1, 3]
  video_merge_sizes       i64 [1]
  video_compression_mask  u8  [tokens]  0/1 (bool as u8)
  input_ids               i64 [1, L]
  logits                  f32 [L, V]    every position for static_bg; [1, V] (last position only)
                                        for the other cases (case.json "logits")
  frames_u8               u8  [T, H, W, 3]  PyAV's rgb24 frames at the sampled indices (not in
                                        frames/, whose PNG files are those frames, nor in
                                        static_bg/, whose frames are frames/'s PNG files)

case.json records the file, the sampling argument, PyAV's metadata (frames, average_rate,
duration, every frame's time, picture types, colour description) and the sha256 of every PyAV
rgb24 frame (all frames, so the decoder test covers frames that are not stored), the sampled
indices and timestamps, the prompt, the tokens before/after pruning, greedy ids and versions.

transformers is used as users use it: `load_video(path, backend="pyav")` (all frames + PyAV's
`VideoMetadata`), then `processor.apply_chat_template([...{"type": "video", "video": frames}...],
video_metadata=[metadata], fps=…|num_frames=…, add_generation_prompt=True, tokenize=True,
return_dict=True)`, which samples with the video processor's `sample_frames` exactly as the PyAV
loader would with that `sample_indices_fn` (the script checks it). (transformers 5.24 loads a
video *path* given to apply_chat_template with torchcodec, which is not installed here.)

Run: /work/pyenv/bin/python tools/golden/make_video_fixtures.py   (deterministic, ~10 s)
"""
import functools
import hashlib
import json
import os
import shutil

import av
import numpy as np
import PIL
import skimage
import skimage.data
import torch
import transformers
from PIL import Image
from safetensors.numpy import save_file
from transformers import VideoLlama3ForConditionalGeneration, VideoLlama3Processor, VideoLlama3VideoProcessor
from transformers.video_utils import VideoMetadata, load_video

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "video")
CKPT = os.path.join(ROOT, "examples", "tiny")
PROMPT = "What happens in this video?"
N_NEW = 8
CRF = "23"
FPS = 10
VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "av": av.__version__,
    "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
    "pillow": PIL.__version__,
    "scikit-image": skimage.__version__,
}


def resize(img, w, h):
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def write_video(path, frames, codec="libx264", fps=FPS, options=None, color=None, tag=None):
    """libx264 with its default encoding settings but a fixed crf, one thread (x264's output
    depends on the thread count, which would otherwise follow the machine's cores) and its C code
    paths (`asm=0`: with the SIMD paths the output varied from run to run here, an uninitialised
    read; the C paths give the same standard High-profile stream every time)."""
    c = av.open(path, "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height = frames[0].shape[1], frames[0].shape[0]
    s.pix_fmt = "yuv420p"
    s.options = {"crf": CRF, "x264-params": "asm=0", **(options or {})} if codec == "libx264" else (options or {})
    s.codec_context.thread_count = 1
    if tag:
        s.codec_tag = tag
    for k, v in (color or {}).items():
        setattr(s.codec_context, k, v)
    for f in frames:
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def static_bg_frames():
    bg = resize(skimage.data.coffee(), 160, 120)
    obj = resize(skimage.data.astronaut()[30:230, 150:350], 20, 20)
    frames = []
    for t in range(30):
        f = bg.copy()
        x = 6 + 4 * t
        f[50:70, x:x + 20] = obj
        frames.append(f)
    return frames


def moving_camera_frames():
    src = skimage.data.astronaut()
    frames = []
    for t in range(30):
        s = 1.0 - 0.01 * t
        w, h = int(320 * s), int(240 * s)
        x, y = 20 + 5 * t, 40 + 3 * t
        frames.append(resize(src[y:y + h, x:x + w], 160, 120))
    return frames


def write_gif(path):
    src = skimage.data.rocket()
    frames = [Image.fromarray(resize(src[40 + 20 * t:240 + 20 * t, 100 + 30 * t:400 + 30 * t], 96, 64)) for t in range(6)]
    # ms; 10 ms is stored as 1/100 s, which FFmpeg plays as is (0 would become 10/100 s)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200, 50, 300, 10, 150], loop=0)


def write_transparent_gif(path):
    """An object moving over transparency, each frame disposed to the background: FFmpeg paints
    transparent pixels white (its trans_color 0x00FFFFFF), which PyAV's rgb24 keeps."""
    obj = resize(skimage.data.astronaut()[30:230, 150:350], 16, 16)
    frames = []
    for t in range(6):
        a = np.zeros((64, 96, 4), np.uint8)
        a[20:36, 5 + 12 * t:21 + 12 * t, :3] = obj
        a[20:36, 5 + 12 * t:21 + 12 * t, 3] = 255
        frames.append(Image.fromarray(a))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, disposal=2)


def pyav_info(path):
    """What PyAV reports and decodes: metadata and every frame as rgb24."""
    c = av.open(path)
    s = c.streams.video[0]
    frames, times, types = [], [], []
    color = None
    for f in c.decode(video=0):
        frames.append(f.to_ndarray(format="rgb24"))
        times.append(float(f.time))
        types.append({1: "I", 2: "P", 3: "B"}.get(int(f.pict_type), str(int(f.pict_type))))
        color = {"colorspace": int(f.colorspace), "color_range": int(f.color_range), "format": f.format.name}
    info = {
        "total_frames": int(s.frames),
        "average_rate": [s.average_rate.numerator, s.average_rate.denominator] if s.average_rate else None,
        "fps": float(s.average_rate) if s.average_rate else None,
        "duration_s": float(s.duration * s.time_base) if s.duration else None,
        "width": s.width,
        "height": s.height,
        "codec": s.codec_context.name,
        "profile": s.codec_context.profile,
        "frame_times": times,
        "picture_types": types,
        "color": color,
        "frame_sha256": [hashlib.sha256(f.tobytes()).hexdigest() for f in frames],
    }
    c.close()
    return np.stack(frames), info


def processor(size):
    proc = VideoLlama3Processor.from_pretrained(CKPT)
    with open(os.path.join(CKPT, "video_preprocessor_config.json")) as f:
        cfg = json.load(f)
    cfg["size"] = size
    kwargs = {k: v for k, v in cfg.items() if k != "video_processor_type"}
    proc.video_processor = VideoLlama3VideoProcessor(**kwargs)
    return proc, cfg


def pixels_to_u8(pv):
    u8 = np.round(pv.numpy().astype(np.float64) * 127.5 + 127.5)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    back = (u8.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
    assert np.array_equal(back, pv.numpy()), "pixel_values_videos is not (u8 - 127.5) / 127.5 exactly"
    return u8


def run_case(name, video_path, frames_all, meta, sampling, size, all_logits, store_frames, model, extra):
    d = os.path.join(OUT, name)
    proc, cfg = processor(size)
    with open(os.path.join(d, "video_preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    conv = [{"role": "user", "content": [{"type": "video", "video": frames_all}, {"type": "text", "text": PROMPT}]}]
    out = proc.apply_chat_template(
        conv, chat_template=proc.tokenizer.chat_template, add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt", processor_kwargs={"video_metadata": [meta], **sampling})
    # The processor samples a copy of the metadata; its choice, and the timestamps of the prompt
    # (`VideoMetadata.timestamps` over the int32 indices: float32 values; fps None counts as 1).
    vp = proc.video_processor
    chosen = vp.sample_frames(metadata=VideoMetadata(**dict(meta)), **sampling)
    indices = [int(i) for i in chosen]
    meta_fps = meta.fps
    timestamps = [float(t) for t in VideoMetadata(total_num_frames=meta.total_num_frames, fps=meta.fps or 1,
                                                   frames_indices=chosen).timestamps]
    assert out["video_grid_thw"][0, 0].item() == len(indices)

    # The PyAV loader with the processor's sampling function gives the same frames.
    if video_path is not None:
        fn = functools.partial(vp.sample_frames, **sampling)
        sampled, smeta = load_video(video_path, backend="pyav", sample_indices_fn=fn)
        assert [int(i) for i in smeta.frames_indices] == indices, (smeta.frames_indices, indices)
        assert np.array_equal(sampled, frames_all[indices])

    inputs = {k: out[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw",
                                  "video_merge_sizes", "video_compression_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        gen = model.generate(**inputs, max_new_tokens=N_NEW, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    new_ids = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    margins = [float(v[0] - v[1]) for v in (sc[0].topk(2).values for sc in gen.scores)]
    mask = out["video_compression_mask"].numpy()
    tensors = {
        "pixels_u8": pixels_to_u8(out["pixel_values_videos"]),
        "video_grid_thw": out["video_grid_thw"].numpy().astype(np.int64),
        "video_merge_sizes": out["video_merge_sizes"].numpy().astype(np.int64),
        "video_compression_mask": mask.astype(np.uint8),
        "input_ids": out["input_ids"].numpy().astype(np.int64),
        "logits": (logits if all_logits else logits[-1:]).numpy().astype(np.float32),
    }
    if store_frames is True:
        tensors["frames_u8"] = np.ascontiguousarray(frames_all[indices])
    else:
        extra = {**extra, "frames_u8": store_frames}
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    case = {
        **extra,
        "sampling": sampling,
        "metadata_given_to_processor": {"total_num_frames": meta.total_num_frames, "fps": meta_fps,
                                        "width": meta.width, "height": meta.height, "duration": meta.duration},
        "sampled_indices": indices,
        "timestamps": timestamps,
        "prompt": PROMPT,
        "video_grid_thw": tensors["video_grid_thw"].tolist(),
        "tokens_before_pruning": int(mask.size),
        "tokens_after_pruning": int(mask.sum()),
        "input_len": int(out["input_ids"].shape[1]),
        "logits": "all positions [L, V]" if all_logits else "last position only [1, V]",
        "greedy_new_ids": new_ids,
        "greedy_text": proc.tokenizer.decode(new_ids),
        "greedy_top1_top2_margins": margins,
        "versions": VERSIONS,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=2)
        f.write("\n")
    return case


def color_clips():
    d = os.path.join(OUT, "color")
    src = skimage.data.chelsea()
    def clip(w, h):
        return [resize(src[10 + 8 * t:250 + 8 * t, 20 + 10 * t:340 + 10 * t], w, h) for t in range(8)]
    specs = {
        "bt709": (clip(64, 48), {}, {"colorspace": 1, "color_primaries": 1, "color_trc": 1}),
        "full_range": (clip(64, 48), {}, {"color_range": 2}),
        "odd_size": (clip(46, 30), {}, {}),
        "baseline": (clip(64, 48), {"profile": "baseline"}, {}),
    }
    tensors, cases = {}, {}
    for name, (frames, opts, color) in specs.items():
        path = os.path.join(d, name + ".mp4")
        write_video(path, frames, options=opts, color=color)
        dec, info = pyav_info(path)
        tensors["frames_u8_" + name] = dec
        cases[name] = {"file": name + ".mp4", "encoder_options": opts, "encoder_color": color, "pyav": info}
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump({"clips": cases, "versions": VERSIONS}, f, indent=2)
        f.write("\n")


def unsupported_clips():
    d = os.path.join(OUT, "unsupported")
    frames = [np.full((64, 64, 3), 16 * t, np.uint8) for t in range(2)]
    write_video(os.path.join(d, "hevc.mp4"), frames, codec="libx265", options={"x265-params": "log-level=none:pools=none:frame-threads=1"})
    write_video(os.path.join(d, "av1.mp4"), frames, codec="libsvtav1")
    c = av.open(os.path.join(d, "audio_only.mp4"), "w")
    s = c.add_stream("aac", rate=8000)
    samples = np.zeros((1, 1024), np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = 8000
    for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for sub in ("static_bg", "moving_camera", "gif", "gif_transparent", "frames", "color", "unsupported"):
        os.makedirs(os.path.join(OUT, sub))
    unsupported_clips()
    color_clips()
    model = VideoLlama3ForConditionalGeneration.from_pretrained(CKPT, attn_implementation="eager", dtype=torch.float32).eval()
    # 8x12 patches per 160x120 frame (112x168 after smart_resize) at up to 30 frames
    size = {"shortest_edge": 3136, "longest_edge": 112 * 168 * 30}

    summary = {}
    for name, make, sampling, all_logits in [
        ("static_bg", static_bg_frames, {"fps": 2}, True),
        ("moving_camera", moving_camera_frames, {"num_frames": 4}, False),
    ]:
        # static_bg's sampled frames are in frames/ (all 30 PyAV frames as PNG), not stored twice
        frames_note = "not stored: ../frames/frame_NNNN.png holds every PyAV frame (NNNN = index + 1)"
        path = os.path.join(OUT, name, name + ".mp4")
        write_video(path, make())
        dec, info = pyav_info(path)
        frames_all, meta = load_video(path, backend="pyav")
        assert np.array_equal(frames_all, dec)
        extra = {"file": name + ".mp4", "pyav": info}
        store = frames_note if name == "static_bg" else True
        summary[name] = run_case(name, path, frames_all, meta, sampling, size, all_logits, store, model, extra)
        if name == "static_bg":
            for i, f in enumerate(dec):
                Image.fromarray(f).save(os.path.join(OUT, "frames", f"frame_{i + 1:04d}.png"), optimize=True)
            static = dec

    gif_path = os.path.join(OUT, "gif", "animation.gif")
    write_gif(gif_path)
    dec, info = pyav_info(gif_path)
    frames_all, meta = load_video(gif_path, backend="pyav")
    assert np.array_equal(frames_all, dec)
    summary["gif"] = run_case("gif", gif_path, frames_all, meta, {"num_frames": 4}, size, False, True, model,
                              {"file": "animation.gif", "pyav": info})

    path = os.path.join(OUT, "gif_transparent", "transparent.gif")
    write_transparent_gif(path)
    with open(os.path.join(OUT, "gif_transparent", "case.json"), "w") as f:
        json.dump({"file": "transparent.gif", "pyav": pyav_info(path)[1], "versions": VERSIONS}, f, indent=2)
        f.write("\n")

    meta = VideoMetadata(total_num_frames=len(static), fps=None, width=160, height=120)
    summary["frames"] = run_case("frames", None, static, meta, {"num_frames": 6}, size, False,
                                 "not stored: the frame files are PyAV's frames", model,
                                 {"files": "frame_0001.png … frame_0030.png (PyAV's rgb24 decode of static_bg.mp4)",
                                  "total_frames": len(static)})

    s = summary["static_bg"]
    assert 0 < s["tokens_after_pruning"] < s["tokens_before_pruning"] / 2, "static_bg: most tokens must be pruned, not all"
    m = summary["moving_camera"]
    assert m["tokens_after_pruning"] >= 0.9 * m["tokens_before_pruning"], "moving_camera: nearly nothing pruned"
    for name, c in summary.items():
        print(f"{name}: indices {c['sampled_indices']}, tokens {c['tokens_before_pruning']} → {c['tokens_after_pruning']}, "
              f"greedy {c['greedy_new_ids']}")
    total = 0
    for dirpath, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"tests/fixtures/video: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
