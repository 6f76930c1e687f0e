#!/usr/bin/env python3
"""What PyAV's libswscale (9.5) makes of random 10-bit 4:2:0 pictures: the fixture of
runtime/src/video/decode/ffmpeg/yuv10.rs, which reproduces that conversion.

Writes tests/fixtures/video_media/swscale10_random.json: 16x8 pictures of uniform random
samples over the whole 10-bit range (super-white and below-black included), one per colour
matrix (unspecified, BT.709, FCC, BT.470BG, SMPTE 240M, BT.2020) and range (limited, full),
each as Y/U/V sample lists and PyAV's `to_ndarray(format="rgb24")`. A frame made here has no
chroma siting, which libswscale takes as centred; decoded clips (make_media_fixtures.py) cover
left and top-left siting.

Run: /work/pyenv/bin/python tools/golden/probe_swscale10.py
"""
import json
import os

import av
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "video_media", "swscale10_random.json")
W, H = 16, 8


def convert(y, u, v, colorspace, color_range):
    f = av.VideoFrame(W, H, "yuv420p10le")
    for plane, samples in zip(f.planes, (y, u, v)):
        stride = plane.line_size // 2
        buf = np.zeros((samples.shape[0], stride), np.uint16)
        buf[:, : samples.shape[1]] = samples
        plane.update(buf.tobytes())
    f.colorspace = colorspace
    f.color_range = color_range
    return f.to_ndarray(format="rgb24")


def main():
    rng = np.random.default_rng(10)
    cases = []
    for colorspace in (2, 1, 4, 5, 7, 9):
        for color_range in (1, 2):
            y = rng.integers(0, 1024, (H, W))
            u = rng.integers(0, 1024, (H // 2, W // 2))
            v = rng.integers(0, 1024, (H // 2, W // 2))
            rgb = convert(y, u, v, colorspace, color_range)
            cases.append({"colorspace": colorspace, "full_range": color_range == 2,
                          "y": y.ravel().tolist(), "u": u.ravel().tolist(), "v": v.ravel().tolist(),
                          "rgb": rgb.ravel().tolist()})
    doc = {"width": W, "height": H, "pyav": av.__version__,
           "libswscale": ".".join(map(str, av.library_versions["libswscale"])), "cases": cases}
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} cases, {os.path.getsize(OUT)} bytes in {OUT}")


if __name__ == "__main__":
    main()
