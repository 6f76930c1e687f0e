//! Image preprocessing vs transformers' `VideoLlama3ImageProcessor`
//! (torchvision backend). Fixtures: tests/fixtures/preprocess, made by
//! tools/golden/make_preprocess_fixtures.py. No Python needed here.
//!
//! Run with `--nocapture` to see the measured |Δpixel_values| per case.

use std::path::{Path, PathBuf};

use image::RgbImage;
use safetensors::SafeTensors;
use vl3c_runtime::preprocess::{
    load_image, normalize_table, preprocess_images, resize_bicubic_antialias_u8, smart_resize,
    ImageProcessorConfig, PreprocessError, ProcessedImages,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/preprocess")
}

struct Tensors {
    bytes: Vec<u8>,
}

impl Tensors {
    fn open(path: &Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn u8(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::U8, "{name}");
        (t.shape().to_vec(), t.data().to_vec())
    }
    fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        let v = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    }
    fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }
}

fn case_inputs(dir: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[derive(Debug)]
struct Stats {
    max_abs: f32,
    mean_abs: f64,
    n_diff: usize,
    n: usize,
}

fn compare(got: &ProcessedImages, exp: &Tensors, case: &str) -> Stats {
    let (gshape, grid) = exp.i64("image_grid_thw");
    let (_, ms) = exp.i64("image_merge_sizes");
    let exp_grid: Vec<[i64; 3]> = grid.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    assert_eq!(gshape[1], 3);
    assert_eq!(got.grid_thw, exp_grid, "{case}: image_grid_thw");
    assert_eq!(got.merge_sizes, ms, "{case}: image_merge_sizes");
    let (pshape, pix) = exp.u8("pixels_u8");
    assert_eq!(got.patch_dim, 588);
    assert_eq!(
        pshape,
        vec![got.n_patches(), 588],
        "{case}: pixel_values shape"
    );
    let table = normalize_table();
    let mut max_abs = 0f32;
    let mut sum = 0f64;
    let mut n_diff = 0;
    for (&g, &e) in got.pixel_values.iter().zip(&pix) {
        let d = (g - table[e as usize]).abs();
        if d > 0.0 {
            n_diff += 1;
        }
        max_abs = max_abs.max(d);
        sum += d as f64;
    }
    Stats {
        max_abs,
        mean_abs: sum / pix.len() as f64,
        n_diff,
        n: pix.len(),
    }
}

/// Compares each image's resized uint8 pixels with transformers' (if stored).
fn compare_resized(
    images: &[RgbImage],
    cfg: &ImageProcessorConfig,
    exp: &Tensors,
    case: &str,
) -> Option<usize> {
    let mut n_diff = None;
    for (i, img) in images.iter().enumerate() {
        let key = format!("resized_u8_{i}");
        if !exp.has(&key) {
            continue;
        }
        let (shape, want) = exp.u8(&key);
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (rh, rw) = smart_resize(h, w, cfg.factor(), cfg.min_pixels, cfg.max_pixels).unwrap();
        assert_eq!(shape, vec![rh, rw, 3], "{case}: resized shape of image {i}");
        let got = resize_bicubic_antialias_u8(img.as_raw(), h, w, rh, rw);
        *n_diff.get_or_insert(0) += got.iter().zip(&want).filter(|(a, b)| a != b).count();
    }
    n_diff
}

/// Runs one golden case from its files; returns the stats.
fn run_case(case: &str) -> (Stats, Option<usize>) {
    let dir = fixtures().join(case);
    let cfg = ImageProcessorConfig::from_model_dir(&dir).unwrap();
    let images: Vec<RgbImage> = case_inputs(&dir)
        .iter()
        .map(|f| load_image(dir.join(f)).unwrap())
        .collect();
    let exp = Tensors::open(&dir.join("expected.safetensors"));
    let got = preprocess_images(&images, &cfg).unwrap();
    let stats = compare(&got, &exp, case);
    let resized_diff = compare_resized(&images, &cfg, &exp, case);
    eprintln!(
        "{case}: cfg {cfg:?} grid {:?}: max |Δ| {:.3e}, mean |Δ| {:.3e}, {} of {} values differ, \
         resized u8 values differing: {}",
        got.grid_thw,
        stats.max_abs,
        stats.mean_abs,
        stats.n_diff,
        stats.n,
        resized_diff.map_or("not stored".to_string(), |n| n.to_string())
    );
    assert!(
        stats.mean_abs <= 0.004,
        "{case}: mean |Δ| {} > 0.004",
        stats.mean_abs
    );
    (stats, resized_diff)
}

fn assert_exact(case: &str) {
    let (s, resized_diff) = run_case(case);
    assert!(
        resized_diff.unwrap_or(0) == 0,
        "{case}: resized uint8 image is not bit-exact"
    );
    assert_eq!(s.max_abs, 0.0, "{case}: pixel_values not bit-exact: {s:?}");
}

#[test]
fn golden_defaults_round() {
    assert_exact("defaults_round");
}

#[test]
fn golden_downscale_longest() {
    assert_exact("downscale_longest");
}

#[test]
fn golden_upscale_shortest() {
    assert_exact("upscale_shortest");
}

#[test]
fn golden_nonsquare_damo() {
    assert_exact("nonsquare_damo");
}

#[test]
fn golden_multi() {
    assert_exact("multi");
}

#[test]
fn golden_rgba() {
    // a file's alpha is dropped as load_image's convert("RGB") does; check the decoded pixels too
    let dir = fixtures().join("rgba");
    let exp = Tensors::open(&dir.join("expected.safetensors"));
    let (shape, decoded) = exp.u8("decoded_u8_0");
    let img = load_image(dir.join("astronaut_rgba.png")).unwrap();
    assert_eq!(shape, vec![img.height() as usize, img.width() as usize, 3]);
    assert_eq!(
        img.as_raw(),
        &decoded,
        "RGBA to RGB differs from Pillow's convert(\"RGB\")"
    );
    assert_exact("rgba");
}

#[test]
fn golden_jpeg() {
    // JPEGs are decoded by libjpeg-turbo, as in Pillow: bit-exact.
    let dir = fixtures().join("jpeg");
    let exp = Tensors::open(&dir.join("expected.safetensors"));
    let (shape, decoded) = exp.u8("decoded_u8_0");
    let img = load_image(dir.join("rocket.jpg")).unwrap();
    assert_eq!(shape, vec![img.height() as usize, img.width() as usize, 3]);
    let dec_diff: Vec<i32> = img
        .as_raw()
        .iter()
        .zip(&decoded)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let n_diff = dec_diff.iter().filter(|&&d| d != 0).count();
    assert_eq!(n_diff, 0, "jpeg decode differs from PIL in {n_diff} values");
    // from PIL's decoded pixels: exact
    let cfg = ImageProcessorConfig::from_model_dir(&dir).unwrap();
    let pil = RgbImage::from_raw(shape[1] as u32, shape[0] as u32, decoded).unwrap();
    let got = preprocess_images(&[pil], &cfg).unwrap();
    let s = compare(&got, &exp, "jpeg (PIL-decoded input)");
    assert_eq!(s.max_abs, 0.0, "jpeg from PIL-decoded pixels: {s:?}");
    // from the file, decoded in Rust
    assert_exact("jpeg");
}

#[test]
fn resize_kernel_bit_exact() {
    let t = Tensors::open(&fixtures().join("resize_kernel.safetensors"));
    let names: Vec<String> = t.st().names().into_iter().map(|s| s.to_string()).collect();
    let mut checked = 0;
    for (src_key, prefix) in [("src", "out_"), ("photo", "photo_")] {
        let (sshape, src) = t.u8(src_key);
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            let (oshape, want) = t.u8(name);
            let got = resize_bicubic_antialias_u8(&src, sshape[0], sshape[1], oshape[0], oshape[1]);
            let nd = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(nd, 0, "{name}: {nd} of {} values differ", want.len());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} resize outputs checked");
}

#[test]
fn resize_same_size_is_copy() {
    let src: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
    assert_eq!(resize_bicubic_antialias_u8(&src, 5, 7, 5, 7), src);
    // constant images stay constant (weights sum to one after rounding)
    let flat = vec![200u8; 9 * 11 * 3];
    for (oh, ow) in [(3, 4), (20, 30), (9, 5), (1, 11)] {
        let out = resize_bicubic_antialias_u8(&flat, 9, 11, oh, ow);
        assert!(out.iter().all(|&v| v == 200), "{oh}x{ow}");
    }
}

// ---------------------------------------------------------------- smart_resize

#[test]
fn smart_resize_matches_python() {
    // expected values from transformers' smart_resize
    type Case = ((usize, usize, usize, usize, usize), (usize, usize));
    let cases: &[Case] = &[
        ((21, 21, 14, 0, 1_000_000_000), (28, 28)), // 1.5 -> 2
        ((35, 35, 14, 0, 1_000_000_000), (28, 28)), // 2.5 -> 2 (banker's)
        ((49, 63, 14, 0, 1_000_000_000), (56, 56)), // 3.5 -> 4, 4.5 -> 4
        ((300, 451, 14, 3136, 1003520), (294, 448)),
        ((512, 512, 14, 3136, 100000), (308, 308)), // max_pixels branch
        ((1080, 1920, 14, 3136, 1003520), (742, 1330)),
        ((1080, 1920, 14, 3136, 3211264), (1078, 1918)),
        ((4000, 3000, 14, 3136, 1003520), (1148, 854)),
        ((200, 600, 14, 3136, 58800), (140, 420)),
        ((40, 61, 14, 40000, 1003520), (168, 252)), // min_pixels branch
        ((20, 20, 14, 3136, 1003520), (56, 56)),
        ((1, 200, 14, 3136, 1003520), (14, 798)), // ratio exactly 200 is allowed
        ((10, 2000, 14, 3136, 1003520), (14, 2002)),
        ((100, 100, 28, 3136, 1003520), (112, 112)),
    ];
    for &((h, w, f, mn, mx), want) in cases {
        assert_eq!(
            smart_resize(h, w, f, mn, mx).unwrap(),
            want,
            "smart_resize({h}, {w}, {f}, {mn}, {mx})"
        );
    }
}

#[test]
fn smart_resize_errors() {
    let e = smart_resize(1, 201, 14, 3136, 1003520).unwrap_err();
    assert!(matches!(e, PreprocessError::AspectRatio { .. }), "{e}");
    assert!(e.to_string().contains("200"), "{e}");
    let e = smart_resize(201, 1, 14, 3136, 1003520).unwrap_err();
    assert!(
        matches!(
            e,
            PreprocessError::AspectRatio {
                height: 201,
                width: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = smart_resize(0, 10, 14, 3136, 1003520).unwrap_err();
    assert!(
        matches!(&e, PreprocessError::InvalidSize(m) if m.contains("zero size (0x10)")),
        "{e}"
    );
    // Python returns (0, 0) here; an empty target is an error in Rust
    let e = smart_resize(7, 7, 14, 0, 1_000_000_000).unwrap_err();
    assert!(
        matches!(&e, PreprocessError::InvalidSize(m) if m.contains("empty target 0x0")),
        "{e}"
    );
}

// ---------------------------------------------------------------- config

#[test]
fn config_styles() {
    let d = ImageProcessorConfig::default();
    assert_eq!(
        (d.patch_size, d.merge_size, d.min_pixels, d.max_pixels),
        (14, 1, 3136, 1003520)
    );

    // transformers 5 `size` dict
    let c = ImageProcessorConfig::from_json_str(
        r#"{"image_processor_type": "VideoLlama3ImageProcessor",
            "size": {"shortest_edge": 3136, "longest_edge": 2508800}, "patch_size": 14, "merge_size": 1}"#,
    )
    .unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (3136, 2508800));

    // legacy min_pixels / max_pixels override size
    let c = ImageProcessorConfig::from_json_str(
        r#"{"size": {"shortest_edge": 1, "longest_edge": 2}, "min_pixels": 40000, "max_pixels": 1000000}"#,
    )
    .unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (40000, 1000000));

    // DAMO: tokens x patch^2
    let c = ImageProcessorConfig::from_json_str(
        r#"{"min_tokens": 16, "max_tokens": 16384, "patch_size": 14, "merge_size": 1}"#,
    )
    .unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (3136, 3211264));

    // missing fields keep the defaults; merge size is read
    let c = ImageProcessorConfig::from_json_str(r#"{"merge_size": 2}"#).unwrap();
    assert_eq!((c.merge_size, c.factor(), c.min_pixels), (2, 28, 3136));

    let config_err = |text: &str| match ImageProcessorConfig::from_json_str(text) {
        Err(PreprocessError::InvalidConfig(msg)) => msg,
        other => panic!("{text}: expected InvalidConfig, got {other:?}"),
    };
    let msg = config_err("{not json");
    assert!(msg.starts_with("not valid JSON"), "{msg}");
    let msg = config_err(r#"{"size": {"shortest_edge": -3}}"#);
    assert!(
        msg.contains("`size.shortest_edge` must be a non-negative integer, got -3"),
        "{msg}"
    );
    let msg = config_err(r#"{"patch_size": 0}"#);
    assert!(
        msg.contains("patch_size (0)") && msg.contains("must be positive"),
        "{msg}"
    );
}

#[test]
fn config_from_model_dir() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("preprocess_cfg");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // no file: defaults
    assert_eq!(
        ImageProcessorConfig::from_model_dir(&tmp).unwrap(),
        ImageProcessorConfig::default()
    );
    // fixture files of the three styles
    let c = ImageProcessorConfig::from_model_dir(&fixtures().join("downscale_longest")).unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (3136, 40000));
    let c = ImageProcessorConfig::from_model_dir(&fixtures().join("upscale_shortest")).unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (40000, 1003520));
    let c = ImageProcessorConfig::from_model_dir(&fixtures().join("nonsquare_damo")).unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (16 * 196, 300 * 196));
    // bad file: error names it
    std::fs::write(tmp.join("preprocessor_config.json"), "[1, 2").unwrap();
    let e = ImageProcessorConfig::from_model_dir(&tmp).unwrap_err();
    assert!(e.to_string().contains("preprocessor_config.json"), "{e}");
}

