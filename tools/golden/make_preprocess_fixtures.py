#!/usr/bin/env python3
"""Golden fixtures for vl3c image preprocessing (runtime/src/preprocess).

Writes tests/fixtures/preprocess/<case>/ with
  * the input image file(s) (PNG, or JPEG for the jpeg case),
  * preprocessor_config.json: the processor setting, in one of the three
    config styles that `ImageProcessorConfig::from_model_dir` reads,
  * expected.safetensors:
      pixels_u8         u8  [N, 588]  round(pixel_values * 127.5 + 127.5)
                                       (checked exact below)
      image_grid_thw    i64 [n, 3]
      image_merge_sizes i64 [n]
      resized_u8_<k>    u8  [H', W', 3] transformers' resized uint8 image k
                                       (some cases only; pixels_u8 holds it too)
      decoded_u8_<k>    u8  [H, W, 3]  PIL's decoded RGB input k (jpeg / rgba)
  * case.json: what was done.

Also writes resize_kernel.safetensors: a random 29x41 RGB image resized with
torchvision bicubic+antialias (uint8, CPU) to many sizes (down, up, mixed,
size 1), to test the resize kernel alone.

Transformers is used the way users use it: files are read with
`transformers.image_utils.load_image` (EXIF orientation applied, convert("RGB"),
which drops alpha), then `VideoLlama3ImageProcessor(**cfg)` (torchvision
backend, the default) is called on them with return_tensors="pt". Image files
of every kind (EXIF, modes, formats, bad files) are make_image_fixtures.py's.
This script leaves its files/ directory alone.

Run: /work/pyenv/bin/python tools/golden/make_preprocess_fixtures.py
"""
import json
import os
import shutil
import sys

import numpy as np
import PIL
import PIL.Image
import skimage
import skimage.data
import torch
import torchvision
import torchvision.transforms.v2.functional as tvF
import transformers
from safetensors.numpy import save_file
from transformers import VideoLlama3ImageProcessor
from transformers.image_utils import load_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "preprocess")

VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "pillow": PIL.__version__,
    "scikit-image": skimage.__version__,
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
}


def norm_table() -> np.ndarray:
    """x_f32 = (x_u8 - 127.5) / 127.5 in f32 (what transformers computes)."""
    x = np.arange(256, dtype=np.float32)
    return (x - np.float32(127.5)) / np.float32(127.5)


def capture_resized(proc):
    """Wrap proc.resize to record the resized uint8 batches in call order."""
    captured = []
    orig = proc.resize

    def wrapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        captured.append(out.clone())
        return out

    proc.resize = wrapped
    return captured


def run_case(name, images, cfg, files, note, store_decoded=False, store_resized=False):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    # the processor kwargs: translate the config file style into the kwargs
    # transformers would get from from_pretrained on that json
    kwargs = dict(cfg)
    if "min_tokens" in kwargs or "max_tokens" in kwargs:
        # DAMO's original processor style: tokens * patch^2 pixels
        p = kwargs.get("patch_size", 14)
        kwargs["min_pixels"] = kwargs.pop("min_tokens") * p * p
        kwargs["max_pixels"] = kwargs.pop("max_tokens") * p * p
    proc = VideoLlama3ImageProcessor(**kwargs)
    captured = capture_resized(proc)
    out = proc(images=images, return_tensors="pt")
    pv = out["pixel_values"].numpy()
    grid = out["image_grid_thw"].numpy().astype(np.int64)
    ms = out["image_merge_sizes"].numpy().astype(np.int64)
    assert pv.dtype == np.float32 and pv.ndim == 2 and pv.shape[1] == 588, pv.shape
    u8 = np.round(pv.astype(np.float64) * 127.5 + 127.5)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    # exactness of the u8 representation
    assert np.array_equal(norm_table()[u8], pv), f"{name}: pixels_u8 is not an exact encoding"
    tensors = {
        "pixels_u8": np.ascontiguousarray(u8),
        "image_grid_thw": np.ascontiguousarray(grid),
        "image_merge_sizes": np.ascontiguousarray(ms),
    }
    # resized images: the processor groups by shape; map back to input order
    resized = []
    for b in captured:
        for k in range(b.shape[0]):
            resized.append(b[k])
    # group_images_by_shape keeps images of the same shape together; recover
    # per-image order by matching shapes in order of first occurrence
    shapes = [tuple(np.asarray(im).shape[:2]) for im in images]
    order = []
    seen = []
    for s in shapes:
        if s not in seen:
            seen.append(s)
    for s in seen:
        order += [i for i, t in enumerate(shapes) if t == s]
    per_image = [None] * len(images)
    for slot, i in enumerate(order):
        per_image[i] = resized[slot]
    for i, r in enumerate(per_image):
        g = grid[i]
        assert r.shape[1] == g[1] * 14 and r.shape[2] == g[2] * 14
        if not store_resized:  # pixels_u8 already holds it, patchified
            continue
        tensors[f"resized_u8_{i}"] = np.ascontiguousarray(r.permute(1, 2, 0).numpy())
    if store_decoded:
        for i, im in enumerate(images):
            tensors[f"decoded_u8_{i}"] = np.ascontiguousarray(
                np.asarray(transformers.image_transforms.convert_to_rgb(im, return_numpy=True))
            )
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    info = {
        "case": name,
        "note": note,
        "inputs": files,
        "input_sizes_hw": [list(s) for s in shapes],
        "processor": "transformers.VideoLlama3ImageProcessor (torchvision backend)",
        "constructed_with": kwargs,
        "call": "proc(images=[load_image(f) for f in inputs], return_tensors='pt')",
        "image_grid_thw": grid.tolist(),
        "n_patches": int(pv.shape[0]),
        "pixels_u8": "round(pixel_values*127.5+127.5); pixel_values == (pixels_u8-127.5)/127.5 in f32 exactly",
        "versions": VERSIONS,
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"{name}: inputs {shapes} -> grid {grid.tolist()}, {pv.shape[0]} patches")


