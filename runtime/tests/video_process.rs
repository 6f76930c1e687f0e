//! Video preprocessing vs transformers' `VideoLlama3VideoProcessor`. Fixtures:
//! tests/fixtures/video_processor, made by tools/golden/make_video_processor_fixtures.py.
//! No Python needed here. Run with `--nocapture` for the per-case summaries.

use std::path::{Path, PathBuf};

use image::RgbImage;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use vl3c_runtime::chat::format_timestamp;
use vl3c_runtime::preprocess::{load_image, normalize_table};
use vl3c_runtime::video::process::{
    preprocess_video, preprocess_videos, sample_frames, sample_indices, timestamps,
    torch_arange_int, FrameSelection, ProcessedVideos, SamplingRequest, VideoFrames,
    VideoProcessError, VideoProcessorConfig,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video_processor")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// An exact f64 written by the fixture script as the hex of its bits; null → None.
fn hex_f64(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    Some(f64::from_bits(
        u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
    ))
}

struct Tensors(Vec<u8>);

impl Tensors {
    fn open(path: &Path) -> Self {
        Self(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }
    fn get(&self, name: &str, dtype: Dtype) -> Option<(Vec<usize>, Vec<u8>)> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).ok()?;
        assert_eq!(t.dtype(), dtype, "{name}");
        Some((t.shape().to_vec(), t.data().to_vec()))
    }
    fn words<const N: usize>(&self, name: &str, dtype: Dtype) -> Vec<[u8; N]> {
        let (_, b) = self
            .get(name, dtype)
            .unwrap_or_else(|| panic!("missing {name}"));
        b.chunks_exact(N).map(|c| c.try_into().unwrap()).collect()
    }
    fn i64(&self, name: &str) -> Vec<i64> {
        self.words::<8>(name, Dtype::I64)
            .into_iter()
            .map(i64::from_le_bytes)
            .collect()
    }
    fn u64(&self, name: &str) -> Vec<u64> {
        self.words::<8>(name, Dtype::U64)
            .into_iter()
            .map(u64::from_le_bytes)
            .collect()
    }
    fn f64(&self, name: &str) -> Vec<f64> {
        self.words::<8>(name, Dtype::F64)
            .into_iter()
            .map(f64::from_le_bytes)
            .collect()
    }
    fn bool(&self, name: &str) -> Vec<bool> {
        self.get(name, Dtype::BOOL)
            .unwrap()
            .1
            .iter()
            .map(|&b| b != 0)
            .collect()
    }
}

/// The pixels back as the fixture's u8 codes; every value must be one of the 256 normalized levels.
fn to_u8_codes(pixels: &[f32]) -> Vec<u8> {
    let table = normalize_table();
    pixels
        .iter()
        .map(|&x| {
            let code = (x * 127.5 + 127.5).round().clamp(0.0, 255.0) as u8;
            assert_eq!(
                table[code as usize].to_bits(),
                x.to_bits(),
                "{x} is not a normalized u8 level"
            );
            code
        })
        .collect()
}