// ---------------------------------------------------------------- loading

#[test]
fn malformed_images_are_errors() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("preprocess_bad");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let png = std::fs::read(fixtures().join("multi/a_astronaut_small.png")).unwrap();
    let jpg = std::fs::read(fixtures().join("jpeg/rocket.jpg")).unwrap();
    let mut zero_png = Vec::new();
    // a PNG header claiming 0x0 pixels
    {
        zero_png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&0u32.to_be_bytes());
        ihdr.extend_from_slice(&0u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        zero_png.extend_from_slice(&(ihdr.len() as u32).to_be_bytes());
        zero_png.extend_from_slice(b"IHDR");
        zero_png.extend_from_slice(&ihdr);
        zero_png.extend_from_slice(&[0, 0, 0, 0]); // wrong CRC too
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.png", png[..png.len() / 2].to_vec()),
        ("header_only.png", png[..40].to_vec()),
        ("truncated.jpg", jpg[..jpg.len() / 3].to_vec()),
        ("header_only.jpg", jpg[..20].to_vec()),
        ("text.png", b"this is not an image at all".to_vec()),
        ("empty.jpg", Vec::new()),
        ("zero_size.png", zero_png),
        (
            "garbage.bin",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let path = tmp.join(name);
        std::fs::write(&path, &bytes).unwrap();
        match load_image(&path) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(name),
                    "{name}: error does not name the file: {msg}"
                );
            }
            // Pillow refuses every one of them ("image file is truncated" and the like)
            Ok(_) => panic!("{name} decoded"),
        }
    }
    let e = load_image(tmp.join("does_not_exist.png")).unwrap_err();
    assert!(e.to_string().contains("does_not_exist.png"), "{e}");
}

