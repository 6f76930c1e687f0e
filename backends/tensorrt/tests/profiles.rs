use std::collections::BTreeMap;

use vl3c_ir::{Bounds, Dim};
use vl3c_tensorrt::{
    decoder_specs, profiles, read_manifest, trtexec_command, write_manifest, Availability,
    EnginePlan, Error, InputShape, ProfileSpec, ShapeRange, SymbolRange,
};

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn c(v: i64) -> Dim {
    Dim::from(v)
}

fn bounds(list: &[(&str, i64, i64)]) -> BTreeMap<String, Bounds> {
    list.iter()
        .map(|&(s, min, max)| (s.to_string(), Bounds { min, max }))
        .collect()
}

fn range(min: &[i64], opt: &[i64], max: &[i64]) -> ShapeRange {
    ShapeRange {
        min: min.to_vec(),
        opt: opt.to_vec(),
        max: max.to_vec(),
    }
}

/// The decoder's inputs as the ONNX export names them, one layer of KV cache.
fn decoder_inputs() -> Vec<InputShape> {
    vec![
        InputShape::new("inputs_embeds", [c(1), sym("seq_len"), c(1536)]),
        InputShape::new("attention_mask", [c(1), sym("past_len") + sym("seq_len")]),
        InputShape::new("position_ids", [c(1), sym("seq_len")]),
        InputShape::new(
            "past_key_values.0.key",
            [c(1), c(2), sym("past_len"), c(128)],
        ),
        InputShape::new(
            "past_key_values.0.value",
            [c(1), c(2), sym("past_len"), c(128)],
        ),
    ]
}

fn decoder_plan() -> EnginePlan {
    let ir = bounds(&[("seq_len", 1, 4096), ("past_len", 0, 4095)]);
    EnginePlan {
        onnx: "decoder.onnx".into(),
        engine: "decoder.plan".into(),
        profiles: profiles(&decoder_inputs(), &ir, &decoder_specs(4096)).unwrap(),
    }
}

#[test]
fn decoder_prefill_and_decode_profiles() {
    let plan = decoder_plan();
    let [prefill, decode] = &plan.profiles[..] else {
        panic!("two profiles expected: {:?}", plan.profiles)
    };
    assert_eq!(prefill.name, "prefill");
    // seq_len's opt is the midpoint of 1..=4096; past_len = 0 makes the KV cache an empty tensor.
    assert_eq!(
        prefill.shapes["inputs_embeds"],
        range(&[1, 1, 1536], &[1, 2048, 1536], &[1, 4096, 1536])
    );
    assert_eq!(
        prefill.shapes["attention_mask"],
        range(&[1, 1], &[1, 2048], &[1, 4096])
    );
    assert_eq!(
        prefill.shapes["past_key_values.0.key"],
        range(&[1, 2, 0, 128], &[1, 2, 0, 128], &[1, 2, 0, 128])
    );
    assert_eq!(
        prefill.symbols["past_len"],
        SymbolRange {
            min: 0,
            opt: 0,
            max: 0
        }
    );

    assert_eq!(decode.name, "decode");
    assert_eq!(
        decode.shapes["position_ids"],
        range(&[1, 1], &[1, 1], &[1, 1])
    );
    assert_eq!(
        decode.shapes["attention_mask"],
        range(&[1, 1], &[1, 2048], &[1, 4096])
    );
    assert_eq!(
        decode.shapes["past_key_values.0.value"],
        range(&[1, 2, 0, 128], &[1, 2, 2047, 128], &[1, 2, 4095, 128])
    );
    assert_eq!(
        decode.symbols["seq_len"],
        SymbolRange {
            min: 1,
            opt: 1,
            max: 1
        }
    );
}

#[test]
fn profile_bounds_only_narrow_the_ir_bounds() {
    let ir = bounds(&[("seq_len", 1, 1024), ("past_len", 0, 1023)]);
    let p = profiles(&decoder_inputs(), &ir, &decoder_specs(100_000)).unwrap();
    assert_eq!(
        p[0].symbols["seq_len"],
        SymbolRange {
            min: 1,
            opt: 512,
            max: 1024
        }
    );
    assert_eq!(p[1].shapes["attention_mask"].max, vec![1, 1024]);
}

