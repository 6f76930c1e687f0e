//! `build_engines` end to end. With `--features trtx-mock` it runs trtx's mock builder (no
//! TensorRT, no GPU); without it, it checks the line a machine without TensorRT gets.

use std::collections::BTreeMap;
use std::path::Path;

use vl3c_ir::{Bounds, Dim};
use vl3c_tensorrt::{
    build_engines, decoder_specs, profiles, read_manifest, write_manifest, Availability,
    EnginePlan, InputShape,
};

fn plans(dir: &Path) -> Vec<EnginePlan> {
    let ir = BTreeMap::from([
        ("seq_len".to_string(), Bounds { min: 1, max: 64 }),
        ("past_len".to_string(), Bounds { min: 0, max: 63 }),
    ]);
    let inputs = [
        InputShape::new(
            "inputs_embeds",
            [Dim::from(1i64), Dim::sym("seq_len"), Dim::from(8i64)],
        ),
        InputShape::new(
            "attention_mask",
            [Dim::from(1i64), Dim::sym("past_len") + Dim::sym("seq_len")],
        ),
    ];
    // trtx's mock parser accepts any bytes; the file only has to exist.
    std::fs::write(dir.join("decoder.onnx"), b"not parsed by the mock").unwrap();
    vec![EnginePlan {
        onnx: "decoder.onnx".into(),
        engine: "decoder.plan".into(),
        profiles: profiles(&inputs, &ir, &decoder_specs(64)).unwrap(),
    }]
}

#[cfg(feature = "trtx-mock")]
#[test]
fn mock_build_writes_plans_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let plans = plans(dir.path());
    let availability = build_engines(dir.path(), &plans).unwrap();
    let Availability::Built { engines, .. } = &availability else {
        panic!("{availability}")
    };
    assert_eq!(engines, &["decoder.plan"]);
    // The mock's serialized engine is empty: the file proves the write path, not TensorRT.
    assert!(dir.path().join("decoder.plan").is_file());
    write_manifest(dir.path(), &plans, &availability).unwrap();
    let manifest = read_manifest(dir.path()).unwrap();
    assert!(manifest.plans[0].built);
    assert_eq!(manifest.plans[0].plan.profiles.len(), 2);
}

#[cfg(feature = "trtx-mock")]
#[test]
fn mock_build_reports_a_missing_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let mut plans = plans(dir.path());
    plans[0].onnx = "absent.onnx".into();
    let err = build_engines(dir.path(), &plans).unwrap_err();
    assert!(err.to_string().contains("absent.onnx"), "{err}");
}

/// Run where TensorRT is not installed (CI, this repository's development machines).
#[cfg(not(feature = "trtx-mock"))]
#[test]
fn without_tensorrt_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let plans = plans(dir.path());
    let availability = build_engines(dir.path(), &plans).unwrap();
    let Availability::Unavailable { reason } = &availability else {
        panic!("TensorRT is installed here; this test is for machines without it: {availability}")
    };
    let line = availability.to_string();
    eprintln!("{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(reason.contains("libnvinfer.so.11"), "{reason}");
    if cfg!(feature = "trtx") {
        // The dlopen error of the last name tried says why.
        assert!(
            reason.contains("tried libnvinfer.so.11, libnvinfer.so"),
            "{reason}"
        );
        assert!(reason.contains("libnvinfer.so:"), "{reason}");
    } else {
        assert!(reason.contains("without the `trtx` feature"), "{reason}");
    }
    assert!(!dir.path().join("decoder.plan").exists());
    write_manifest(dir.path(), &plans, &availability).unwrap();
    assert!(!read_manifest(dir.path()).unwrap().plans[0].built);
}
