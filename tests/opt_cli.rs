//! `vl3c opt` and `vl3c eval --opt`: the optimized graphs compute what transformers computes.

mod common;
use common::{s, stderr, vl3c};
use std::path::{Path, PathBuf};
use vl3c_runtime::exec::TensorData;
use vl3c_runtime::tensor_file::read_tensors;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    assert!(
        !dirs.is_empty(),
        "no fixtures with meta.json under {}",
        root.display()
    );
    dirs.sort();
    dirs
}

#[test]
fn eval_opt_reproduces_transformers_on_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let tokens = meta["max_new_tokens"].as_u64().unwrap().to_string();
        let out = tmp.path().join(format!("{name}.safetensors"));
        let inputs = dir.join("inputs.safetensors");
        let o = vl3c(&[
            "eval",
            "--opt",
            "--model",
            s(&dir),
            "--inputs",
            s(&inputs),
            "--out",
            s(&out),
            "--max-new-tokens",
            &tokens,
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let got = read_tensors(&out).unwrap();
        let want = read_tensors(&dir.join("expected.safetensors")).unwrap();
        let (a, b) = (got["logits"].to_f32_vec(), want["logits"].to_f32_vec());
        assert_eq!(got["logits"].shape, want["logits"].shape, "{name}");
        let max = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-4, "{name}: max |Δlogits| {max} > 1e-4 with --opt");
        let (TensorData::I64(x), TensorData::I64(y)) =
            (&got["generated_ids"].data, &want["generated_ids"].data)
        else {
            panic!("{name}: generated_ids must be i64")
        };
        assert_eq!(x, y, "{name}: greedy tokens differ with --opt");
    }
}

#[test]
fn opt_json_reports_ops_and_fused_attention() {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let o = vl3c(&["opt", "--model", s(&dir), "--config-only", "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for field in [
            "ops_before",
            "ops_after",
            "fused_attention",
            "eclasses",
            "enodes",
            "seconds",
        ] {
            assert!(v.get(field).is_some(), "{name}: missing `{field}` in {v}");
        }
        let count = |ops: &str, op: &str| v[ops][op].as_u64().unwrap_or(0);
        // Every attention layer is either fused or still has its softmax chain (one reduce_max).
        let layers = count("ops_before", "reduce_max");
        let fused = v["fused_attention"].as_u64().unwrap();
        assert_eq!(fused, count("ops_after", "attention"), "{name}");
        let remaining = count("ops_after", "softmax") + count("ops_after", "reduce_max");
        assert_eq!(fused + remaining, layers, "{name}: {v}");
        assert!(
            v["eclasses"].as_u64().unwrap() > 0 && v["enodes"].as_u64().unwrap() > 0,
            "{name}"
        );
    }
}

#[test]
fn opt_text_dot_and_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/image_tied_f32");
    let dot = tempfile::tempdir().unwrap().keep().join("g.dot");
    let o = vl3c(&[
        "opt",
        "--model",
        s(&dir),
        "--graph",
        "prefill",
        "--print-after",
        "--dot",
        s(&dot),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("graph prefill {") && text.contains("prefill"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&dot)
        .unwrap()
        .starts_with("digraph \"prefill\""));

    let o = vl3c(&["opt", "--model", s(&dir), "--target", "tpu"]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.trim_end().lines().count() == 1 && err.contains("tpu"),
        "{err}"
    );
    let o = vl3c(&["opt", "--model", s(&dir), "--graph", "nope"]);
    assert!(!o.status.success() && stderr(&o).contains("nope"));
}