#[test]
fn stated_opt_values_are_used() {
    let ir = bounds(&[("seq_len", 1, 4096), ("past_len", 0, 4095)]);
    let spec = ProfileSpec::new("decode")
        .fix("seq_len", 1)
        .opt("past_len", 300);
    let p = profiles(&decoder_inputs(), &ir, &[spec]).unwrap();
    assert_eq!(p[0].shapes["attention_mask"].opt, vec![1, 301]);
}

#[test]
fn products_and_floor_divisions() {
    // Embedding graph: merged patches are `n_patches // 4`, video tokens `frames * per_frame`.
    let ir = bounds(&[
        ("seq_len", 1, 4096),
        ("n_patches", 4, 16384),
        ("frames", 0, 180),
        ("per_frame", 16, 256),
    ]);
    let inputs = [
        InputShape::new("input_ids", [c(1), sym("seq_len")]),
        InputShape::new(
            "image_features",
            [sym("n_patches").floor_div(4i64), c(1536)],
        ),
        InputShape::new(
            "video_features",
            [sym("frames") * sym("per_frame"), c(1536)],
        ),
        InputShape::new("video_compression_mask", [sym("frames") * sym("per_frame")]),
    ];
    let p = profiles(&inputs, &ir, &[ProfileSpec::new("default")]).unwrap();
    assert_eq!(
        p[0].shapes["image_features"],
        range(&[1, 1536], &[2048, 1536], &[4096, 1536])
    );
    // frames may be 0 (no video): an empty tensor at min.
    assert_eq!(
        p[0].shapes["video_compression_mask"],
        range(&[0], &[90 * 136], &[180 * 256])
    );
}

#[test]
fn static_inputs_are_left_to_tensorrt() {
    let ir = bounds(&[("n", 1, 8)]);
    let inputs = [
        InputShape::new("table", [c(4), c(8)]),
        InputShape::new("x", [sym("n")]),
    ];
    let p = profiles(&inputs, &ir, &[ProfileSpec::new("default")]).unwrap();
    assert_eq!(p[0].shapes.keys().collect::<Vec<_>>(), ["x"]);
    assert!(profiles(&inputs[..1], &ir, &[ProfileSpec::new("default")])
        .unwrap()
        .is_empty());
}