// ---------------------------------------------------------------- outputs

#[test]
fn safetensors_output_and_patch_order() {
    // 28x42 image with pixel value encoding (y, x, c): check the row layout
    let (h, w) = (28usize, 42usize);
    let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([(y * 7 + x) as u8, (x * 3) as u8, (y * 5) as u8])
    });
    // min_pixels 1 so that no resize happens (28x42 is below the default 3136)
    let cfg = ImageProcessorConfig {
        min_pixels: 1,
        ..ImageProcessorConfig::default()
    };
    let out = preprocess_images(&[img.clone(), img.clone()], &cfg).unwrap();
    assert_eq!(out.grid_thw, vec![[1, 2, 3], [1, 2, 3]]);
    assert_eq!(out.merge_sizes, vec![1, 1]);
    assert_eq!(out.n_patches(), 12);
    assert_eq!(out.tokens_per_image(), vec![6, 6]);
    let table = normalize_table();
    // row r = patch (r / 3, r % 3); element (c, ky, kx)
    for r in 0..6 {
        let (py, px) = (r / 3, r % 3);
        for c in 0..3 {
            for ky in 0..14 {
                for kx in 0..14 {
                    let v = img
                        .get_pixel((px * 14 + kx) as u32, (py * 14 + ky) as u32)
                        .0[c];
                    let got = out.pixel_values[(6 + r) * 588 + c * 196 + ky * 14 + kx];
                    assert_eq!(got, table[v as usize]);
                }
            }
        }
    }
    // merge size 2: merge-block-major order
    let cfg2 = ImageProcessorConfig {
        merge_size: 2,
        ..cfg
    };
    let img2 = RgbImage::from_fn(56, 28, |x, y| {
        image::Rgb([(x / 14 + 10 * (y / 14)) as u8, 0, 0])
    });
    let out2 = preprocess_images(&[img2], &cfg2).unwrap();
    assert_eq!(out2.grid_thw, vec![[1, 2, 4]]);
    let firsts: Vec<f32> = (0..8).map(|r| out2.pixel_values[r * 588]).collect();
    let want: Vec<f32> = [0u8, 1, 10, 11, 2, 3, 12, 13]
        .iter()
        .map(|&v| table[v as usize])
        .collect();
    assert_eq!(firsts, want);

    let bytes = out.to_safetensors_bytes().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let pv = st.tensor("pixel_values").unwrap();
    assert_eq!(
        (pv.dtype(), pv.shape()),
        (safetensors::Dtype::F32, &[12usize, 588][..])
    );
    let g = st.tensor("image_grid_thw").unwrap();
    assert_eq!(
        (g.dtype(), g.shape()),
        (safetensors::Dtype::I64, &[2usize, 3][..])
    );
    let m = st.tensor("image_merge_sizes").unwrap();
    assert_eq!(
        (m.dtype(), m.shape()),
        (safetensors::Dtype::I64, &[2usize][..])
    );
    assert_eq!(
        f32::from_le_bytes(pv.data()[4..8].try_into().unwrap()),
        out.pixel_values[1]
    );
}

#[test]
fn normalization_is_transformers_f32() {
    let t = normalize_table();
    assert_eq!(t[0], -1.0);
    assert_eq!(t[255], 1.0);
    // the spec's test value: -0.8588 for x = 18
    assert!((t[18] + 0.8588).abs() < 1e-4);
    for (i, &v) in t.iter().enumerate() {
        assert_eq!(v, (i as f32 - 127.5f32) / 127.5f32);
    }
}
