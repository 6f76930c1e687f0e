//! `vl3c run` end to end on examples/tiny: the streamed text must be byte-for-byte what
//! transformers decoded (tests/fixtures/run/tiny_prompt.json, U+FFFD characters included).

mod common;
use common::{assert_one_line_error, cache_dir, root, stderr, tiny, vl3c};
use std::path::PathBuf;
use std::process::Output;

fn picture() -> PathBuf {
    root().join("examples/picture.png")
}

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/run/tiny_prompt.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `vl3c run` on the golden prompt with extra arguments.
fn run_tiny(extra: &[&str]) -> Output {
    let (model, image) = (tiny(), picture());
    let mut args = vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ];
    args.extend(["--prompt", "What is in this picture?"]);
    args.extend(extra);
    vl3c(&args)
}

/// Success, and stderr is exactly the one summary line (progress is drawn only on a terminal).
fn assert_summary(o: &Output, new_tokens: usize) {
    let err = stderr(o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one summary line, got: {err}"
    );
    let want = format!("124 prompt tokens (104 image tokens), {new_tokens} new tokens, TTFT ");
    assert!(
        err.starts_with(&want) && err.contains(" tok/s, total "),
        "{err}"
    );
}

#[test]
fn greedy_output_is_transformers_text_byte_for_byte() {
    let g = golden();
    let want = format!("{}\n", g["generated_text"].as_str().unwrap());
    assert!(
        want.contains('\u{FFFD}'),
        "the golden exercises replacement characters"
    );
    for extra in [&[][..], &["--reference"][..], &["--reference", "--opt"][..]] {
        let o = run_tiny(&[&["--max-new-tokens", "12"], extra].concat());
        assert_summary(&o, 12);
        assert_eq!(
            o.stdout,
            want.as_bytes(),
            "stdout with {extra:?}: {:?}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// `run --model` compiles into the cache once; `run --engine` runs an engine `vl3c compile` wrote.
#[test]
fn engines_from_the_cache_and_from_compile_agree() {
    let want = format!("{}\n", golden()["generated_text"].as_str().unwrap());
    for _ in 0..2 {
        assert_eq!(
            run_tiny(&["--max-new-tokens", "12"]).stdout,
            want.as_bytes()
        );
    }
    let engines: Vec<_> = std::fs::read_dir(cache_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file())
        .collect();
    assert_eq!(engines.len(), 1, "the second run reuses the cached engine");

    let out = tempfile::tempdir().unwrap();
    let engine = out.path().join("tiny.engine");
    let o = vl3c(&[
        "compile",
        "--model",
        tiny().to_str().unwrap(),
        "--target",
        "cpu",
        "--out",
        engine.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vl3c(&[
        "run",
        "--engine",
        engine.to_str().unwrap(),
        "--image",
        picture().to_str().unwrap(),
        "--prompt",
        "What is in this picture?",
        "--max-new-tokens",
        "12",
    ]);
    assert_summary(&o, 12);
    assert_eq!(o.stdout, want.as_bytes());
}

#[test]
fn seeded_sampling_is_reproducible() {
    let args = [
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "7",
        "--max-new-tokens",
        "24",
    ];
    let a = run_tiny(&args);
    let b = run_tiny(&args);
    assert_summary(&a, 24);
    assert_eq!(a.stdout, b.stdout);
    let greedy = run_tiny(&["--max-new-tokens", "24"]);
    assert_ne!(
        a.stdout, greedy.stdout,
        "sampling at temperature 0.8 should leave the greedy path"
    );
    let other_seed = run_tiny(&[
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "8",
        "--max-new-tokens",
        "24",
    ]);
    assert_ne!(a.stdout, other_seed.stdout);
}

#[test]
fn zero_new_tokens_prints_an_empty_line() {
    let o = run_tiny(&["--max-new-tokens", "0"]);
    assert_summary(&o, 0);
    assert_eq!(o.stdout, b"\n");
}

#[test]
fn bad_image_path_is_one_line() {
    let model = tiny();
    let o = vl3c(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "/nonexistent/cat.png",
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(&o, "cannot read /nonexistent/cat.png");
    assert!(o.stdout.is_empty());
}

#[test]
fn missing_tokenizer_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny().join(f), dir.path().join(f)).unwrap();
    }
    let o = vl3c(&[
        "run",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(&o, "no tokenizer.json in");
}

#[test]
fn missing_engine_or_source_is_one_line() {
    let o = vl3c(&[
        "run",
        "--engine",
        "/nonexistent/some.engine",
        "--prompt",
        "hi",
    ]);
    assert_one_line_error(&o, "/nonexistent/some.engine");
    let o = vl3c(&["run", "--prompt", "hi"]);
    assert_one_line_error(&o, "--model");
}

#[test]
fn bad_sampling_settings_are_one_line() {
    let o = run_tiny(&["--top-p", "0"]);
    assert_one_line_error(&o, "top_p must be in (0, 1]");
    let o = run_tiny(&["--temperature", "-1"]);
    assert_one_line_error(&o, "temperature must be");
}