#[test]
fn unbounded_symbol_is_named() {
    let ir = bounds(&[("seq_len", 1, 4096)]);
    let inputs = [InputShape::new(
        "image_features",
        [sym("n_merged"), c(1536)],
    )];
    let err = profiles(&inputs, &ir, &[ProfileSpec::new("default")]).unwrap_err();
    assert!(
        matches!(&err, Error::Unbounded { symbol, input, axis: 0, .. } if symbol == "n_merged" && input == "image_features"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`n_merged`, which has no bounds"),
        "{err}"
    );
    // Bounding it in the profile is enough.
    let spec = ProfileSpec::new("default").bound("n_merged", 1, 64);
    assert_eq!(
        profiles(&inputs, &ir, &[spec]).unwrap()[0].shapes["image_features"].max,
        vec![64, 1536]
    );
}

#[test]
fn inconsistent_specs_are_errors() {
    let ir = bounds(&[("seq_len", 1, 4096), ("past_len", 0, 4095)]);
    let inputs = decoder_inputs();
    let run = |spec: ProfileSpec| profiles(&inputs, &ir, &[spec]).unwrap_err();

    let typo = run(ProfileSpec::new("p").fix("seq_length", 1));
    assert!(
        matches!(&typo, Error::UnknownSymbol { symbol, .. } if symbol == "seq_length"),
        "{typo:?}"
    );
    let pinned = run(ProfileSpec::new("p").fix("seq_len", 0));
    assert!(
        matches!(
            pinned,
            Error::Pinned {
                value: 0,
                min: 1,
                max: 4096,
                ..
            }
        ),
        "{pinned:?}"
    );
    let empty = run(ProfileSpec::new("p").bound("past_len", 5000, 6000));
    assert!(
        matches!(
            empty,
            Error::EmptyRange {
                min: 5000,
                max: 4095,
                ..
            }
        ),
        "{empty:?}"
    );
    let opt = run(ProfileSpec::new("p").fix("seq_len", 1).opt("seq_len", 2));
    assert!(
        matches!(
            opt,
            Error::OptOutOfRange {
                value: 2,
                min: 1,
                max: 1,
                ..
            }
        ),
        "{opt:?}"
    );

    let none = profiles(&inputs, &ir, &[]).unwrap_err();
    assert!(
        matches!(&none, Error::NoProfile(n) if n == "inputs_embeds"),
        "{none:?}"
    );
    let twice = profiles(
        &inputs,
        &ir,
        &[ProfileSpec::new("p"), ProfileSpec::new("p")],
    )
    .unwrap_err();
    assert!(
        matches!(&twice, Error::DuplicateProfile(n) if n == "p"),
        "{twice:?}"
    );
}

#[test]
fn negative_extents_are_rejected() {
    let ir = bounds(&[("n", 0, 10)]);
    let inputs = [InputShape::new("x", [sym("n") + c(-2)])];
    let err = profiles(&inputs, &ir, &[ProfileSpec::new("p")]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Negative {
                min: -2,
                axis: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // Once n >= 2 holds in the profile, the same axis is fine.
    let ok = profiles(&inputs, &ir, &[ProfileSpec::new("p").bound("n", 2, 10)]).unwrap();
    assert_eq!(ok[0].shapes["x"], range(&[0], &[4], &[8]));
}

#[test]
fn inputs_tensorrt_or_trtexec_cannot_take() {
    let ir = bounds(&[("n", 1, 2)]);
    let deep = [InputShape::new("x", vec![sym("n"); 9])];
    assert!(matches!(
        profiles(&deep, &ir, &[]),
        Err(Error::Rank { rank: 9, .. })
    ));
    let comma = [InputShape::new("a,b", [sym("n")])];
    assert!(matches!(
        profiles(&comma, &ir, &[]),
        Err(Error::InputName(_))
    ));
}

#[test]
fn trtexec_commands() {
    insta::assert_snapshot!("decoder", trtexec_command(&decoder_plan()));
    let ir = bounds(&[("n_patches", 16, 16384)]);
    let vision = EnginePlan {
        onnx: "vision_m1.onnx".into(),
        engine: "vision_m1.plan".into(),
        profiles: profiles(
            &[InputShape::new("pixel_values", [sym("n_patches"), c(588)])],
            &ir,
            &[ProfileSpec::new("default").opt("n_patches", 1024)],
        )
        .unwrap(),
    };
    insta::assert_snapshot!("vision_single_profile", trtexec_command(&vision));
    let fixed = EnginePlan {
        profiles: Vec::new(),
        ..vision
    };
    assert_eq!(
        trtexec_command(&fixed),
        "trtexec --onnx=vision_m1.onnx --saveEngine=vision_m1.plan --stronglyTyped --skipInference"
    );
}

#[test]
fn trtexec_quotes_odd_names() {
    let ir = bounds(&[("n", 1, 3)]);
    let plan = EnginePlan {
        onnx: "my model.onnx".into(),
        engine: "m.plan".into(),
        profiles: profiles(
            &[InputShape::new("in:0", [sym("n")])],
            &ir,
            &[ProfileSpec::new("p")],
        )
        .unwrap(),
    };
    assert_eq!(
        trtexec_command(&plan),
        r"trtexec '--onnx=my model.onnx' --saveEngine=m.plan --stronglyTyped --skipInference '--minShapes='\''in:0'\'':1' '--optShapes='\''in:0'\'':2' '--maxShapes='\''in:0'\'':3'"
    );
}

#[test]
fn manifest_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let plans = [decoder_plan()];
    let unavailable = Availability::Unavailable {
        reason: "cannot load TensorRT: tried libnvinfer.so.11".into(),
    };
    write_manifest(dir.path(), &plans, &unavailable).unwrap();
    let m = read_manifest(dir.path()).unwrap();
    assert_eq!(m.availability, unavailable);
    assert_eq!(m.plans[0].plan, plans[0]);
    assert!(!m.plans[0].built);
    assert_eq!(m.plans[0].trtexec, trtexec_command(&plans[0]));
    let line = unavailable.to_string();
    assert!(
        !line.contains('\n') && line.contains("tensorrt.json"),
        "{line}"
    );

    let built = Availability::Built {
        tensorrt: "TensorRT 11.4".into(),
        engines: vec!["decoder.plan".into()],
    };
    write_manifest(dir.path(), &plans, &built).unwrap();
    let m = read_manifest(dir.path()).unwrap();
    assert!(m.plans[0].built);
    let text = std::fs::read_to_string(dir.path().join("tensorrt.json")).unwrap();
    assert!(text.contains("\"status\": \"built\""), "{text}");
}