/// Runs one golden case from its files and checks every output against transformers'.
fn run_case(case: &str) -> ProcessedVideos {
    let dir = fixtures().join(case);
    let info = read_json(&dir.join("case.json"));
    let exp = Tensors::open(&dir.join("expected.safetensors"));
    let cfg = VideoProcessorConfig::from_model_dir(&dir).unwrap();
    let call = &info["call"];
    let request = SamplingRequest {
        fps: hex_f64(&info["call_fps_bits"]),
        num_frames: call["num_frames"].as_u64().map(|n| n as usize),
    };
    let mut decoded = Vec::new();
    for (v, video) in info["videos"].as_array().unwrap().iter().enumerate() {
        let frames: Vec<RgbImage> = video["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| load_image(dir.join(f.as_str().unwrap())).unwrap())
            .collect();
        let fps = hex_f64(&video["metadata_fps_bits"]);
        let selection = sample_indices(frames.len(), fps, &cfg, request).unwrap();
        let want: Vec<usize> = exp
            .i64(&format!("frames_indices_{v}"))
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert_eq!(selection.indices, want, "{case}: video {v} frame indices");
        let picked: Vec<RgbImage> = selection
            .indices
            .iter()
            .map(|&i| frames[i].clone())
            .collect();
        decoded.push((picked, selection, fps));
    }
    let videos: Vec<VideoFrames<'_>> = decoded
        .iter()
        .map(|(frames, selection, fps)| VideoFrames {
            frames,
            selection,
            fps: *fps,
        })
        .collect();
    let got = preprocess_videos(&videos, &cfg).unwrap();

    let grid: Vec<[i64; 3]> = exp
        .i64("video_grid_thw")
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    assert_eq!(got.grid_thw, grid, "{case}: video_grid_thw");
    assert_eq!(
        got.merge_sizes,
        exp.i64("video_merge_sizes"),
        "{case}: video_merge_sizes"
    );
    assert_eq!(
        got.compression_mask,
        exp.bool("video_compression_mask"),
        "{case}: video_compression_mask"
    );
    assert_eq!(got.patch_dim, 588);
    let codes = to_u8_codes(&got.pixel_values);
    if let Some((shape, want)) = exp.get("pixels_u8", Dtype::U8) {
        assert_eq!(
            shape,
            vec![got.n_patches(), 588],
            "{case}: pixel_values_videos shape"
        );
        let n_diff = codes.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            n_diff,
            0,
            "{case}: {n_diff} of {} pixel values differ",
            want.len()
        );
    } else {
        let (sums, wsums) = (exp.u64("row_sum"), exp.u64("row_wsum"));
        assert_eq!(sums.len(), got.n_patches(), "{case}: rows");
        for (r, row) in codes.chunks_exact(588).enumerate() {
            let s: u64 = row.iter().map(|&v| v as u64).sum();
            let ws: u64 = row
                .iter()
                .enumerate()
                .map(|(k, &v)| (k as u64 + 1) * v as u64)
                .sum();
            assert_eq!((s, ws), (sums[r], wsums[r]), "{case}: row {r} checksum");
        }
    }
    for (v, video) in info["videos"].as_array().unwrap().iter().enumerate() {
        let ts = &got.timestamps[v];
        let want = exp.f64(&format!("timestamps_{v}"));
        let bits = |x: &[f64]| x.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&ts.seconds),
            bits(&want),
            "{case}: video {v} timestamps"
        );
        assert_eq!(
            ts.fps_assumed,
            video["metadata_fps_bits"].is_null(),
            "{case}: video {v} fps fallback"
        );
        let text: Vec<String> = ts.seconds.iter().map(|&t| format_timestamp(t)).collect();
        let want_text: Vec<String> = video["timestamps_text"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(text, want_text, "{case}: video {v} timestamp text");
    }
    eprintln!(
        "{case}: grid {:?}, {} patches bit-exact, mask {}/{} kept (identical), indices {:?}",
        got.grid_thw,
        got.n_patches(),
        got.compression_mask.iter().filter(|&&k| k).count(),
        got.compression_mask.len(),
        got.timestamps
            .iter()
            .map(|t| &t.indices)
            .collect::<Vec<_>>()
    );
    got
}

