#!/usr/bin/env python3
"""Golden fixtures for image files as users have them (runtime/src/preprocess/load.rs).

transformers reads an image file with `transformers.image_utils.load_image`:
`PIL.Image.open`, `PIL.ImageOps.exif_transpose`, `convert("RGB")`. This script
writes files of every kind that path meets and what it gives for them into
tests/fixtures/preprocess/files/:

  * the input files (small crops of scikit-image photos),
  * expected.safetensors:
      decoded_<case>  u8  [H, W, 3]  the RGB pixels the processor resizes:
                                     convert_to_rgb(load_image(file)), which differs
                                     from load_image's only for a colour-key
                                     transparency (p_trns, l_trns, rgb_trns, gif_trns)
      pixels_<case>   u8  [N, 588]   round(pixel_values * 127.5 + 127.5) of
                                     VideoLlama3ImageProcessor()(images=[load_image(file)])
                                     (an exact encoding, checked below)
      grid_<case>     i64 [1, 3]     image_grid_thw
    (the larger "phone" cases store sha256 hashes in case.json instead, to keep
    the fixtures small),
  * case.json: per case the file, what it is, and `error` for files that
    load_image refuses (the message Pillow gives); `torchvision` says whether
    transformers' other loader (`load_image_as_tensor`, torchvision.io.decode_image,
    used by the torchvision processor's fetch_images for path strings) agrees.

Run: /work/pyenv/bin/python tools/golden/make_image_fixtures.py
"""
import hashlib
import io
import json
import os
import shutil
import sys

import numpy as np
import PIL
import PIL.Image
import PIL.features
import skimage
import skimage.data
import torch
import torchvision
import torchvision.io as tio
import transformers
from safetensors.numpy import save_file
from transformers import VideoLlama3ImageProcessor
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import load_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "preprocess", "files")

VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "pillow": PIL.__version__,
    "libjpeg-turbo (Pillow)": PIL.features.version("jpg"),
    "libwebp (Pillow)": PIL.features.version("webp"),
    "scikit-image": skimage.__version__,
}


def norm_table():
    x = np.arange(256, dtype=np.float32)
    return (x - np.float32(127.5)) / np.float32(127.5)


def exif_with_orientation(k):
    ex = PIL.Image.Exif()
    ex[0x0112] = k
    return ex.tobytes()


def xmp_with_orientation(k):
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{k}"/></rdf:RDF>'
        '</x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def torchvision_agreement(path, want):
    """transformers' load_image_as_tensor path (torchcodec is not installed)."""
    try:
        t = tio.decode_image(path, mode=tio.ImageReadMode.RGB, apply_exif_orientation=True)
    except Exception as e:  # noqa: BLE001 - record what it says
        return f"error: {str(e).splitlines()[0][:120]}"
    got = t.permute(1, 2, 0).numpy()
    if t.dtype != torch.uint8:
        return f"returns {t.dtype}, not uint8"
    if got.shape != want.shape:
        return f"shape {list(got.shape)} != {list(want.shape)}"
    d = np.abs(got.astype(int) - want.astype(int))
    return "identical" if d.max() == 0 else f"max |du8| {d.max()}, mean {d.mean():.4f}"


