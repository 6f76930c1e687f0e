//! The CLI is a public contract: later checks drive it with checkpoints that are not in the repo.

mod common;
use common::{assert_one_line_error, fixture, s, stderr, vl3c};
use std::path::Path;
use vl3c_runtime::exec::TensorData;
use vl3c_runtime::tensor_file::{read_tensors, write_tensors};

#[test]
fn eval_writes_logits_and_generated_ids() {
    let dir = fixture("image_tied_f32");
    let out = tempfile::tempdir().unwrap().keep().join("out.safetensors");
    let o = vl3c(&[
        "eval",
        "--model",
        s(&dir),
        "--inputs",
        s(&dir.join("inputs.safetensors")),
        "--out",
        s(&out),
        "--max-new-tokens",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_tensors(&out).unwrap();
    let want = read_tensors(&dir.join("expected.safetensors")).unwrap();
    assert_eq!(got["logits"].shape, want["logits"].shape);
    assert_eq!(got["generated_ids"].shape, vec![1, 8]);
    let (TensorData::I64(a), TensorData::I64(b)) =
        (&got["generated_ids"].data, &want["generated_ids"].data)
    else {
        panic!("generated_ids must be i64")
    };
    assert_eq!(a, b);
}

#[test]
fn eval_without_generation_writes_only_logits() {
    let dir = fixture("damo_layout");
    let out = tempfile::tempdir().unwrap().keep().join("out.safetensors");
    let o = vl3c(&[
        "eval",
        "--model",
        s(&dir),
        "--inputs",
        s(&dir.join("inputs.safetensors")),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_tensors(&out).unwrap();
    assert!(got.contains_key("logits") && !got.contains_key("generated_ids"));
}

#[test]
fn missing_argument_is_one_line() {
    assert_one_line_error(&vl3c(&["eval", "--inputs", "x"]), "--model");
    assert_one_line_error(&vl3c(&["frobnicate"]), "frobnicate");
}

#[test]
fn missing_model_dir_names_it() {
    let o = vl3c(&[
        "eval",
        "--model",
        "/nonexistent/ckpt",
        "--inputs",
        s(&fixture("image_tied_f32").join("inputs.safetensors")),
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert_one_line_error(&o, "/nonexistent/ckpt");
}

#[test]
fn corrupt_inputs_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("in.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let o = vl3c(&[
        "eval",
        "--model",
        s(&fixture("image_tied_f32")),
        "--inputs",
        s(&bad),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "in.safetensors");
}

#[test]
fn placeholder_count_mismatch_is_explained() {
    let dir = fixture("image_tied_f32");
    let mut inputs = read_tensors(&dir.join("inputs.safetensors")).unwrap();
    let ids = inputs.get_mut("input_ids").unwrap();
    if let TensorData::I64(v) = &mut ids.data {
        let first_image = v.iter().position(|&t| t == 3).unwrap();
        v[first_image] = 5;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("in.safetensors");
    let named: Vec<(&str, &vl3c_runtime::exec::Tensor)> =
        inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&path, &named).unwrap();
    let o = vl3c(&[
        "eval",
        "--model",
        s(&dir),
        "--inputs",
        s(&path),
        "--out",
        s(&tmp.path().join("o")),
    ]);
    assert_one_line_error(&o, "image placeholders");
}

#[test]
fn inspect_json_reports_parts_and_ops() {
    let o = vl3c(&[
        "inspect",
        "--model",
        s(&fixture("images_untied_gqa4")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["layout"], "transformers");
    assert_eq!(j["tie_word_embeddings"], false);
    let by_part = &j["parameters"]["by_part"];
    let total: u64 = ["vision", "projector", "llm"]
        .iter()
        .map(|p| by_part[p].as_u64().unwrap())
        .sum();
    assert_eq!(total, j["parameters"]["total"].as_u64().unwrap());
    // projector: 48→64 and 64→64 linears with biases
    assert_eq!(by_part["projector"], 48 * 64 + 64 + 64 * 64 + 64);
    assert!(j["ops"]["prefill"]["matmul"].as_u64().unwrap() > 0);
}

#[test]
fn inspect_text_names_damo_layout() {
    let o = vl3c(&["inspect", "--model", s(&fixture("damo_layout"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Damo"), "{text}");
    assert!(text.contains("IR ops"), "{text}");
}

#[test]
fn preprocess_matches_transformers_through_the_cli() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess/downscale_longest");
    let out = tempfile::tempdir().unwrap().keep().join("px.safetensors");
    // `--model` points at a directory whose preprocessor_config.json sets the pixel bounds.
    let o = vl3c(&[
        "preprocess",
        "--image",
        s(&case.join("astronaut.png")),
        "--model",
        s(&case),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_tensors(&out).unwrap();
    let want = read_tensors(&case.join("expected.safetensors")).unwrap();
    let (TensorData::I64(g), TensorData::I64(w)) =
        (&got["image_grid_thw"].data, &want["image_grid_thw"].data)
    else {
        panic!("grids must be i64")
    };
    assert_eq!(g, w);
    let pixels = got["pixel_values"].to_f32_vec();
    let u8s = want["pixels_u8"].to_i64_vec();
    let max = pixels
        .iter()
        .zip(&u8s)
        .map(|(p, &u)| (p - (u as f32 - 127.5) / 127.5).abs())
        .fold(0.0, f32::max);
    assert_eq!(max, 0.0, "PNG preprocessing is bit-exact");
}

#[test]
fn preprocess_rejects_a_non_image() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("notes.png");
    std::fs::write(&bogus, b"this is not a png").unwrap();
    let o = vl3c(&[
        "preprocess",
        "--image",
        s(&bogus),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_one_line_error(&o, "notes.png");
}