#[test]
fn golden_still_block_threshold() {
    let got = run_case("still_block_threshold");
    // the cases the fixture was built for: a repeat keeps token 0, one changed block keeps only
    // itself, ±1 / ±2 level changes straddle the threshold
    let frame = |f: usize| {
        got.compression_mask[f * 12..(f + 1) * 12]
            .iter()
            .enumerate()
            .filter(|(_, &k)| k)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    assert_eq!(frame(1), vec![0]);
    assert_eq!(frame(2), vec![6]);
    assert_eq!(frame(3), vec![0, 4]);
    assert_eq!(frame(5), vec![0]);
}

#[test]
fn golden_num_frames_resize() {
    run_case("num_frames_resize");
}

#[test]
fn golden_fps_min_frames() {
    run_case("fps_min_frames");
}

#[test]
fn golden_default_budget() {
    let got = run_case("default_budget");
    // without the shared budget a 210x280 frame would round to 224x280 (16x20 patches)
    assert_eq!(got.grid_thw, vec![[12, 12, 18]]);
    assert!(got.timestamps[0].fps_assumed);
}

#[test]
fn default_budget_spec_example() {
    // spec §4.2: 30 frames of 224x320 with the class defaults give an 8x12 grid (the max branch
    // fires, so the min of 100352 pixels is not enforced)
    let got = preprocess_video(
        &frames(30, 320, 224),
        &FrameSelection::all(30),
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(got.grid_thw, vec![[30, 8, 12]]);
}

#[test]
fn golden_no_compression() {
    let got = run_case("no_compression");
    assert!(got.compression_mask.iter().all(|&k| k));
}

#[test]
fn golden_multi() {
    let got = run_case("multi");
    assert_eq!(got.tokens_per_video(), vec![36, 6, 24]);
    assert_eq!(got.video_mask(1), Some(&[true; 6][..]), "t == 1: all kept");
    assert_eq!(
        got.video_mask(2).unwrap().iter().filter(|&&k| k).count(),
        13,
        "a repeated frame keeps token 0"
    );
    assert_eq!(got.video_mask(3), None);
}

// ---------------------------------------------------------------- sampling tables

fn sampling_table() -> Value {
    read_json(&fixtures().join("sampling.json"))
}

#[test]
fn arange_matches_torch() {
    let table = sampling_table();
    let rows = table["arange"].as_array().unwrap();
    let mut extra = 0;
    for row in rows {
        let (total, n) = (
            row[0].as_u64().unwrap() as usize,
            row[1].as_u64().unwrap() as usize,
        );
        let want: Vec<i64> = row[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            torch_arange_int(total, n),
            want,
            "torch.arange(0, {total}, {total}/{n}).int()"
        );
        extra += usize::from(want.len() != n);
    }
    eprintln!(
        "torch.arange(0, total, total/n).int(): {} (total, n) pairs identical, {extra} of them with n+1 values",
        rows.len()
    );
    assert!(rows.len() > 1000 && extra > 0);
}

#[test]
fn sample_frames_matches_transformers() {
    let table = sampling_table();
    let cases = table["sample_frames"].as_array().unwrap();
    let (mut ok, mut errors) = (0, 0);
    for c in cases {
        let total = c["total"].as_u64().unwrap() as usize;
        let cfg = VideoProcessorConfig {
            temporal_patch_size: c["temporal_patch_size"].as_u64().unwrap() as usize,
            min_frames: c["min_frames"].as_u64().unwrap() as usize,
            max_frames: c["max_frames"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let (video_fps, fps) = (hex_f64(&c["video_fps_bits"]), hex_f64(&c["fps_bits"]));
        let num_frames = c["num_frames"].as_u64().map(|n| n as usize);
        let got = sample_frames(total, video_fps, fps, num_frames, &cfg);
        let want: Option<Vec<i64>> = c["indices"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_i64().unwrap()).collect());
        match want {
            // transformers' `video[indices]` fails on an index past the end
            Some(w) if w.iter().all(|&i| (i as usize) < total) => {
                let got = got.unwrap_or_else(|e| panic!("{c}: {e}"));
                assert_eq!(
                    got,
                    w.iter().map(|&i| i as usize).collect::<Vec<_>>(),
                    "{c}"
                );
                ok += 1;
            }
            _ => {
                let e = got.expect_err(&c.to_string());
                assert!(matches!(e, VideoProcessError::Sampling(_)), "{c}: {e}");
                errors += 1;
            }
        }
    }
    eprintln!(
        "sample_frames: {ok} cases with identical indices, {errors} failing as in transformers"
    );
    assert!(ok >= 20 && errors >= 8);
}

#[test]
fn timestamps_match_transformers() {
    let table = sampling_table();
    let mut n = 0;
    for c in table["timestamps"].as_array().unwrap() {
        let sel = FrameSelection {
            indices: c["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            sampled: c["sampled"].as_bool().unwrap(),
        };
        let fps = hex_f64(&c["video_fps_bits"]);
        let (seconds, assumed) = timestamps(&sel, fps).unwrap();
        assert_eq!(assumed, fps.is_none());
        for (k, (t, want)) in seconds
            .iter()
            .zip(c["seconds_bits"].as_array().unwrap())
            .enumerate()
        {
            assert_eq!(
                t.to_bits(),
                hex_f64(want).unwrap().to_bits(),
                "{k}: fps {fps:?} sampled {}",
                sel.sampled
            );
            assert_eq!(format_timestamp(*t), c["text"][k].as_str().unwrap());
            n += 1;
        }
    }
    eprintln!("timestamps: {n} values bit-identical, same `:.1f` text");
}

// ---------------------------------------------------------------- sample_indices

#[test]
fn sampling_request_resolution() {
    let cfg = VideoProcessorConfig::default();
    let none = SamplingRequest::default();
    // neither asked nor configured: every frame, unsampled
    assert_eq!(
        sample_indices(5, Some(10.0), &cfg, none).unwrap(),
        FrameSelection::all(5)
    );
    // asking turns sampling on
    let fps2 = SamplingRequest {
        fps: Some(2.0),
        num_frames: None,
    };
    let s = sample_indices(30, Some(10.0), &cfg, fps2).unwrap();
    assert_eq!((s.indices, s.sampled), (vec![0, 5, 10, 15, 20, 25], true));
    let nf = SamplingRequest {
        fps: None,
        num_frames: Some(4),
    };
    assert_eq!(
        sample_indices(10, None, &cfg, nf).unwrap().indices,
        vec![0, 2, 5, 7]
    );
    // the config's defaults, used when it turns sampling on
    let cfg_fps = VideoProcessorConfig {
        fps: Some(2.0),
        do_sample_frames: true,
        ..Default::default()
    };
    assert_eq!(
        sample_indices(20, Some(10.0), &cfg_fps, none)
            .unwrap()
            .indices,
        vec![0, 5, 10, 15]
    );
    // errors
    let both = SamplingRequest {
        fps: Some(1.0),
        num_frames: Some(4),
    };
    let e = sample_indices(10, Some(10.0), &cfg, both).unwrap_err();
    assert!(e.to_string().contains("mutually exclusive"), "{e}");
    let cfg_nf = VideoProcessorConfig {
        num_frames: Some(8),
        ..Default::default()
    };
    // config num_frames + requested fps
    let e = sample_indices(20, Some(10.0), &cfg_nf, fps2).unwrap_err();
    assert!(e.to_string().contains("mutually exclusive"), "{e}");
    let cfg_on = VideoProcessorConfig {
        do_sample_frames: true,
        ..Default::default()
    };
    let e = sample_indices(10, Some(10.0), &cfg_on, none).unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
    let e = sample_indices(10, None, &cfg, fps2).unwrap_err();
    assert!(e.to_string().contains("frame rate"), "{e}");
    let e = sample_indices(
        10,
        None,
        &cfg,
        SamplingRequest {
            fps: None,
            num_frames: Some(11),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
    let e = sample_indices(
        15,
        None,
        &cfg,
        SamplingRequest {
            fps: None,
            num_frames: Some(13),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("IndexError"), "{e}");
    let e = sample_indices(0, Some(10.0), &cfg, fps2).unwrap_err();
    assert!(
        matches!(&e, VideoProcessError::Sampling(m) if m == "the video has no frames"),
        "{e}"
    );
    let e = sample_indices(10, Some(0.0), &cfg, fps2).unwrap_err();
    assert!(
        matches!(&e, VideoProcessError::Input(m) if m.contains("frame rate 0 is not a positive number")),
        "{e}"
    );
    let e = sample_indices(
        10,
        Some(10.0),
        &cfg,
        SamplingRequest {
            fps: Some(f64::NAN),
            num_frames: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&e, VideoProcessError::Sampling(m) if m.contains("fps must be a finite number, got NaN")),
        "{e}"
    );
}

// ---------------------------------------------------------------- preprocessing errors

fn frames(n: usize, w: u32, h: u32) -> Vec<RgbImage> {
    (0..n)
        .map(|k| {
            RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 7 + k as u32) as u8, (y * 5) as u8, 100])
            })
        })
        .collect()
}

#[test]
fn preprocess_errors() {
    let cfg = VideoProcessorConfig::default();
    let msg = |r: Result<ProcessedVideos, VideoProcessError>| r.unwrap_err().to_string();

    let mut mixed = frames(3, 56, 56);
    mixed[2] = RgbImage::new(56, 28);
    let e = msg(preprocess_video(
        &mixed,
        &FrameSelection::all(3),
        None,
        &cfg,
    ));
    assert!(e.contains("frame 2") && e.contains("share a size"), "{e}");

    let e = msg(preprocess_video(&[], &FrameSelection::all(0), None, &cfg));
    assert!(e.contains("no frames"), "{e}");

    let e = msg(preprocess_video(
        &frames(2, 56, 56),
        &FrameSelection::all(3),
        None,
        &cfg,
    ));
    assert!(e.contains("2 frames given for 3"), "{e}");

    assert!(msg(preprocess_videos(&[], &cfg)).contains("no videos"));

    let tps2 = VideoProcessorConfig {
        temporal_patch_size: 2,
        ..Default::default()
    };
    assert!(msg(preprocess_video(
        &frames(2, 56, 56),
        &FrameSelection::all(2),
        None,
        &tps2
    ))
    .contains("temporal_patch_size"));

    let tiny = VideoProcessorConfig {
        max_pixels: 2,
        ..Default::default()
    };
    assert!(msg(preprocess_video(
        &frames(3, 56, 56),
        &FrameSelection::all(3),
        None,
        &tiny
    ))
    .contains("longest_edge"));

    // aspect ratio over 200 is smart_resize's error
    let e = msg(preprocess_video(
        &frames(1, 402, 2),
        &FrameSelection::all(1),
        None,
        &cfg,
    ));
    assert!(e.contains("200"), "{e}");

    let e = msg(preprocess_video(
        &frames(1, 56, 56),
        &FrameSelection::all(1),
        Some(-1.0),
        &cfg,
    ));
    assert!(e.contains("frame rate"), "{e}");

    // in a list, the failing video is named
    let good = frames(2, 56, 56);
    let sel2 = FrameSelection::all(2);
    let sel3 = FrameSelection::all(3);
    let videos = [
        VideoFrames {
            frames: &good,
            selection: &sel2,
            fps: None,
        },
        VideoFrames {
            frames: &mixed,
            selection: &sel3,
            fps: None,
        },
    ];
    assert!(msg(preprocess_videos(&videos, &cfg)).starts_with("invalid video input: video 1:"));
}

#[test]
fn single_frame_and_safetensors() {
    let cfg = VideoProcessorConfig {
        min_pixels: 784,
        max_pixels: 56 * 84,
        ..Default::default()
    };
    let f = frames(1, 84, 56);
    let got = preprocess_video(&f, &FrameSelection::all(1), Some(30.0), &cfg).unwrap();
    assert_eq!(got.grid_thw, vec![[1, 4, 6]]);
    assert_eq!(got.compression_mask, vec![true; 6]);
    assert_eq!(got.timestamps[0].seconds, vec![0.0]);

    let bytes = got.to_safetensors_bytes().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let pv = st.tensor("pixel_values_videos").unwrap();
    assert_eq!((pv.dtype(), pv.shape()), (Dtype::F32, &[24, 588][..]));
    let grid = st.tensor("video_grid_thw").unwrap();
    assert_eq!((grid.dtype(), grid.shape()), (Dtype::I64, &[1, 3][..]));
    let ms = st.tensor("video_merge_sizes").unwrap();
    assert_eq!(
        (ms.dtype(), ms.shape(), ms.data()),
        (Dtype::I64, &[1][..], &2i64.to_le_bytes()[..])
    );
    let mask = st.tensor("video_compression_mask").unwrap();
    assert_eq!(
        (mask.dtype(), mask.shape(), mask.data()),
        (Dtype::BOOL, &[6][..], &[1u8; 6][..])
    );
}

// ---------------------------------------------------------------- config

#[test]
fn config_defaults_and_keys() {
    let d = VideoProcessorConfig::default();
    assert_eq!(
        (d.patch_size, d.merge_size, d.temporal_patch_size),
        (14, 2, 1)
    );
    assert_eq!(
        (d.min_pixels, d.max_pixels, d.min_frames, d.max_frames),
        (100352, 602112, 4, 180)
    );
    assert_eq!(
        (
            d.fps,
            d.num_frames,
            d.do_sample_frames,
            d.use_token_compression
        ),
        (None, None, false, true)
    );

    // examples/tiny's file, as transformers' save_pretrained writes it: the defaults but a
    // smaller `size`, which its 512 positions need
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny");
    let small = VideoProcessorConfig {
        min_pixels: 56 * 56,
        max_pixels: 28 * 28 * 96,
        ..d
    };
    assert_eq!(VideoProcessorConfig::from_model_dir(&tiny).unwrap(), small);

    let c = VideoProcessorConfig::from_json_str(
        r#"{"size": {"shortest_edge": 1, "longest_edge": 2}, "min_pixels": 3136, "max_pixels": 100000,
            "fps": 1, "max_frames": 128, "do_sample_frames": true, "use_token_compression": null}"#,
    )
    .unwrap();
    assert_eq!(
        (c.min_pixels, c.max_pixels, c.fps, c.max_frames),
        (3136, 100000, Some(1.0), 128)
    );
    assert!(
        c.do_sample_frames && !c.use_token_compression,
        "null reads as false, as in transformers"
    );
    // a `size` without a bound is transformers' "must contain 'shortest_edge' and 'longest_edge'"
    let e = VideoProcessorConfig::from_json_str(r#"{"size": {"longest_edge": 1000}}"#).unwrap_err();
    assert!(
        matches!(&e, VideoProcessError::InvalidConfig(m) if m.contains("must contain both `shortest_edge` and `longest_edge`")),
        "{e}"
    );
    assert_eq!(
        VideoProcessorConfig::from_json_str(r#"{"size": {"longest_edge": 1000}, "min_pixels": 5}"#)
            .unwrap()
            .min_pixels,
        5
    );
    for (bad, why) in [
        ("{not json", "not valid JSON"),
        ("[1]", "top level is not a JSON object"),
        (
            r#"{"size": {"shortest_edge": 0, "longest_edge": 10}}"#,
            "`size.shortest_edge` must be positive",
        ),
        (r#"{"patch_size": 0}"#, "`patch_size` must be positive"),
        (
            r#"{"merge_size": -2}"#,
            "`merge_size` must be a non-negative integer, got -2",
        ),
        (
            r#"{"num_frames": 2.5}"#,
            "`num_frames` must be a non-negative integer, got 2.5",
        ),
        (r#"{"fps": "fast"}"#, "`fps` must be a number"),
        (
            r#"{"do_sample_frames": 1}"#,
            "`do_sample_frames` must be true or false, got 1",
        ),
        (r#"{"resample": 2}"#, "`resample` 2 is not supported"),
        (
            r#"{"image_mean": [0.48, 0.45, 0.4]}"#,
            "`image_mean` [0.48,0.45,0.4] is not supported",
        ),
        (
            r#"{"do_normalize": false}"#,
            "`do_normalize: false` is not supported",
        ),
        (
            r#"{"rescale_factor": 1.0}"#,
            "`rescale_factor` 1 is not supported",
        ),
    ] {
        match VideoProcessorConfig::from_json_str(bad) {
            Err(VideoProcessError::InvalidConfig(m)) if m.contains(why) => {}
            other => panic!("{bad}: expected InvalidConfig containing {why:?}, got {other:?}"),
        }
    }
}

#[test]
fn config_file_errors_name_the_file() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("video_process_cfg");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    assert_eq!(
        VideoProcessorConfig::from_model_dir(&tmp).unwrap(),
        VideoProcessorConfig::default()
    );
    std::fs::write(
        tmp.join("video_preprocessor_config.json"),
        r#"{"max_frames": -1}"#,
    )
    .unwrap();
    let e = VideoProcessorConfig::from_model_dir(&tmp)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("video_preprocessor_config.json") && e.contains("max_frames"),
        "{e}"
    );
}
