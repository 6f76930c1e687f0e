//! What the CLI test binaries share: paths into the repository, running the `vl3c` binary with an
//! engine cache private to the test binary, and the one-line error contract.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A golden model fixture, `tests/fixtures/models/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

pub fn tiny() -> PathBuf {
    root().join("examples/tiny")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One engine cache per test binary, so `run --model` compiles a checkpoint once and nothing is
/// written under the user's home.
pub fn cache_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

pub fn vl3c(args: &[&str]) -> Output {
    vl3c_with_stdin(args, "")
}

pub fn vl3c_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vl3c"))
        .env("VL3C_CACHE_DIR", cache_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vl3c runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("stdin accepts the input");
    child.wait_with_output().expect("vl3c runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with a non-zero exit and exactly one line on stderr that contains `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Largest and mean absolute difference of two tensors, as f32.
pub struct Diff {
    pub max: f32,
    pub mean: f32,
}

pub fn diff(a: &vl3c_runtime::exec::Tensor, b: &vl3c_runtime::exec::Tensor) -> Diff {
    assert_eq!(a.shape, b.shape, "shapes differ");
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    let d: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
    Diff {
        max: d.iter().cloned().fold(0.0, f32::max),
        mean: d.iter().sum::<f32>() / d.len() as f32,
    }
}

/// The ids of `generated_ids`.
pub fn ids(t: &vl3c_runtime::exec::Tensor) -> Vec<i64> {
    match &t.data {
        vl3c_runtime::exec::TensorData::I64(v) => v.clone(),
        other => panic!("generated_ids is {other:?}"),
    }
}
