//! `--target tensorrt` on a fixture: the ONNX export, one plan per graph with the profiles the
//! IR's bounds give, and `tensorrt.json` listed in the engine manifest; with `trtx-mock`, the
//! engines go through trtx's (mock) builder from the real exported graphs.

use vl3c_driver::{compile, ModelSource};
use vl3c_frontends::checkpoint::Checkpoint;
use vl3c_onnx::{MatmulPrecision, ModelInfo};
use vl3c_tensorrt::{read_manifest, Availability, TensorRtTarget};

#[test]
fn fixture_plans_profiles_and_manifest() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/video_pruned_f32");
    let ckpt = Checkpoint::open(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut target = TensorRtTarget::new(MatmulPrecision::Bf16, ModelInfo::default(), Some(128));
    compile(
        &ModelSource::checkpoint(&model, &ckpt),
        &mut target,
        dir.path(),
        &mut |_, _, _| {},
    )
    .unwrap();
    let manifest = read_manifest(dir.path()).unwrap();
    let files: Vec<&str> = manifest
        .plans
        .iter()
        .map(|p| p.plan.onnx.as_str())
        .collect();
    assert_eq!(
        files,
        [
            "vision_m1.onnx",
            "vision_m2.onnx",
            "embedding.onnx",
            "decoder.onnx"
        ]
    );
    let decoder = &manifest.plans[3];
    let names: Vec<&str> = decoder
        .plan
        .profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["prefill", "decode"]);
    let decode = &decoder.plan.profiles[1].shapes["past_key_values.0.key"];
    // [1, kv heads, past_len, head dim], past_len in 0..=max_context - 1.
    assert_eq!((decode.min[2], decode.max[2]), (0, 127));
    let prefill = &decoder.plan.profiles[0].shapes["inputs_embeds"];
    assert_eq!((prefill.min[1], prefill.max[1]), (1, 128));
    assert!(
        decoder.trtexec.contains("--profile=1"),
        "{}",
        decoder.trtexec
    );
    let engine_manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(engine_manifest.contains("tensorrt.json"));
    let mock = cfg!(feature = "trtx-mock");
    match target.availability().unwrap() {
        Availability::Built { engines, .. } => {
            assert!(mock, "TensorRT is installed here");
            assert_eq!(engines.len(), 4);
            assert!(engine_manifest.contains("decoder.plan"));
        }
        Availability::Unavailable { reason } => assert!(!mock, "the mock builds: {reason}"),
    }
}
