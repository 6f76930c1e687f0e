//! Differential Frame Pruning inside the graph (spec §4.3): the `vision_m2` graph's `keep_mask`
//! must reproduce transformers' `video_compression_mask` bit for bit, and a forward pass without
//! the processor's mask must give the same logits and tokens as one with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vl3c_runtime::exec::{execute, Tensor, TensorData};
use vl3c_runtime::model::Model;
use vl3c_runtime::tensor_file::read_tensors;

const VIDEO_FIXTURES: [&str; 2] = ["video_pruned_f32", "video_bf16"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn bools(t: &Tensor) -> &[bool] {
    match &t.data {
        TensorData::Bool(v) => v,
        other => panic!("expected bool, got {:?}", other.dtype()),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape, b.shape, "shapes differ");
    a.to_f32_vec()
        .iter()
        .zip(b.to_f32_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn i64s(t: &Tensor) -> Vec<i64> {
    match &t.data {
        TensorData::I64(v) => v.clone(),
        other => panic!("expected i64, got {:?}", other.dtype()),
    }
}

/// (a) The graph's mask equals the processor's, and the fixtures really prune something.
#[test]
fn keep_mask_matches_transformers_bit_for_bit() {
    for name in VIDEO_FIXTURES {
        let dir = fixture(name);
        let inputs = read_tensors(&dir.join("inputs.safetensors")).unwrap();
        let model = Model::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let graph_inputs: HashMap<String, Tensor> = [
            ("pixel_values", "pixel_values_videos"),
            ("grid_thw", "video_grid_thw"),
            ("merge_sizes", "video_merge_sizes"),
        ]
        .into_iter()
        .map(|(to, from)| (to.to_string(), inputs[from].clone()))
        .collect();
        let out = execute(
            &model.graphs().vision_m2,
            &graph_inputs,
            &weights,
            &HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = bools(&out.outputs["keep_mask"]);
        let theirs = bools(&inputs["video_compression_mask"]);
        assert_eq!(
            ours, theirs,
            "{name}: keep_mask differs from transformers' video_compression_mask"
        );
        let kept = ours.iter().filter(|&&b| b).count();
        assert!(
            kept > 0 && kept < ours.len(),
            "{name}: the fixture should prune some tokens ({kept}/{})",
            ours.len()
        );
        eprintln!(
            "{name}: {kept}/{} tokens kept, identical to transformers",
            ours.len()
        );
    }
}

/// (b) Without `video_compression_mask` the runner uses the graph's mask: same logits (in
/// practice identical) and the same greedy tokens, with the mask and against transformers.
#[test]
fn forward_without_the_processor_mask_matches() {
    for name in VIDEO_FIXTURES {
        let dir = fixture(name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let new_tokens = meta["max_new_tokens"].as_u64().unwrap() as usize;
        let with_mask = read_tensors(&dir.join("inputs.safetensors")).unwrap();
        let mut without_mask = with_mask.clone();
        without_mask
            .remove("video_compression_mask")
            .expect("the fixture carries a mask");
        let expected = read_tensors(&dir.join("expected.safetensors")).unwrap();
        let model = Model::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));

        let given = model
            .forward(&with_mask, new_tokens)
            .unwrap_or_else(|e| panic!("{name} with mask: {e}"));
        let computed = model
            .forward(&without_mask, new_tokens)
            .unwrap_or_else(|e| panic!("{name} without mask: {e}"));

        let between = max_abs_diff(&computed.logits, &given.logits);
        let oracle = max_abs_diff(&computed.logits, &expected["logits"]);
        eprintln!("{name}: max |Δlogits| {between:.3e} against the masked run, {oracle:.3e} against transformers");
        assert!(
            between <= 1e-4,
            "{name}: logits differ from the run with the processor's mask by {between}"
        );
        assert!(
            oracle <= 1e-4,
            "{name}: logits differ from transformers by {oracle}"
        );
        let want = i64s(&expected["generated_ids"]);
        assert_eq!(
            computed.generated_ids.as_deref(),
            Some(want.as_slice()),
            "{name}: greedy tokens differ"
        );
        assert_eq!(
            computed.generated_ids, given.generated_ids,
            "{name}: greedy tokens differ between the two runs"
        );
    }
}
