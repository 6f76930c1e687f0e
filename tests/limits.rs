//! Limits before allocation: every size that comes from a file or an argument is checked against
//! a bound before anything is allocated from it, and bad input gives one line on stderr naming
//! the input and what would be valid. Each case here used to abort allocating terabytes, panic,
//! hang or blame a flag the user never gave; every one must now fail fast, before allocating.

mod common;
use common::{assert_one_line_error, fixture, root, s, stderr, tiny, vl3c};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vl3c_runtime::exec::{Tensor, TensorData};
use vl3c_runtime::tensor_file::{read_tensors, write_tensors};

const HUGE: &str = "1000000000000"; // 10^12
const TWO_59: &str = "576460752303423488";
const USIZE_MAX: &str = "18446744073709551615";

fn picture() -> PathBuf {
    root().join("examples/picture.png")
}

/// A copy of examples/tiny in a temporary directory, to mutate.
fn tiny_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// Rewrites the JSON file `dir/name` with `edit`.
fn edit_json(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) {
    let path = dir.join(name);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn run_tiny(extra: &[&str]) -> Output {
    let (model, image) = (tiny(), picture());
    vl3c(
        &[
            &[
                "run",
                "--model",
                s(&model),
                "--image",
                s(&image),
                "--prompt",
                "What is in this picture?",
            ][..],
            extra,
        ]
        .concat(),
    )
}

/// `vl3c` with `stdin` written from another thread: the process may refuse the input and exit
/// before it has all been written, which must not fail the test.
fn vl3c_fed(args: &[&str], stdin: Vec<u8>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vl3c"))
        .env("VL3C_CACHE_DIR", common::cache_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

// ---- context sizes: --max-new-tokens, --max-context, bench --context/--decode-tokens ----

#[test]
fn max_new_tokens_is_capped_by_the_models_positions() {
    // 10^12 used to abort allocating 64 TB; 2^59 panicked with a capacity overflow; usize::MAX
    // wrapped and blamed --max-context, which was not given.
    for n in [HUGE, TWO_59, USIZE_MAX] {
        let o = run_tiny(&["--max-new-tokens", n]);
        assert_one_line_error(&o, &format!("--max-new-tokens {n} is more than the model's 512 positions (max_position_embeddings)"));
        assert!(!stderr(&o).contains("--max-context"), "{}", stderr(&o));
    }
    // Fewer than the positions, but not after this prompt of 124 tokens: how many would fit.
    let o = run_tiny(&["--max-new-tokens", "500"]);
    assert_one_line_error(&o, "--max-new-tokens 500: a prompt of 124 tokens and 500 new tokens need 623 positions, more than the model's 512 (max_position_embeddings); at most 389 new tokens fit");
}

#[test]
fn max_context_is_capped_by_the_models_positions() {
    for n in [HUGE, TWO_59, USIZE_MAX, "513"] {
        let o = run_tiny(&["--max-context", n]);
        assert_one_line_error(&o, &format!("--max-context {n} is more than the model's 512 positions (max_position_embeddings)"));
    }
    assert_one_line_error(
        &run_tiny(&["--max-context", "0"]),
        "--max-context 0 holds no position",
    );
    let o = vl3c(&["chat", "--model", s(&tiny()), "--max-context", USIZE_MAX]);
    assert_one_line_error(
        &o,
        &format!("--max-context {USIZE_MAX} is more than the model's 512 positions"),
    );
}

#[test]
fn chat_room_past_the_models_positions_is_capped_not_wrapped() {
    // The default context is capped at the model's positions; nothing wraps or is refused.
    let o = vl3c(&[
        "chat",
        "--model",
        s(&tiny()),
        "--reference",
        "--history-room",
        USIZE_MAX,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vl3c(&[
        "chat",
        "--model",
        s(&tiny()),
        "--reference",
        "--max-new-tokens",
        USIZE_MAX,
    ]);
    assert_one_line_error(
        &o,
        &format!("--max-new-tokens {USIZE_MAX} is more than the model's 512 positions"),
    );
}

#[test]
fn eval_bounds_its_context_before_loading_an_engine() {
    let dir = fixture("image_tied_f32");
    let inputs = dir.join("inputs.safetensors");
    let out = tempfile::tempdir().unwrap();
    let o = vl3c(&[
        "eval",
        "--model",
        s(&dir),
        "--inputs",
        s(&inputs),
        "--out",
        s(&out.path().join("o")),
        "--max-new-tokens",
        HUGE,
    ]);
    assert_one_line_error(
        &o,
        &format!("--max-new-tokens {HUGE} is more than the model's"),
    );
    // The flags are checked against the engine's copy of config.json before the engine loads:
    // a directory holding only that file is enough to reach the check.
    let engine = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), engine.path().join("config.json")).unwrap();
    let o = vl3c(&[
        "eval",
        "--engine",
        s(engine.path()),
        "--inputs",
        s(&inputs),
        "--out",
        s(&out.path().join("o")),
        "--max-context",
        HUGE,
    ]);
    assert_one_line_error(
        &o,
        &format!("--max-context {HUGE} is more than the model's"),
    );
    let o = vl3c(&[
        "eval",
        "--engine",
        s(engine.path()),
        "--inputs",
        s(&inputs),
        "--out",
        s(&out.path().join("o")),
        "--threads",
        HUGE,
    ]);
    assert_one_line_error(
        &o,
        &format!("--threads {HUGE} is more threads than vl3c starts (at most 1024"),
    );
}

#[test]
fn bench_context_and_decode_tokens_do_not_overflow() {
    let half = (1u64 << 63).to_string();
    let o = vl3c(&[
        "bench",
        "--model",
        s(&tiny()),
        "--context",
        &half,
        "--decode-tokens",
        &half,
    ]);
    assert_one_line_error(&o, &format!("--context {half} and --decode-tokens {half} need 18446744073709551616 positions, more than the model's 512"));
    let o = vl3c(&[
        "bench",
        "--model",
        s(&tiny()),
        "--context",
        "500",
        "--decode-tokens",
        "13",
    ]);
    assert_one_line_error(&o, "need 513 positions, more than the model's 512");
    let o = vl3c(&[
        "bench",
        "--model",
        s(&tiny()),
        "--context",
        "8",
        "--decode-tokens",
        "1",
        "--image-size",
        "14000000",
        "--bandwidth-gbs",
        "1",
        "--peak-gflops",
        "1",
    ]);
    assert_one_line_error(
        &o,
        "--image-size 14000000 gives 1000000x1000000 patches, more than the model's 120",
    );
}

#[test]
fn threads_and_frames_flags_are_bounded() {
    assert_one_line_error(
        &run_tiny(&["--threads", HUGE]),
        &format!("--threads {HUGE}"),
    );
    let video = root().join("tests/fixtures/video/gif/animation.gif");
    let o = vl3c(&[
        "run",
        "--model",
        s(&tiny()),
        "--video",
        s(&video),
        "--num-frames",
        HUGE,
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(
        &o,
        &format!(
            "--num-frames {HUGE} is more frames than vl3c takes from one video (at most 2048)"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let o = vl3c(&[
        "preprocess",
        "--video",
        s(&video),
        "--num-frames",
        HUGE,
        "--out",
        s(&out.path().join("o")),
    ]);
    assert_one_line_error(&o, "--num-frames");
}

// ---- config.json ----

#[test]
fn config_sizes_are_bounded_when_parsed() {
    // 10^9 layers ate 12 GB before failing; a hidden size of 2^62 was accepted.
    let cases: [(&str, &str, Value, &str); 10] = [
        (
            "text_config",
            "num_hidden_layers",
            1_000_000_000u64.into(),
            "at most 1024",
        ),
        (
            "text_config",
            "hidden_size",
            (1u64 << 62).into(),
            "at most 65536",
        ),
        (
            "text_config",
            "intermediate_size",
            (1u64 << 40).into(),
            "at most 262144",
        ),
        (
            "text_config",
            "vocab_size",
            (1u64 << 40).into(),
            "at most 2097152",
        ),
        (
            "text_config",
            "num_attention_heads",
            (1u64 << 20).into(),
            "at most 1024",
        ),
        (
            "text_config",
            "head_dim",
            (1u64 << 20).into(),
            "at most 1024",
        ),
        (
            "text_config",
            "max_position_embeddings",
            (1u64 << 40).into(),
            "at most 2097152",
        ),
        (
            "vision_config",
            "num_hidden_layers",
            1_000_000_000u64.into(),
            "at most 1024",
        ),
        (
            "vision_config",
            "hidden_size",
            (1u64 << 62).into(),
            "at most 65536",
        ),
        (
            "vision_config",
            "patch_size",
            (1u64 << 30).into(),
            "at most 256",
        ),
    ];
    for (part, field, value, bound) in cases {
        let dir = tiny_copy();
        edit_json(dir.path(), "config.json", |v| {
            v[part][field] = value.clone()
        });
        let o = vl3c(&["inspect", "--model", s(dir.path())]);
        assert_one_line_error(
            &o,
            &format!("{part}.{field} is {value}, more than vl3c accepts ({bound}"),
        );
        assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
    }
}

#[test]
fn config_divisibility_is_checked_not_panicked_on() {
    let dir = tiny_copy();
    edit_json(dir.path(), "config.json", |v| {
        v["vision_config"]["num_attention_heads"] = 5.into()
    });
    assert_one_line_error(
        &vl3c(&["inspect", "--model", s(dir.path())]),
        "vision_config.hidden_size (32) is not divisible by num_attention_heads (5)",
    );
    let dir = tiny_copy();
    edit_json(dir.path(), "config.json", |v| {
        v["text_config"]["num_key_value_heads"] = 3.into()
    });
    assert_one_line_error(
        &vl3c(&["inspect", "--model", s(dir.path())]),
        "num_attention_heads (4) is not divisible by num_key_value_heads (3)",
    );
}

// ---- preprocessor configs ----

#[test]
fn image_pixel_budgets_are_bounded() {
    // 10^12 pixels used to abort allocating 3 TB.
    let cases: [(&str, Value, &str); 5] = [
        (
            "max_pixels",
            1_000_000_000_000u64.into(),
            "max_pixels is 1000000000000, more than vl3c accepts (at most 33554432",
        ),
        (
            "min_pixels",
            1_000_000_000_000u64.into(),
            "min_pixels is 1000000000000",
        ),
        (
            "size",
            serde_json::json!({"shortest_edge": 784, "longest_edge": 1_000_000_000_000u64}),
            "size.longest_edge is 1000000000000",
        ),
        (
            "max_tokens",
            (1u64 << 62).into(),
            "max_tokens is 4611686018427387904, more than vl3c accepts (at most 171196 tokens",
        ),
        (
            "patch_size",
            (1u64 << 40).into(),
            "patch_size is 1099511627776, more than vl3c accepts (at most 256",
        ),
    ];
    for (key, value, needle) in cases {
        let dir = tiny_copy();
        edit_json(dir.path(), "preprocessor_config.json", |v| {
            v[key] = value.clone()
        });
        let out = dir.path().join("px.safetensors");
        let o = vl3c(&[
            "preprocess",
            "--image",
            s(&picture()),
            "--model",
            s(dir.path()),
            "--out",
            s(&out),
        ]);
        assert_one_line_error(&o, needle);
        assert!(
            stderr(&o).contains("preprocessor_config.json"),
            "{}",
            stderr(&o)
        );
        // The model reads the same file for its vision bounds: refused before it loads.
        let o = vl3c(&[
            "run",
            "--model",
            s(dir.path()),
            "--image",
            s(&picture()),
            "--prompt",
            "hi",
        ]);
        assert_one_line_error(&o, needle);
    }
}

#[test]
fn video_pixel_and_frame_budgets_are_bounded() {
    let video = root().join("tests/fixtures/video/gif/animation.gif");
    let cases: [(&str, Value, &str); 4] = [
        (
            "size",
            serde_json::json!({"shortest_edge": 3136, "longest_edge": 1_000_000_000_000u64}),
            "`size.longest_edge` is 1000000000000",
        ),
        (
            "max_frames",
            1_000_000_000u64.into(),
            "`max_frames` is 1000000000, more than vl3c accepts (at most 2048",
        ),
        (
            "num_frames",
            1_000_000_000u64.into(),
            "`num_frames` is 1000000000",
        ),
        (
            "merge_size",
            (1u64 << 40).into(),
            "`merge_size` is 1099511627776",
        ),
    ];
    for (key, value, needle) in cases {
        let dir = tiny_copy();
        edit_json(dir.path(), "video_preprocessor_config.json", |v| {
            v[key] = value.clone()
        });
        let out = dir.path().join("px.safetensors");
        let o = vl3c(&[
            "preprocess",
            "--video",
            s(&video),
            "--model",
            s(dir.path()),
            "--out",
            s(&out),
        ]);
        assert_one_line_error(&o, needle);
        assert!(
            stderr(&o).contains("video_preprocessor_config.json"),
            "{}",
            stderr(&o)
        );
    }
}

// ---- files: regular, and no larger than any valid input of their kind ----

#[test]
fn devices_are_refused_as_inputs_without_reading_them() {
    let zero = Path::new("/dev/zero");
    let out = tempfile::tempdir().unwrap();
    let o = vl3c(&[
        "preprocess",
        "--image",
        "/dev/zero",
        "--out",
        s(&out.path().join("o")),
    ]);
    assert_one_line_error(
        &o,
        "/dev/zero: a character device, not a regular file; expected an image file (PNG, JPEG, WebP, BMP, TIFF or GIF)",
    );
    let o = vl3c(&[
        "run",
        "--model",
        s(&tiny()),
        "--image",
        "/dev/zero",
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(&o, "/dev/zero: a character device, not a regular file");
    let o = vl3c(&[
        "run",
        "--model",
        s(&tiny()),
        "--video",
        "/dev/zero",
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(
        &o,
        "/dev/zero: a character device, not a regular file; expected a video",
    );
    let o = vl3c(&[
        "eval",
        "--model",
        s(&fixture("image_tied_f32")),
        "--inputs",
        "/dev/zero",
        "--out",
        s(&out.path().join("o")),
    ]);
    assert_one_line_error(
        &o,
        "/dev/zero: a character device, not a regular file; expected a safetensors file",
    );

    // The files of a checkpoint, each replaced by the device.
    for name in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        let dir = tiny_copy();
        std::fs::remove_file(dir.path().join(name)).unwrap();
        std::os::unix::fs::symlink(zero, dir.path().join(name)).unwrap();
        let o = vl3c(&[
            "run",
            "--model",
            s(dir.path()),
            "--image",
            s(&picture()),
            "--prompt",
            "hi",
        ]);
        assert_one_line_error(&o, "a character device, not a regular file");
        assert!(
            stderr(&o).contains(&format!("{}", dir.path().join(name).display())),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn a_named_pipe_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("image.png");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return; // no mkfifo here
    }
    let o = vl3c(&[
        "preprocess",
        "--image",
        s(&fifo),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "image.png: a named pipe, not a regular file");
    let o = vl3c(&[
        "run",
        "--model",
        s(&tiny()),
        "--video",
        s(&fifo),
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(&o, "image.png: a named pipe, not a regular file");
}

#[test]
fn files_larger_than_any_valid_input_are_refused_from_their_metadata() {
    // Sparse files: their length is all the check reads, so they cost no disk and no memory.
    let dir = tiny_copy();
    let big = |name: &str, len: u64| {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    };
    let image = big("huge.png", 600 << 20);
    let o = vl3c(&[
        "preprocess",
        "--image",
        s(&image),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "huge.png: 600 MiB (629145600 bytes), too large for an image file (PNG, JPEG, WebP, BMP, TIFF or GIF): vl3c reads at most 512 MiB");
    let inputs = big("inputs.safetensors", 9 << 30);
    let o = vl3c(&[
        "eval",
        "--model",
        s(&fixture("image_tied_f32")),
        "--inputs",
        s(&inputs),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "inputs.safetensors: 9 GiB (9663676416 bytes), too large for a safetensors file: vl3c reads at most 8 GiB");
    big("config.json", 32 << 20);
    let o = vl3c(&["inspect", "--model", s(dir.path())]);
    assert_one_line_error(&o, "config.json: 32 MiB (33554432 bytes), too large for config.json: vl3c reads at most 16 MiB");
}

#[test]
fn an_engines_files_are_checked_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = serde_json::json!({
        "format_version": vl3c_engine::FORMAT_VERSION, "target": "cpu", "cpu_features": [], "cpu_features_optional": [], "vl3c_version": "0",
        "source": {"config_sha256": "", "files": {}},
        "files": {"plan.json": {"bytes": 10, "sha256": ""}, "config.json": {"bytes": 1435, "sha256": ""}}
    });
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::copy(tiny().join("config.json"), dir.path().join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("plan.json")).unwrap();
    let o = vl3c(&["inspect", "--engine", s(dir.path()), "--plan"]);
    assert_one_line_error(&o, "plan.json: a character device, not a regular file");
    let inputs = fixture("image_tied_f32").join("inputs.safetensors");
    let o = vl3c(&[
        "eval",
        "--engine",
        s(dir.path()),
        "--inputs",
        s(&inputs),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "plan.json: a character device, not a regular file");
    // A manifest that is itself a device.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("manifest.json")).unwrap();
    let o = vl3c(&["inspect", "--engine", s(dir.path())]);
    assert_one_line_error(&o, "manifest.json: cannot read (not an engine directory?): a character device, not a regular file");
}

#[test]
fn chat_reads_stdin_one_bounded_line_at_a_time() {
    // `chat < /dev/zero` read until memory ran out: a line without a newline now stops at 1 MiB.
    let o = vl3c_fed(
        &["chat", "--model", s(&tiny()), "--reference"],
        vec![b'a'; (1 << 20) + 100],
    );
    assert_one_line_error(
        &o,
        "stdin: a line longer than 1 MiB, the most one chat message may be",
    );
    let o = vl3c_fed(
        &["chat", "--model", s(&tiny()), "--reference"],
        vec![0xff, b'\n'],
    );
    assert_one_line_error(&o, "stdin: chat message is not UTF-8 text");
}

// ---- empty inputs ----

/// The image_tied_f32 inputs with every image placeholder replaced by text and the given vision
/// tensors instead of the image's.
fn text_only_inputs(dir: &Path, grid: Tensor, pixels: Tensor) -> PathBuf {
    let fixture = fixture("image_tied_f32");
    let mut inputs = read_tensors(&fixture.join("inputs.safetensors")).unwrap();
    let image_id = 3; // the fixture's image_token_id
    if let TensorData::I64(v) = &mut inputs.get_mut("input_ids").unwrap().data {
        v.iter_mut()
            .filter(|t| **t == image_id)
            .for_each(|t| *t = 5);
    }
    let merges = Tensor::i64(vec![grid.shape[0]], vec![1; grid.shape[0]]);
    inputs.insert("image_grid_thw".into(), grid);
    inputs.insert("pixel_values".into(), pixels);
    inputs.insert("image_merge_sizes".into(), merges);
    let path = dir.join("in.safetensors");
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&path, &named).unwrap();
    path
}

#[test]
fn zero_images_are_a_no_op_not_an_index_panic() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = text_only_inputs(
        dir.path(),
        Tensor::i64(vec![0, 3], vec![]),
        Tensor::f32(vec![0, 588], vec![]),
    );
    let o = vl3c(&[
        "eval",
        "--model",
        s(&fixture("image_tied_f32")),
        "--inputs",
        s(&inputs),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn grids_whose_patch_count_overflows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let huge = 1i64 << 40;
    let inputs = text_only_inputs(
        dir.path(),
        Tensor::i64(vec![1, 3], vec![huge, huge, huge]),
        Tensor::f32(vec![1, 588], vec![0.0; 588]),
    );
    let o = vl3c(&[
        "eval",
        "--model",
        s(&fixture("image_tied_f32")),
        "--inputs",
        s(&inputs),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "image_grid_thw");
    assert!(stderr(&o).contains("overflow"), "{}", stderr(&o));
}

#[test]
fn an_empty_frame_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = vl3c(&[
        "preprocess",
        "--video",
        s(dir.path()),
        "--out",
        s(&dir.path().join("o.safetensors")),
    ]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
