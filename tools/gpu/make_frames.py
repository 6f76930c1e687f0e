#!/usr/bin/env python3
"""A directory of numbered PNG frames (frame_0001.png, …) for the video time-to-first-token bench:
`vl3c run --video DIR --frame-rate 1 --fps 1` reads it as a clip of N seconds at 1 fps. Needs
numpy only (PNGs are written with zlib), so it runs on the GPU machine where tools/bench/
make_clip.py's PyAV and scikit-image are not installed.

Three scenes of equal length, like make_clip.py's, so that Differential Frame Pruning has
something to prune and something to keep: a still background with a ball bouncing across it
(most patches unchanged frame to frame), a slow pan over a larger texture (every patch changes),
then another still background with the ball. Deterministic.

    python3 tools/gpu/make_frames.py --out /tmp/frames180 --frames 180
"""

import argparse
import os
import struct
import sys
import zlib

import numpy as np


def png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 1)))
        f.write(chunk(b"IEND", b""))


def texture(h, w, seed):
    """Smooth colored waves plus blocky detail: realistic enough that patches differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            fy, fx, ph = rng.uniform(0.002, 0.03), rng.uniform(0.002, 0.03), rng.uniform(0, 6.3)
            img[..., c] += np.sin(y * fy + x * fx + ph)
    blocks = rng.uniform(-1, 1, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    img += 0.8 * np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:h, :w]
    img -= img.min()
    return (img / img.max() * 255).astype(np.uint8)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=180)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    a = p.parse_args()
    if a.frames < 3:
        sys.exit("error: --frames must be at least 3")
    w, h, n = a.width, a.height, a.frames
    os.makedirs(a.out, exist_ok=True)
    still_a, still_b = texture(h, w, 1), texture(h, w, 2)
    panorama = texture(h, 2 * w, 3)
    ball = max(8, h // 9)
    yy, xx = np.mgrid[0:ball, 0:ball]
    disk = (yy - (ball - 1) / 2) ** 2 + (xx - (ball - 1) / 2) ** 2 <= (ball / 2) ** 2
    third = n / 3
    for i in range(n):
        if third <= i < 2 * third:
            x0 = int((i - third) / third * w)
            frame = panorama[:, x0 : x0 + w].copy()
        else:
            frame = (still_a if i < third else still_b).copy()
            bx = int(abs((i * 47) % (2 * (w - ball)) - (w - ball)))
            by = int(abs((i * 29) % (2 * (h - ball)) - (h - ball)))
            frame[by : by + ball, bx : bx + ball][disk] = (230, 40, 40)
        png(os.path.join(a.out, f"frame_{i + 1:04d}.png"), np.ascontiguousarray(frame))
    print(f"wrote {n} frames {w}x{h} to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
