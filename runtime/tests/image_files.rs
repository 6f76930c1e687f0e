//! Image files as users have them vs transformers' `load_image` (EXIF
//! orientation, Pillow's `convert("RGB")`, JPEG by libjpeg-turbo) followed by
//! `VideoLlama3ImageProcessor` with its defaults. Fixtures:
//! tests/fixtures/preprocess/files, made by tools/golden/make_image_fixtures.py.
//! No Python needed here.
//!
//! Run with `--nocapture` for the table of measured differences per case.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use vl3c_runtime::preprocess::{
    decode_image_bytes, load_image, normalize_table, preprocess_images, ImageProcessorConfig,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/preprocess/files")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir().join("case.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// Pixel_values back to the fixture's exact u8 encoding.
fn to_u8(pixel_values: &[f32]) -> Vec<u8> {
    let table = normalize_table();
    pixel_values
        .iter()
        .map(|&v| {
            let u = (v as f64 * 127.5 + 127.5).round() as u8;
            assert_eq!(table[u as usize], v, "pixel value {v} is not an encoded u8");
            u
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// max and mean |Δ| in pixel_values units ((u8 - 127.5) / 127.5).
fn delta(got: &[u8], want: &[u8]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let d: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).abs() / 127.5)
        .collect();
    let max = d.iter().cloned().fold(0.0, f64::max);
    (max, d.iter().sum::<f64>() / d.len().max(1) as f64)
}

/// Every file transformers reads gives the same pixels here: decoded image
/// and pixel_values bit-exact (libjpeg-turbo for JPEG, Pillow's mode rules;
/// `image-webp` gives libwebp's pixels, lossy WebP included). The table's
/// |Δ| columns are printed so a future decoder change shows its size.
#[test]
fn files_match_load_image() {
    let exp_bytes = std::fs::read(dir().join("expected.safetensors")).unwrap();
    let exp = SafeTensors::deserialize(&exp_bytes).unwrap();
    let cfg = ImageProcessorConfig::default();
    let mut checked = 0;
    eprintln!(
        "{:18} {:>9} {:>22} {:>22}",
        "case", "size", "decoded max/mean |Δ|", "pixel_values max/mean"
    );
    for case in cases().iter().filter(|c| c.get("error").is_none()) {
        let name = case["case"].as_str().unwrap();
        let file = dir().join(case["file"].as_str().unwrap());
        let img = load_image(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let hw = [img.height() as usize, img.width() as usize];
        assert_eq!(
            serde_json::json!(hw),
            case["decoded_hw"],
            "{name}: decoded size (orientation?)"
        );
        let out = preprocess_images(std::slice::from_ref(&img), &cfg).unwrap();
        assert_eq!(
            serde_json::json!(out.grid_thw[0]),
            case["grid"],
            "{name}: image_grid_thw"
        );
        let pixels = to_u8(&out.pixel_values);
        let (dec, pix) = if let Some(hash) = case.get("decoded_sha256") {
            assert_eq!(sha256_hex(img.as_raw()), *hash, "{name}: decoded pixels");
            assert_eq!(
                sha256_hex(&pixels),
                case["pixels_sha256"],
                "{name}: pixel_values"
            );
            ((0.0, 0.0), (0.0, 0.0))
        } else {
            let want_dec = exp.tensor(&format!("decoded_{name}")).unwrap();
            assert_eq!(want_dec.shape(), &[hw[0], hw[1], 3], "{name}");
            let want_pix = exp.tensor(&format!("pixels_{name}")).unwrap();
            assert_eq!(want_pix.shape(), &[out.n_patches(), 588], "{name}");
            (
                delta(img.as_raw(), want_dec.data()),
                delta(&pixels, want_pix.data()),
            )
        };
        eprintln!(
            "{name:18} {:>4}x{:<4} {:>10.4} {:>10.6} {:>10.4} {:>10.6}",
            hw[0], hw[1], dec.0, dec.1, pix.0, pix.1
        );
        assert_eq!(
            dec.0, 0.0,
            "{name}: decoded pixels differ from load_image's"
        );
        assert_eq!(pix.0, 0.0, "{name}: pixel_values differ from transformers'");
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} cases checked");
}

/// Files Pillow refuses are errors here too: one line, naming the file.
#[test]
fn bad_files_are_one_line_errors() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.get("error").is_some()) {
        let file = case["file"].as_str().unwrap();
        let e = load_image(dir().join(file)).expect_err(file);
        let msg = e.to_string();
        assert!(msg.contains(file), "{file}: error does not name it: {msg}");
        assert!(!msg.contains('\n'), "{file}: not one line: {msg}");
        assert!(msg.contains("truncated"), "{file}: {msg}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

/// A small PNG claiming `w`×`h` pixels: IHDR, a few bytes of IDAT, IEND.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (&b"IHDR"[..], &ihdr[..]),
        (b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1][..]),
        (b"IEND", &[][..]),
    ] {
        let body = [kind, data].concat();
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A JPEG whose SOF claims `w`×`h`, taken from a real file.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = std::fs::read(dir().join("jpeg_444.jpg")).unwrap();
    let sof = jpg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("baseline SOF0");
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

/// Pillow's decompression-bomb rule (more than 2·MAX_IMAGE_PIXELS =
/// 178956970 pixels is an error) is checked on the header, before decoding.
/// (A size at the limit would be decoded, allocating 537 MB: not tried here.)
#[test]
fn huge_headers_are_refused_before_decoding() {
    for (name, bytes) in [
        ("bomb.png", png_claiming(60000, 60000)),
        ("bomb.jpg", jpeg_claiming(60000, 60000)),
        ("bomb_just_over.png", png_claiming(17896, 10000)),
    ] {
        let e = decode_image_bytes(&bytes, Path::new(name)).expect_err(name);
        let msg = e.to_string();
        assert!(
            msg.contains(name) && msg.contains("exceeds the limit of 178956970 pixels"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn unsupported_formats_say_what_they_are() {
    let mut avif = vec![0, 0, 0, 0x1c];
    avif.extend_from_slice(b"ftypavif\0\0\0\0avifmif1miaf");
    avif.resize(200, 0);
    let e = decode_image_bytes(&avif, Path::new("photo.avif")).unwrap_err();
    assert!(
        e.to_string().contains("photo.avif")
            && e.to_string().contains("AVIF images are not supported yet"),
        "{e}"
    );
    let mut heic = vec![0, 0, 0, 0x18];
    heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    heic.resize(200, 0);
    let e = decode_image_bytes(&heic, Path::new("photo.heic")).unwrap_err();
    assert!(
        e.to_string()
            .contains("HEIF/HEIC images are not supported yet"),
        "{e}"
    );
    let e = decode_image_bytes(b"P6\n2 2\n255\n", Path::new("x.ppm")).unwrap_err();
    assert!(
        e.to_string().contains("not supported yet") || e.to_string().contains("not a recognised"),
        "{e}"
    );
}
