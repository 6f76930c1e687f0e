#!/usr/bin/env python3
"""Writes the benchmark clip of docs/PERFORMANCE.md (video section): 60 s of H.264 at 30 fps,
640x360, made from scikit-image's bundled photos, deterministic:

    /work/pyenv/bin/python tools/bench/make_clip.py --out /tmp/clip60.mp4

Three 20-second scenes, so that Differential Frame Pruning has something to prune and something
to keep: a still photo with a ball bouncing across it (most tokens unchanged frame to frame), a
slow pan across a larger photo (every token changes), then a still photo again. libx264 with its
default settings (High profile, B-frames) and crf 23, as a phone or a screen recorder would write.
"""

import argparse

import av
import numpy as np
import skimage.data
import skimage.transform

W, H, FPS, SECONDS = 640, 360, 30, 60


def fit(photo, w, h):
    img = skimage.transform.resize(photo, (h, w), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


def rgb(photo):
    return photo if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=2)


def frame_at(i, still_a, still_b, panorama):
    t = i / FPS
    if t < 20 or t >= 40:
        frame = (still_a if t < 20 else still_b).copy()
        # a 40-pixel ball bouncing across the still background
        x = int(abs((t * 173) % (2 * (W - 40)) - (W - 40)))
        y = int(abs((t * 97) % (2 * (H - 40)) - (H - 40)))
        yy, xx = np.mgrid[0:40, 0:40]
        disk = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 <= 400
        frame[y : y + 40, x : x + 40][disk] = (230, 40, 40)
        return frame
    # pan at 12 px/s across a photo 1.5x the frame width
    offset = int((t - 20) * 12)
    return panorama[:, offset : offset + W]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    still_a = fit(rgb(skimage.data.coffee()), W, H)
    still_b = fit(rgb(skimage.data.chelsea()), W, H)
    panorama = fit(rgb(skimage.data.astronaut()), W + 20 * 12 + 1, H)
    with av.open(args.out, "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "23"}
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_at(i, still_a, still_b, panorama)), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    print(f"wrote {args.out}: {SECONDS} s, {FPS} fps, {W}x{H}")


if __name__ == "__main__":
    main()
