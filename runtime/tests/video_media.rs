//! Real media through FFmpeg against what transformers' PyAV loader gives
//! (tests/fixtures/video_media, made by tools/golden/make_media_fixtures.py): every frame of
//! every clip identical to PyAV's rgb24, the container's frame count, rate, times and rotation,
//! the processor's outputs within the bar, rotation and presentation-time labels, and
//! one-line errors for broken files. No Python needed. `--nocapture` prints the table.
#![cfg(feature = "ffmpeg")]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vl3c_runtime::video::decode::{open_video, VideoReader};
use vl3c_runtime::video::process::{preprocess_video, sample_indices, SamplingRequest};
use vl3c_runtime::video::{
    load_video, RotationMode, TimestampMode, VideoProcessorConfig, VideoRequest,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video_media")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(dir().join("case.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn clips() -> Vec<(String, Value)> {
    let c = cases();
    c["clips"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cfg() -> VideoProcessorConfig {
    VideoProcessorConfig::from_model_dir(&dir()).unwrap()
}

fn request(num_frames: usize) -> VideoRequest {
    VideoRequest {
        num_frames: Some(num_frames),
        ..Default::default()
    }
}

fn read_all(v: &mut dyn VideoReader) -> Vec<image::RgbImage> {
    let idx: Vec<usize> = (0..v.metadata().total_frames).collect();
    v.read_frames(&idx, &mut |_, _| {}).unwrap()
}

#[test]
fn every_frame_equals_pyav() {
    let mut failures = Vec::new();
    eprintln!("clip                          frames  fps     rot  identical frames");
    for (name, case) in clips() {
        let pyav = &case["pyav"];
        let path = dir().join(case["file"].as_str().unwrap());
        let mut v = open_video(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = v.metadata().clone();
        // Where PyAV reports no frame count, vl3c counts them: as many as PyAV decodes.
        let declared = pyav["total_frames"].as_u64().unwrap() as usize;
        let decoded = pyav["decoded_frames"].as_u64().unwrap() as usize;
        let expected_total = if declared > 0 { declared } else { decoded };
        assert_eq!(m.total_frames, expected_total, "{name}: frame count");
        assert_eq!(
            (m.width as u64, m.height as u64),
            (
                pyav["width"].as_u64().unwrap(),
                pyav["height"].as_u64().unwrap()
            ),
            "{name}: size"
        );
        let fps = pyav["fps"].as_f64().unwrap();
        assert!(
            (m.fps.unwrap() - fps).abs() <= 1e-9 * fps,
            "{name}: fps {:?}, PyAV {fps}",
            m.fps
        );
        assert_eq!(
            u64::from(m.rotation.degrees()),
            pyav["rotation"].as_i64().unwrap_or(0).rem_euclid(360) as u64,
            "{name}: rotation"
        );
        let frames = read_all(v.as_mut());
        let hashes = strings(&pyav["frame_sha256"]);
        assert_eq!(frames.len(), hashes.len(), "{name}");
        let same = frames
            .iter()
            .zip(&hashes)
            .filter(|(f, h)| sha256_hex(f.as_raw()) == **h)
            .count();
        eprintln!(
            "{name:29} {:6}  {:6.3}  {:3}  {same}/{}",
            m.total_frames,
            m.fps.unwrap(),
            m.rotation.degrees(),
            hashes.len()
        );
        if same != hashes.len() {
            failures.push(format!("{name}: {same}/{} frames identical", hashes.len()));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Frame times from the packets, without decoding, are PyAV's decoded frames' times from the
/// first frame on. (Absolute times can differ by a constant where packets carry only a dts:
/// AVI's first frame is at 0 s by its packets, 0.1 s by PyAV's B-frame-delayed decoder.)
#[test]
fn frame_times_are_pyavs() {
    for (name, case) in clips() {
        let path = dir().join(case["file"].as_str().unwrap());
        let mut v = open_video(&path).unwrap();
        let times = v.frame_times().unwrap().unwrap();
        let expected = f64s(&case["pyav"]["frame_times"]);
        assert_eq!(times.len(), expected.len(), "{name}: frame times");
        for (k, (a, b)) in times.iter().zip(&expected).enumerate() {
            let (a, b) = (a - times[0], b - expected[0]);
            assert!(
                (a - b).abs() < 1e-9,
                "{name}: frame {k} at {a} s, PyAV says {b} s"
            );
        }
    }
}

/// The processor's tensors against transformers' for `case`, within the bar.
fn compare_processed(name: &str, case: &Value, loaded: &vl3c_runtime::video::LoadedVideo) {
    let p = &case["processed"];
    let key = p["key"].as_str().unwrap();
    let bytes = std::fs::read(dir().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let got = &loaded.processed;
    let grid: Vec<i64> = st
        .tensor(&format!("video_grid_thw_{key}"))
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got.grid_thw[0].to_vec(), grid, "{name}: grid");
    let indices: Vec<usize> = p["sampled_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got.timestamps[0].indices, indices, "{name}: sampled frames");
    let mask = st.tensor(&format!("video_compression_mask_{key}")).unwrap();
    let agree = mask
        .data()
        .iter()
        .zip(&got.compression_mask)
        .filter(|(a, b)| (**a != 0) == **b)
        .count() as f64
        / mask.data().len() as f64;
    let pixels = st.tensor(&format!("pixels_u8_{key}")).unwrap();
    assert_eq!(
        pixels.data().len(),
        got.pixel_values.len(),
        "{name}: pixels"
    );
    let mean = pixels
        .data()
        .iter()
        .zip(&got.pixel_values)
        .map(|(&u, &v)| f64::from((u as f32 - 127.5) / 127.5 - v).abs())
        .sum::<f64>()
        / pixels.data().len() as f64;
    eprintln!(
        "{name:18} grid {grid:?}  keep-mask {:.2} %  mean |Δ pixel_values| {mean:.6}",
        agree * 100.0
    );
    assert!(agree >= 0.995, "{name}: keep-mask agreement {agree}");
    assert!(mean <= 0.004, "{name}: mean |Δ pixel_values| {mean}");
}

#[test]
fn processed_like_transformers() {
    let cfg = cfg();
    for (name, case) in clips() {
        if case.get("processed").is_none() {
            continue;
        }
        let path = dir().join(case["file"].as_str().unwrap());
        let loaded = load_video(&path, &cfg, &request(4), &mut |_, _| {}).unwrap();
        compare_processed(&name, &case, &loaded);
        // transformers' labels: index / average rate.
        let expected = f64s(&case["processed"]["timestamps"]);
        let got = &loaded.processed.timestamps[0].seconds;
        for (a, b) in got.iter().zip(&expected) {
            assert!(
                (a - b).abs() < 1e-6,
                "{name}: timestamps {got:?} vs {expected:?}"
            );
        }
    }
}

/// Shrinking each frame as it is decoded gives exactly what resizing the full-size frames does.
#[test]
fn resize_while_decoding_changes_nothing() {
    let cfg = cfg();
    let mut paths: Vec<PathBuf> = clips()
        .iter()
        .map(|(_, c)| dir().join(c["file"].as_str().unwrap()))
        .collect();
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video");
    paths.push(old.join("static_bg/static_bg.mp4"));
    paths.push(old.join("gif/animation.gif"));
    paths.push(old.join("frames"));
    for path in paths {
        for n in [4, 6] {
            if open_video(&path).unwrap().metadata().total_frames < n {
                continue;
            }
            let loaded = load_video(&path, &cfg, &request(n), &mut |_, _| {}).unwrap();
            let mut v = open_video(&path).unwrap();
            let m = v.metadata().clone();
            let sampling = SamplingRequest {
                fps: None,
                num_frames: Some(n),
            };
            let sel = sample_indices(m.total_frames, m.fps, &cfg, sampling).unwrap();
            let full = v.read_frames(&sel.indices, &mut |_, _| {}).unwrap();
            let direct = preprocess_video(&full, &sel, m.fps, &cfg).unwrap();
            assert_eq!(loaded.processed, direct, "{}: {n} frames", path.display());
        }
    }
}

/// The synthetic portrait clip (H.264) and the phone-like one (HEVC Main 10 in QuickTime).
#[test]
fn rotation_apply_turns_the_phone_video_upright() {
    for name in ["rotated.mp4", "hevc10_phone.mov"] {
        rotation_apply_turns_upright(name);
    }
}

fn rotation_apply_turns_upright(name: &str) {
    let c = cases();
    let case = &c["clips"][name];
    let path = dir().join(name);
    let mut v = open_video(&path).unwrap();
    let rotation = v.metadata().rotation;
    assert_eq!(rotation.degrees(), 90, "{name}");
    let idx: Vec<usize> = (0..v.metadata().total_frames).collect();
    let frames = v
        .read_frames_mapped(&idx, &|f| rotation.apply(f), &mut |_, _| {})
        .unwrap();
    let upright = strings(&case["rotated"]["upright_sha256"]);
    assert_eq!(frames.len(), upright.len(), "{name}");
    for (k, (f, h)) in frames.iter().zip(&upright).enumerate() {
        assert_eq!(f.dimensions(), (96, 160), "{name}: portrait");
        assert_eq!(&sha256_hex(f.as_raw()), h, "{name}: upright frame {k}");
    }
    // transformers' behaviour is the default: the coded (landscape) picture.
    let cfg = cfg();
    let ignore = load_video(&path, &cfg, &request(4), &mut |_, _| {}).unwrap();
    let apply = load_video(
        &path,
        &cfg,
        &VideoRequest {
            rotation: RotationMode::Apply,
            ..request(4)
        },
        &mut |_, _| {},
    )
    .unwrap();
    let [t, h, w] = ignore.processed.grid_thw[0];
    assert!(
        w > h,
        "{name}: the coded picture is landscape: {:?}",
        [t, h, w]
    );
    assert_eq!(apply.processed.grid_thw[0], [t, w, h], "{name}");
    assert_ne!(
        ignore.key, apply.key,
        "{name}: the encoder cache tells them apart"
    );
}

#[test]
fn pts_timestamps_follow_a_variable_frame_rate() {
    let c = cases();
    let case = &c["clips"]["vfr.mp4"];
    let times = f64s(&case["pyav"]["frame_times"]);
    let path = dir().join("vfr.mp4");
    let cfg = cfg();
    let pts = load_video(
        &path,
        &cfg,
        &VideoRequest {
            timestamps: TimestampMode::Pts,
            ..request(4)
        },
        &mut |_, _| {},
    )
    .unwrap();
    let ts = &pts.processed.timestamps[0];
    for (&i, &s) in ts.indices.iter().zip(&ts.seconds) {
        assert!((s - (times[i] - times[0])).abs() < 1e-9, "frame {i}: {s}");
    }
    let index = load_video(&path, &cfg, &request(4), &mut |_, _| {}).unwrap();
    assert_ne!(index.processed.timestamps[0].seconds, ts.seconds);
}

/// The error for a broken file: one line that names it, never a panic.
fn one_line_error(path: &Path) -> String {
    let result = open_video(path).and_then(|mut v| {
        let idx: Vec<usize> = (0..v.metadata().total_frames).collect();
        v.read_frames(&idx, &mut |_, _| {}).map(|_| ())
    });
    let e = result
        .err()
        .unwrap_or_else(|| panic!("{} decoded", path.display()))
        .to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(e.contains(&*name), "error does not name the file: {e}");
    assert!(!e.contains('\n'), "more than one line: {e:?}");
    e
}

#[test]
fn broken_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "h264.mkv",
        "vp9.webm",
        "h264_aac.mov",
        "mpeg4.avi",
        "h264_fragmented.mp4",
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        // Cut to the header only: the container is recognised, the frames are missing.
        let cut = tmp.path().join(format!("cut_{name}"));
        std::fs::write(&cut, &bytes[..bytes.len().min(200)]).unwrap();
        let e = one_line_error(&cut);
        eprintln!("{e}");
        // Garbage after a valid signature.
        let garbage = tmp.path().join(format!("garbage_{name}"));
        let mut g = bytes[..16].to_vec();
        g.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        std::fs::write(&garbage, &g).unwrap();
        eprintln!("{}", one_line_error(&garbage));
    }
    let noise = tmp.path().join("noise.mkv");
    std::fs::write(
        &noise,
        (0..5000u32)
            .map(|i| (i.wrapping_mul(2246822519) >> 7) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    eprintln!("{}", one_line_error(&noise));
    let audio = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/video/unsupported/audio_only.mp4");
    assert!(one_line_error(&audio).contains("no video track"));
}