class Writer:
    def __init__(self):
        self.tensors = {}
        self.cases = []
        self.proc = VideoLlama3ImageProcessor()

    def ok(self, name, fname, note, store="full"):
        path = os.path.join(OUT, fname)
        img = load_image(path)
        dec = convert_to_rgb(img, return_numpy=True)
        out = self.proc(images=[img], return_tensors="pt")
        pv = out["pixel_values"].numpy()
        grid = out["image_grid_thw"].numpy().astype(np.int64)
        u8 = np.round(pv.astype(np.float64) * 127.5 + 127.5).astype(np.uint8)
        assert np.array_equal(norm_table()[u8], pv), f"{name}: pixels_u8 is not exact"
        case = {
            "case": name,
            "file": fname,
            "note": note,
            "mode_opened": PIL.Image.open(path).mode,
            "decoded_hw": list(dec.shape[:2]),
            "grid": grid[0].tolist(),
            "torchvision": torchvision_agreement(path, dec),
        }
        if store == "full":
            self.tensors[f"decoded_{name}"] = np.ascontiguousarray(dec)
            self.tensors[f"pixels_{name}"] = np.ascontiguousarray(u8)
            self.tensors[f"grid_{name}"] = np.ascontiguousarray(grid)
        else:
            case["decoded_sha256"] = hashlib.sha256(np.ascontiguousarray(dec).tobytes()).hexdigest()
            case["pixels_sha256"] = hashlib.sha256(np.ascontiguousarray(u8).tobytes()).hexdigest()
        self.cases.append(case)
        print(f"{name}: {case['mode_opened']} {dec.shape} grid {case['grid']} tv: {case['torchvision']}")

    def error(self, name, fname, note, data):
        path = os.path.join(OUT, fname)
        with open(path, "wb") as f:
            f.write(data)
        try:
            load_image(path)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
        else:
            raise AssertionError(f"{name}: load_image accepted it")
        self.cases.append({"case": name, "file": fname, "note": note, "error": msg})
        print(f"{name}: error {msg}")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.set_num_threads(1)
    w = Writer()
    p = lambda f: os.path.join(OUT, f)  # noqa: E731
    # non-square so every orientation gives a different array
    astro = skimage.data.astronaut()[60:108, 180:244].copy()  # 48x64
    coffee = skimage.data.coffee()[150:198, 250:314].copy()
    chelsea = skimage.data.chelsea()[80:117, 150:203].copy()  # 37x53, odd for chroma edges

    # 1. EXIF orientation, all 8, on JPEG (phones write JPEG)
    for k in range(1, 9):
        PIL.Image.fromarray(astro).save(p(f"exif_{k}.jpg"), quality=90, exif=exif_with_orientation(k))
        w.ok(f"exif_{k}", f"exif_{k}.jpg", f"JPEG q90 4:2:0 with EXIF Orientation={k}")
    PIL.Image.fromarray(coffee).save(p("xmp_6.jpg"), quality=90, xmp=xmp_with_orientation(6))
    w.ok("xmp_6", "xmp_6.jpg", "JPEG with no EXIF and XMP tiff:Orientation=6 (Pillow's getexif falls back to it)")
    PIL.Image.fromarray(coffee).save(p("exif_6.png"), exif=exif_with_orientation(6))
    w.ok("exif_png_6", "exif_6.png", "PNG with an eXIf chunk, Orientation=6")
    PIL.Image.fromarray(coffee).save(p("exif_8.webp"), lossless=True, exif=exif_with_orientation(8))
    w.ok("exif_webp_8", "exif_8.webp", "lossless WebP with an EXIF chunk, Orientation=8")
    PIL.Image.fromarray(coffee).save(p("exif_3.tiff"), tiffinfo={274: 3})
    w.ok("exif_tiff_3", "exif_3.tiff", "TIFF with its own Orientation tag = 3")

    # 2. modes: convert("RGB") drops alpha, replicates gray, clips I;16, maps CMYK
    h, wd = astro.shape[:2]
    alpha = (np.add.outer(np.arange(h) * 5, np.arange(wd) * 3) % 256).astype(np.uint8)
    alpha[:6] = 0
    PIL.Image.fromarray(np.dstack([astro, alpha]), "RGBA").save(p("rgba.png"))
    w.ok("rgba", "rgba.png", "RGBA PNG, alpha 0..255 incl. fully transparent rows: alpha dropped, no compositing")
    gray = np.asarray(PIL.Image.fromarray(astro).convert("L"))
    PIL.Image.fromarray(np.dstack([gray, alpha]), "LA").save(p("la.png"))
    w.ok("la", "la.png", "LA PNG (gray + alpha)")
    PIL.Image.fromarray(gray, "L").save(p("l.png"))
    w.ok("l", "l.png", "8-bit grayscale PNG")
    PIL.Image.fromarray(gray, "L").convert("1").save(p("one_bit.png"))
    w.ok("one_bit", "one_bit.png", "1-bit PNG (mode 1)")
    pal = PIL.Image.fromarray(astro).quantize(64)
    pal.info["transparency"] = 3
    pal.save(p("p_trns.png"), transparency=3)
    w.ok("p_trns", "p_trns.png", "palette PNG with a transparent index: the palette colour is kept")
    key = tuple(int(v) for v in astro[10, 10])
    PIL.Image.fromarray(astro).save(p("rgb_trns.png"), transparency=key)
    w.ok("rgb_trns", "rgb_trns.png", "RGB PNG with a tRNS colour key: the processor whitens that colour")
    PIL.Image.fromarray(gray, "L").save(p("l_trns.png"), transparency=int(gray[20, 20]))
    w.ok("l_trns", "l_trns.png", "gray PNG with a tRNS key: the processor whitens that gray")
    pal2 = PIL.Image.fromarray(astro).quantize(64)
    pal2.save(p("p_alpha.png"), transparency=bytes([0, 128] + [255] * 62))
    w.ok("p_alpha", "p_alpha.png", "palette PNG with per-index alpha (tRNS bytes): dropped, nothing whitened")
    l16 = (gray.astype(np.uint16) * 3 + np.arange(wd, dtype=np.uint16)[None, :] * 7)  # 0..~1200: half clip
    PIL.Image.fromarray(l16).save(p("l16.png"))
    w.ok("l16", "l16.png", "16-bit grayscale PNG (mode I;16): convert clips at 255, does not scale")
    PIL.Image.fromarray(gray, "L").save(p("gray.jpg"), quality=90)
    w.ok("gray_jpeg", "gray.jpg", "grayscale JPEG")
    PIL.Image.fromarray(astro).convert("CMYK").save(p("cmyk.jpg"), quality=90)
    w.ok("cmyk_jpeg", "cmyk.jpg", "CMYK JPEG (Adobe, inverted): Pillow's cmyk2rgb")
    rng = np.random.default_rng(7)
    for nm, ch in [("rgb16", 3), ("rgba16", 4), ("la16", 2)]:
        arr = (astro[..., :1].astype(np.uint16) * 257 + rng.integers(0, 257, (h, wd, 1))).astype(np.uint16)
        arr = np.repeat(arr, ch, axis=2)
        arr[..., 0] = arr[..., 0] // 2 + 1000
        write_png16(p(f"{nm}.png"), arr)
        w.ok(nm, f"{nm}.png", f"16-bit PNG, {ch} channels: the high byte of each sample")

    # 3. other formats
    PIL.Image.fromarray(coffee).save(p("lossy.webp"), quality=80)
    w.ok("webp_lossy", "lossy.webp", "lossy WebP q80")
    PIL.Image.fromarray(coffee).save(p("lossless.webp"), lossless=True)
    w.ok("webp_lossless", "lossless.webp", "lossless WebP")
    PIL.Image.fromarray(np.dstack([coffee, alpha]), "RGBA").save(p("alpha.webp"), quality=85)
    w.ok("webp_alpha", "alpha.webp", "lossy WebP with alpha")
    PIL.Image.fromarray(coffee).save(p("rgb24.bmp"))
    w.ok("bmp24", "rgb24.bmp", "24-bit BMP")
    PIL.Image.fromarray(coffee).quantize(200).save(p("pal8.bmp"))
    w.ok("bmp8", "pal8.bmp", "8-bit palette BMP")
    PIL.Image.fromarray(coffee).save(p("lzw.tiff"), compression="tiff_lzw")
    w.ok("tiff_lzw", "lzw.tiff", "RGB TIFF, LZW")
    PIL.Image.fromarray(np.dstack([coffee, alpha]), "RGBA").save(p("rgba.tiff"), compression="tiff_adobe_deflate")
    w.ok("tiff_rgba", "rgba.tiff", "RGBA TIFF, deflate")
    PIL.Image.fromarray(coffee).quantize(64).save(p("trns.gif"), transparency=3)
    w.ok("gif_trns", "trns.gif", "one-frame GIF with a transparent index: the palette colour is kept")
    PIL.Image.fromarray(astro).save(p("no_iend.png"))
    with open(p("no_iend.png"), "rb") as f:
        data = f.read()
    with open(p("no_iend.png"), "wb") as f:
        f.write(data[:-12])
    w.ok("png_no_iend", "no_iend.png", "PNG without its IEND chunk: Pillow reads it")

    # 4. JPEG flavours (libjpeg-turbo: ISLOW IDCT, fancy upsampling)
    for nm, kw in [("jpeg_420_odd", dict(quality=85)), ("jpeg_422", dict(quality=90, subsampling=1)),
                   ("jpeg_444", dict(quality=92, subsampling=0)), ("jpeg_progressive", dict(quality=85, progressive=True)),
                   ("jpeg_q50", dict(quality=50))]:
        PIL.Image.fromarray(chelsea).save(p(f"{nm}.jpg"), **kw)
        w.ok(nm, f"{nm}.jpg", f"37x53 JPEG {kw}")
    # phone-like: 4:3 photos at a few sizes, hashes only
    retina = PIL.Image.fromarray(skimage.data.retina())
    retina.resize((1008, 756), PIL.Image.LANCZOS).save(
        p("phone_420_exif6.jpg"), quality=80, exif=exif_with_orientation(6))
    w.ok("phone_420_exif6", "phone_420_exif6.jpg", "1008x756 q80 4:2:0 JPEG, EXIF 6", store="hash")
    PIL.Image.fromarray(skimage.data.rocket()[:, :601]).save(
        p("phone_prog_422.jpg"), quality=85, progressive=True, subsampling=1)
    w.ok("phone_prog_422", "phone_prog_422.jpg", "601x427 progressive 4:2:2 q85 JPEG", store="hash")

    # 5. files load_image refuses
    jpg = open(p("jpeg_420_odd.jpg"), "rb").read()
    png = open(p("l.png"), "rb").read()
    w.error("truncated_jpeg", "truncated.jpg", "first half of a JPEG", jpg[: len(jpg) // 2])
    w.error("jpeg_no_eoi", "no_eoi.jpg", "a JPEG without its EOI marker (last 2 bytes)", jpg[:-2])
    w.error("truncated_png", "truncated.png", "first half of a PNG", png[: len(png) // 2])

    save_file(w.tensors, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump({"loader": "transformers.image_utils.load_image", "processor":
                   "VideoLlama3ImageProcessor() defaults, torchvision backend", "versions": VERSIONS,
                   "cases": w.cases}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, fn)) for fn in os.listdir(OUT))
    print(f"{len(w.cases)} cases, {total / 1e6:.2f} MB")


def write_png16(path, arr):
    """A 16-bit PNG (Pillow cannot write 16-bit RGB/RGBA/LA PNGs)."""
    import struct
    import zlib
    h, wd, ch = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", wd, h, 16, color_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    sys.exit(main())
