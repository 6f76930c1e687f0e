//! Lowering from configuration alone: graphs exist for every fixture config and the real 2B/7B
//! configs, reference exactly the weights the checkpoint must hold, and keep attention primitive.

use std::collections::BTreeSet;
use std::path::Path;
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::{expected_weights, ModelConfig};

fn fixture_configs() -> Vec<(String, ModelConfig)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("config.json").exists() {
            out.push((
                dir.display().to_string(),
                ModelConfig::from_dir(&dir).unwrap(),
            ));
        }
    }
    assert!(out.len() >= 5, "fixtures missing");
    out
}

const CONFIG_7B: &str = r#"{
  "model_type": "video_llama_3", "dtype": "bfloat16", "image_token_id": 151655, "video_token_id": 151656,
  "text_config": {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu",
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false},
  "vision_config": {"model_type": "video_llama_3_vision", "hidden_size": 1152, "intermediate_size": 4304,
    "num_hidden_layers": 27, "num_attention_heads": 16, "num_channels": 3, "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06}
}"#;

fn referenced_weights(graphs: &ModelGraphs) -> BTreeSet<String> {
    graphs
        .all()
        .iter()
        .flat_map(|g| {
            g.weights()
                .map(|(_, n, _)| n.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check(name: &str, cfg: &ModelConfig) {
    let graphs = ModelGraphs::from_config(cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
    for g in graphs.all() {
        g.verify()
            .unwrap_or_else(|e| panic!("{name}/{}: {e}", g.name));
    }
    let expected: BTreeSet<String> = expected_weights(cfg).into_iter().map(|w| w.name).collect();
    assert_eq!(
        referenced_weights(&graphs),
        expected,
        "{name}: graphs and checkpoint disagree on the weights"
    );

    // One softmax (its max-reduction) per attention layer, and no fused ops: fusion is the optimizer's.
    let softmaxes = |g: &vl3c_ir::Graph| g.op_counts().get("reduce_max").copied().unwrap_or(0);
    assert_eq!(softmaxes(&graphs.vision_m1), cfg.vision.num_hidden_layers);
    assert_eq!(softmaxes(&graphs.vision_m2), cfg.vision.num_hidden_layers);
    assert_eq!(softmaxes(&graphs.prefill), cfg.text.num_hidden_layers);
    assert_eq!(softmaxes(&graphs.decode), cfg.text.num_hidden_layers);
    assert_eq!(
        graphs.decode.op_counts().get("cache_append"),
        Some(&(2 * cfg.text.num_hidden_layers))
    );
    assert!(
        !graphs.decode.op_counts().contains_key("masked_scatter"),
        "decode carries no images"
    );
}

#[test]
fn fixture_configs_lower_and_verify() {
    for (name, cfg) in fixture_configs() {
        check(&name, &cfg);
    }
}

#[test]
fn real_7b_config_lowers_and_verifies() {
    let cfg = ModelConfig::from_json_str(CONFIG_7B, "7b/config.json").unwrap();
    check("7b", &cfg);
    let graphs = ModelGraphs::from_config(&cfg).unwrap();
    let logits = graphs.prefill.output("logits").unwrap();
    assert_eq!(
        graphs.prefill.ty(logits).to_string(),
        "bf16[1, seq_len, 152064]".replace("bf16", "f32")
    );
}

#[test]
fn merge_two_states_divisibility_in_the_input_shape() {
    let (_, cfg) = &fixture_configs()[0];
    let graphs = ModelGraphs::from_config(cfg).unwrap();
    let (_, _, pixels) = graphs
        .vision_m2
        .inputs()
        .find(|(_, n, _)| *n == "pixel_values")
        .unwrap();
    assert_eq!(pixels.shape[0].to_string(), "4*n_merged");
    let features = graphs.vision_m2.output("features").unwrap();
    assert_eq!(
        graphs.vision_m2.ty(features).shape[0].to_string(),
        "n_merged"
    );
}

/// Symbol bounds follow the processors' pixel limits: transformers' class defaults give 5120
/// patches per image (1003520 px / 14²) and 3072 per video (602112 px shared by its frames).
#[test]
fn vision_symbol_bounds_come_from_pixel_limits() {
    let mut cfg = ModelConfig::from_json_str(CONFIG_7B, "7b/config.json").unwrap();
    let per_call = vl3c_frontends::lower::MAX_ENTRIES_PER_CALL;
    let graphs = ModelGraphs::from_config(&cfg).unwrap();
    assert_eq!(
        graphs.vision_m1.symbol_bounds("n_merged").unwrap().max,
        per_call * 5120
    );
    assert_eq!(
        graphs.vision_m2.symbol_bounds("n_merged").unwrap().max,
        per_call * 3072 / 4
    );
    cfg.vision_limits = vl3c_frontends::VisionLimits::from_pixels(14 * 14 * 100, 14 * 14 * 40, 14);
    let graphs = ModelGraphs::from_config(&cfg).unwrap();
    assert_eq!(
        graphs.vision_m1.symbol_bounds("n_merged").unwrap().max,
        per_call * 100
    );
    assert_eq!(
        graphs.vision_m2.symbol_bounds("n_merged").unwrap().max,
        per_call * 10
    );
}
