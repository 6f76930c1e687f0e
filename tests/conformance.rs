//! Every golden fixture (made by transformers, tools/golden/make_model_fixtures.py) runs through
//! the reference executor and must reproduce transformers' logits and greedy tokens.

mod common;

use common::{diff, fixture, Diff};
use vl3c_runtime::model::Model;
use vl3c_runtime::tensor_file::read_tensors;

/// Runs one fixture; returns the logits difference against transformers in f32.
fn check(name: &str, max_tolerance: f32) -> Diff {
    let dir = fixture(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let new_tokens = meta["max_new_tokens"].as_u64().unwrap() as usize;
    let inputs = read_tensors(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_tensors(&dir.join("expected.safetensors")).unwrap();
    let model = Model::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let result = model
        .forward(&inputs, new_tokens)
        .unwrap_or_else(|e| panic!("{name}: {e}"));

    let d = diff(&result.logits, &expected["logits"]);
    eprintln!("{name}: max |Δlogits| {:.3e}, mean {:.3e}", d.max, d.mean);
    assert!(
        d.max <= max_tolerance,
        "{name}: max |Δlogits| {} > {max_tolerance}",
        d.max
    );

    assert_eq!(
        result.generated_ids.unwrap(),
        common::ids(&expected["generated_ids"]),
        "{name}: greedy tokens differ from transformers"
    );
    d
}

#[test]
fn image_tied_f32() {
    check("image_tied_f32", 1e-4);
}

#[test]
fn images_untied_gqa4() {
    check("images_untied_gqa4", 1e-4);
}

#[test]
fn video_pruned_f32() {
    check("video_pruned_f32", 1e-4);
}

#[test]
fn damo_layout_sharded() {
    check("damo_layout", 1e-4);
}

/// bf16 weights: the oracle is transformers in f32 on the upcast weights. The reference executor
/// upcasts too, so it must meet the f32 bar, far inside the 3e-2 the issue allows and below
/// transformers' own bf16 path (stored as `logits_bf16`).
#[test]
fn video_bf16_weights() {
    let ours = check("video_bf16", 1e-4);
    let expected = read_tensors(&fixture("video_bf16").join("expected.safetensors")).unwrap();
    let theirs = diff(&expected["logits_bf16"], &expected["logits"]);
    eprintln!(
        "transformers' bf16 path: max {:.3e}, mean {:.3e}",
        theirs.max, theirs.mean
    );
    assert!(ours.max <= theirs.max && ours.mean <= theirs.mean);
}