def save_png(arr, path):
    PIL.Image.fromarray(arr).save(path, optimize=True)


def main():
    # remove this script's outputs only (files/ is make_image_fixtures.py's)
    os.makedirs(OUT, exist_ok=True)
    for entry in os.listdir(OUT):
        if entry != "files":
            path = os.path.join(OUT, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    torch.set_num_threads(1)

    def case_dir(name):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        return d

    def open_saved(d, fname):
        return load_image(os.path.join(d, fname))

    # 1. class defaults, grid from rounding only: chelsea 300x451 -> 294x448
    d = case_dir("defaults_round")
    save_png(skimage.data.chelsea(), os.path.join(d, "chelsea.png"))
    run_case("defaults_round", [open_saved(d, "chelsea.png")], {}, ["chelsea.png"],
             "class defaults (3136, 1003520); no bound hit; 300x451 -> 294x448 by rounding")

    # 2. downscale forced by a small longest_edge (size dict style)
    d = case_dir("downscale_longest")
    save_png(skimage.data.astronaut()[0:300, 100:400].copy(), os.path.join(d, "astronaut.png"))
    run_case("downscale_longest", [open_saved(d, "astronaut.png")],
             {"size": {"shortest_edge": 3136, "longest_edge": 40000}}, ["astronaut.png"],
             "size.longest_edge=40000 forces a downscale of a 300x300 crop", store_resized=True)

    # 3. upscale forced by a large shortest_edge on a small crop (legacy min/max_pixels style)
    d = case_dir("upscale_shortest")
    save_png(skimage.data.coffee()[150:190, 200:261], os.path.join(d, "coffee_crop.png"))
    run_case("upscale_shortest", [open_saved(d, "coffee_crop.png")],
             {"min_pixels": 40000, "max_pixels": 1003520}, ["coffee_crop.png"],
             "legacy min_pixels=40000 forces an upscale of a 40x61 crop", store_resized=True)

    # 4. non-square, DAMO min_tokens/max_tokens style, downscale in both dims unevenly
    d = case_dir("nonsquare_damo")
    save_png(skimage.data.coffee()[100:300, :].copy(), os.path.join(d, "coffee.png"))
    run_case("nonsquare_damo", [open_saved(d, "coffee.png")],
             {"min_tokens": 16, "max_tokens": 300, "patch_size": 14}, ["coffee.png"],
             "DAMO style min_tokens=16 max_tokens=300 (x196 pixels); 200x600 coffee crop")

    # 5. JPEG input (decoder differences between PIL/libjpeg and the Rust decoder are measured)
    d = case_dir("jpeg")
    PIL.Image.fromarray(skimage.data.rocket()[100:327, 150:470]).save(
        os.path.join(d, "rocket.jpg"), quality=90)
    run_case("jpeg", [open_saved(d, "rocket.jpg")],
             {"size": {"shortest_edge": 3136, "longest_edge": 50000}}, ["rocket.jpg"],
             "JPEG (q90, 4:2:0) crop of skimage rocket 227x320; longest_edge 50000",
             store_decoded=True)

    # 6. several images of different sizes in one call (two share a shape)
    d = case_dir("multi")
    save_png(skimage.data.astronaut()[::4, ::4].copy(), os.path.join(d, "a_astronaut_small.png"))
    save_png(skimage.data.chelsea()[50:150, 100:300].copy(), os.path.join(d, "b_chelsea_crop.png"))
    save_png(skimage.data.coffee()[0:100, 0:200].copy(), os.path.join(d, "c_coffee_crop.png"))
    save_png(skimage.data.coffee()[200:330, 300:397].copy(), os.path.join(d, "d_coffee_crop2.png"))
    files = ["a_astronaut_small.png", "b_chelsea_crop.png", "c_coffee_crop.png", "d_coffee_crop2.png"]
    run_case("multi", [open_saved(d, f) for f in files],
             {"size": {"shortest_edge": 3136, "longest_edge": 1003520}, "patch_size": 14, "merge_size": 1},
             files, "4 images in one call; b and c share the shape 100x200 (grouped by torch)",
             store_resized=True)

    # 7. RGBA PNG: load_image's convert("RGB") drops the alpha (the processor's
    #    convert_to_rgb, which would composite onto white, then sees an RGB image)
    d = case_dir("rgba")
    rgb = skimage.data.astronaut()[100:220, 150:300]
    h, w = rgb.shape[:2]
    alpha = (np.add.outer(np.arange(h) * 255 // (h - 1), np.arange(w) * 0)).astype(np.uint8)
    alpha[:10, :] = 0
    rgba = np.dstack([rgb, alpha])
    PIL.Image.fromarray(rgba, "RGBA").save(os.path.join(d, "astronaut_rgba.png"))
    run_case("rgba", [open_saved(d, "astronaut_rgba.png")], {}, ["astronaut_rgba.png"],
             "RGBA PNG file: load_image drops the alpha (no compositing)", store_decoded=True)

    # resize kernel fixture
    rng = np.random.default_rng(1234)
    src = rng.integers(0, 256, size=(29, 41, 3), dtype=np.uint8)
    # (1, 1) is left out: torch's AVX uint8 kernel asserts on it
    # make it partly smooth, partly with hard edges (0/255) for clamping
    src[:, 20:] = np.clip(src[:, 20:].astype(int) // 4 + np.arange(21)[None, :, None] * 10, 0, 255).astype(np.uint8)
    src[10:14, :, :] = 255
    src[14:16, :, :] = 0
    sizes = [(1, 41), (29, 1), (7, 9), (14, 14), (15, 20), (28, 40), (29, 40), (28, 41),
             (30, 42), (58, 82), (100, 33), (5, 123), (29, 41 * 3 + 1), (87, 10), (2, 3)]
    # plus seeded random sizes (up, down, mixed)
    for _ in range(30):
        oh, ow = (int(v) for v in rng.integers(1, 91, size=2))
        if (oh, ow) != (1, 1) and (oh, ow) not in sizes:
            sizes.append((oh, ow))
    t = torch.from_numpy(src).permute(2, 0, 1).contiguous()
    tensors = {"src": src}
    meta = []
    for (oh, ow) in sizes:
        r = tvF.resize(t, [oh, ow], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        assert r.dtype == torch.uint8
        tensors[f"out_{oh}x{ow}"] = np.ascontiguousarray(r.permute(1, 2, 0).numpy())
        meta.append([oh, ow])
    # one real photo downscale/upscale of larger size
    cam = skimage.data.chelsea()[:120, :160].copy()
    tensors["photo"] = cam
    tp = torch.from_numpy(cam).permute(2, 0, 1).contiguous()
    for (oh, ow) in [(37, 53), (240, 300), (119, 161), (60, 200), (12, 16), (5, 7), (3, 100), (121, 9)]:
        r = tvF.resize(tp, [oh, ow], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        tensors[f"photo_{oh}x{ow}"] = np.ascontiguousarray(r.permute(1, 2, 0).numpy())
    save_file(tensors, os.path.join(OUT, "resize_kernel.safetensors"))
    with open(os.path.join(OUT, "resize_kernel.json"), "w") as f:
        json.dump({
            "what": "tvF.resize(uint8 CHW tensor, [oh, ow], BICUBIC, antialias=True) on CPU; stored HWC",
            "src": "random 29x41x3 (seed 1234) with saturated rows 10..16; key src",
            "sizes": meta,
            "photo": "skimage chelsea[:120,:160]; outputs photo_<oh>x<ow>",
            "versions": VERSIONS,
        }, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"fixture dir size: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
