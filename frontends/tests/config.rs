use serde_json::{json, Value};
use vl3c_frontends::{FrontendError, Layout, ModelConfig};
use vl3c_ir::DType;

fn transformers() -> Value {
    json!({
        "model_type": "video_llama_3",
        "dtype": "float32",
        "image_token_id": 3,
        "video_token_id": 4,
        "tie_word_embeddings": true,
        "text_config": {
            "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 37,
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 99,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 512, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 2, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
            "sliding_window": null, "use_sliding_window": false, "tie_word_embeddings": true,
            "layer_types": ["full_attention", "full_attention"]
        },
        "vision_config": {
            "model_type": "video_llama_3_vision", "hidden_act": "gelu_pytorch_tanh", "hidden_size": 32,
            "intermediate_size": 64, "layer_norm_eps": 1e-6, "num_attention_heads": 4, "num_channels": 3,
            "num_hidden_layers": 2, "patch_size": 14, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}
        }
    })
}

fn damo() -> Value {
    json!({
        "model_type": "videollama3_qwen2", "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu",
        "hidden_size": 64, "intermediate_size": 96, "max_position_embeddings": 512, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_scaling": null,
        "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "use_sliding_window": false, "vocab_size": 128, "image_token_index": 120,
        "vision_encoder_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_channels": 3, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6
        }
    })
}

fn parse(v: &Value) -> Result<ModelConfig, FrontendError> {
    ModelConfig::from_json_str(&v.to_string(), "config.json")
}

fn err_of(v: &Value) -> String {
    match parse(v) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(v: &Value, needles: &[&str]) {
    let msg = err_of(v);
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not contain `{n}`");
    }
}

#[test]
fn parses_transformers_layout() {
    let c = parse(&transformers()).unwrap();
    assert_eq!(c.layout, Layout::Transformers);
    let t = &c.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers
        ),
        (99, 32, 37, 2)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (4, 2, 8)
    );
    assert_eq!(
        (t.rope_theta, t.rms_norm_eps, t.max_position_embeddings),
        (1e6, 1e-6, 512)
    );
    assert_eq!(
        (t.bos_token_id, t.eos_token_ids.clone(), t.pad_token_id),
        (Some(0), vec![1], Some(2))
    );
    let v = &c.vision;
    assert_eq!(
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads
        ),
        (32, 64, 2, 4)
    );
    assert_eq!(
        (v.head_dim, v.num_channels, v.patch_size, v.rope_theta),
        (8, 3, 14, 10000.0)
    );
    assert_eq!((c.image_token_id, c.video_token_id), (3, Some(4)));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.declared_dtype, DType::F32);
    let s = c.summary();
    assert!(
        s.contains("tied to embed_tokens") && s.contains("transformers"),
        "{s}"
    );
}

#[test]
fn parses_damo_layout() {
    let c = parse(&damo()).unwrap();
    assert_eq!(c.layout, Layout::Damo);
    assert_eq!(
        (
            c.text.hidden_size,
            c.text.head_dim,
            c.text.vocab_size,
            c.text.rope_theta
        ),
        (64, 16, 128, 1e6)
    );
    assert_eq!(
        (
            c.vision.hidden_size,
            c.vision.rope_theta,
            c.vision.patch_size
        ),
        (32, 10000.0, 14)
    );
    assert_eq!((c.image_token_id, c.video_token_id), (120, None));
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.declared_dtype, DType::BF16);
}

#[test]
fn transformers_defaults_match_the_classes() {
    let c = parse(&json!({"model_type": "video_llama_3"})).unwrap();
    let t = &c.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers
        ),
        (151936, 4096, 22016, 32)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (32, 32, 128)
    );
    assert_eq!(
        (t.rope_theta, t.rms_norm_eps, t.max_position_embeddings),
        (10000.0, 1e-6, 32768)
    );
    assert_eq!(t.hidden_act, "silu");
    assert!(t.eos_token_ids.is_empty() && t.bos_token_id.is_none());
    let v = &c.vision;
    assert_eq!(
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!(
        (
            v.num_channels,
            v.patch_size,
            v.hidden_act.as_str(),
            v.rope_theta
        ),
        (3, 16, "gelu_pytorch_tanh", 10000.0)
    );
    assert_eq!((c.image_token_id, c.video_token_id), (151655, Some(151656)));
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.declared_dtype, DType::F32);
}

#[test]
fn kv_heads_default_to_heads_and_null_means_absent() {
    let mut v = transformers();
    v["text_config"]["num_key_value_heads"] = Value::Null;
    assert_eq!(parse(&v).unwrap().text.num_key_value_heads, 4);
}

#[test]
fn legacy_rope_theta_and_precedence() {
    let mut v = transformers();
    v["text_config"]
        .as_object_mut()
        .unwrap()
        .remove("rope_parameters");
    v["text_config"]["rope_theta"] = json!(500000);
    assert_eq!(parse(&v).unwrap().text.rope_theta, 500000.0);
    v["text_config"]["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 123.0});
    assert_eq!(parse(&v).unwrap().text.rope_theta, 123.0);
    v["vision_config"]["rope_parameters"] = json!({"rope_type": "axial", "rope_theta": 777});
    assert_eq!(parse(&v).unwrap().vision.rope_theta, 777.0);
}

#[test]
fn eos_may_be_a_list_and_head_dim_explicit() {
    let mut v = transformers();
    v["text_config"]["eos_token_id"] = json!([1, 5]);
    v["text_config"]["head_dim"] = json!(16);
    let c = parse(&v).unwrap();
    assert_eq!(c.text.eos_token_ids, vec![1, 5]);
    assert_eq!(c.text.head_dim, 16);
    // explicit head_dim lifts the divisibility requirement
    v["text_config"]["hidden_size"] = json!(30);
    assert_eq!(parse(&v).unwrap().text.head_dim, 16);
}

#[test]
fn tying_is_forced_by_text_config_and_top_level() {
    let mut v = transformers();
    v["tie_word_embeddings"] = json!(false);
    assert!(
        parse(&v).unwrap().tie_word_embeddings,
        "text_config tie forces the top level"
    );
    v["text_config"]["tie_word_embeddings"] = json!(false);
    assert!(!parse(&v).unwrap().tie_word_embeddings);
    v["tie_word_embeddings"] = json!(true);
    assert!(parse(&v).unwrap().tie_word_embeddings);
}

#[test]
fn dtype_sources() {
    let mut v = transformers();
    v.as_object_mut().unwrap().remove("dtype");
    assert_eq!(parse(&v).unwrap().declared_dtype, DType::F32);
    v["text_config"]["torch_dtype"] = json!("float16");
    assert_eq!(parse(&v).unwrap().declared_dtype, DType::F16);
    v["torch_dtype"] = json!("bfloat16");
    assert_eq!(parse(&v).unwrap().declared_dtype, DType::BF16);
    v["dtype"] = json!("float64");
    assert_err(
        &v,
        &[
            "config.json: dtype is \"float64\"",
            "float32, bfloat16 and float16",
        ],
    );
}

#[test]
fn error_unknown_or_missing_model_type() {
    assert_err(
        &json!({"model_type": "llava"}),
        &["config.json: unknown model_type `llava`", "video_llama_3"],
    );
    assert_err(
        &json!({"text_config": {}}),
        &["config.json: missing required field model_type"],
    );
    assert_err(
        &json!([1, 2]),
        &["config.json: the top level must be a JSON object"],
    );
    let mut v = transformers();
    v["text_config"]["model_type"] = json!("llama");
    assert_err(&v, &["text_config.model_type is `llama`"]);
}

#[test]
fn error_damo_missing_required_fields() {
    let mut v = damo();
    v.as_object_mut().unwrap().remove("hidden_size");
    assert_err(&v, &["config.json: missing required field hidden_size"]);
    let mut v = damo();
    v.as_object_mut().unwrap().remove("vision_encoder_config");
    assert_err(
        &v,
        &["config.json: missing required field vision_encoder_config"],
    );
    let mut v = damo();
    v.as_object_mut().unwrap().remove("image_token_index");
    assert_err(
        &v,
        &["config.json: missing required field image_token_index"],
    );
}

#[test]
fn error_non_positive_or_wrongly_typed_sizes() {
    let mut v = transformers();
    v["text_config"]["num_hidden_layers"] = json!(0);
    assert_err(
        &v,
        &["config.json: text_config.num_hidden_layers must be a positive integer, got 0"],
    );
    let mut v = transformers();
    v["vision_config"]["patch_size"] = json!(-14);
    assert_err(
        &v,
        &["vision_config.patch_size must be a positive integer, got -14"],
    );
    let mut v = transformers();
    v["vision_config"]["hidden_size"] = json!("32");
    assert_err(
        &v,
        &["vision_config.hidden_size must be a positive integer"],
    );
    let mut v = damo();
    v["rms_norm_eps"] = json!(-1.0);
    assert_err(&v, &["rms_norm_eps must be a positive number"]);
    let mut v = transformers();
    v["image_token_id"] = json!(-3);
    assert_err(&v, &["image_token_id must be a non-negative token id"]);
}

#[test]
fn error_head_divisibility() {
    let mut v = transformers();
    v["text_config"]["hidden_size"] = json!(30);
    assert_eq!(
        err_of(&v),
        "config.json: text_config.hidden_size (30) is not divisible by num_attention_heads (4)"
    );
    let mut v = transformers();
    v["text_config"]["num_key_value_heads"] = json!(3);
    assert_err(&v, &["config.json: text_config.num_attention_heads (4) is not divisible by num_key_value_heads (3)"]);
    let mut v = damo();
    v["vision_encoder_config"]["hidden_size"] = json!(30);
    assert_err(
        &v,
        &["vision_encoder_config.hidden_size (30) is not divisible by num_attention_heads (4)"],
    );
}

#[test]
fn error_vision_head_dim_not_multiple_of_four() {
    let mut v = transformers();
    v["vision_config"]["hidden_size"] = json!(24); // head_dim 6: even, but 6/2 odd
    assert_err(
        &v,
        &[
            "vision_config.head_dim",
            "= 6) must be divisible by 4",
            "2-D rotary",
        ],
    );
    v["vision_config"]["hidden_size"] = json!(20); // head_dim 5: odd
    assert_err(&v, &["= 5) must be divisible by 4"]);
}

#[test]
fn error_unsupported_activations() {
    let mut v = transformers();
    v["vision_config"]["hidden_act"] = json!("gelu");
    assert_err(
        &v,
        &[
            "config.json: vision_config.hidden_act `gelu` is not supported",
            "gelu_pytorch_tanh",
        ],
    );
    let mut v = damo();
    v["hidden_act"] = json!("relu");
    assert_err(
        &v,
        &["config.json: hidden_act `relu` is not supported", "silu"],
    );
    let mut v = transformers();
    v["vision_config"]["hidden_act"] = json!("gelu_new");
    parse(&v).unwrap();
}

#[test]
fn error_sliding_window_and_scaled_rope() {
    let mut v = transformers();
    v["text_config"]["use_sliding_window"] = json!(true);
    assert_err(
        &v,
        &[
            "text_config.use_sliding_window is true",
            "not supported yet",
        ],
    );
    let mut v = transformers();
    v["text_config"]["layer_types"] = json!(["full_attention", "sliding_attention"]);
    assert_err(
        &v,
        &[
            "text_config.layer_types contains \"sliding_attention\"",
            "not supported yet",
        ],
    );
    let mut v = damo();
    v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
    assert_err(
        &v,
        &["rope_scaling.rope_type is `yarn`", "only `default` RoPE"],
    );
    let mut v = transformers();
    v["text_config"]["rope_parameters"] =
        json!({"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0});
    assert_err(&v, &["text_config.rope_parameters.rope_type is `linear`"]);
}

#[test]
fn error_token_outside_vocab() {
    let mut v = transformers();
    v["video_token_id"] = json!(99);
    assert_err(&v, &["config.json: video_token_id (99) is outside the vocabulary (text_config.vocab_size 99)"]);
    let mut v = damo();
    v["image_token_index"] = json!(500);
    assert_err(
        &v,
        &["image_token_index (500) is outside the vocabulary (vocab_size 128)"],
    );
}

#[test]
fn error_invalid_json_has_line_and_column() {
    let e = ModelConfig::from_json_str(
        "{\n  \"model_type\": \"video_llama_3\",\n  oops\n}",
        "dir/config.json",
    )
    .unwrap_err();
    match &e {
        FrontendError::Json { line, column, .. } => assert_eq!((*line, *column), (3, 3)),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with("dir/config.json: invalid JSON at line 3, column 3: "),
        "{msg}"
    );
    assert!(!msg.ends_with("column 3"), "location said twice: {msg}");
}

#[test]
fn from_dir_reports_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let e = ModelConfig::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, FrontendError::MissingConfig { .. }));
    assert!(e.to_string().contains("no config.json found"), "{e}");
    std::fs::write(dir.path().join("config.json"), damo().to_string()).unwrap();
    assert_eq!(
        ModelConfig::from_dir(dir.path()).unwrap().layout,
        Layout::Damo
    );
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"x\"}").unwrap();
    let e = ModelConfig::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}: unknown model_type",
            dir.path().join("config.json").display()
        )),
        "{e}"
    );
}

#[test]
fn fixture_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let entries = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let mut parsed = 0;
    for entry in entries {
        let path = entry.unwrap().path().join("config.json");
        if !path.is_file() {
            continue;
        }
        parsed += 1;
        let c = ModelConfig::from_dir(path.parent().unwrap()).unwrap_or_else(|e| panic!("{e}"));
        let meta: Value = std::fs::read_to_string(path.with_file_name("meta.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if let Some(layout) = meta["layout"].as_str() {
            assert_eq!(
                c.layout == Layout::Damo,
                layout == "damo",
                "{}",
                path.display()
            );
        }
        if let Some(tied) = meta["tied_lm_head"].as_bool() {
            assert_eq!(c.tie_word_embeddings, tied, "{}", path.display());
        }
        if let Some(id) = meta["image_token_id"].as_u64() {
            assert_eq!(c.image_token_id as u64, id, "{}", path.display());
        }
    }
    assert!(parsed > 0, "no fixture configs under {}", root.display());
}

#[test]
fn videollama3_2b_weight_count_matches_the_published_file_size() {
    let mut v = damo();
    let o = v.as_object_mut().unwrap();
    for (k, x) in [
        ("hidden_size", 1536),
        ("intermediate_size", 8960),
        ("num_hidden_layers", 28),
        ("num_attention_heads", 12),
        ("num_key_value_heads", 2),
        ("vocab_size", 151936),
        ("image_token_index", 151665),
    ] {
        o.insert(k.into(), json!(x));
    }
    o.insert("tie_word_embeddings".into(), json!(true));
    o.insert(
        "vision_encoder_config".into(),
        json!({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
               "num_attention_heads": 16, "patch_size": 14}),
    );
    let c = parse(&v).unwrap();
    assert_eq!((c.text.head_dim, c.vision.head_dim), (128, 72));
    let weights = vl3c_frontends::expected_weights(&c);
    assert_eq!(weights.len(), 2 + 27 * 16 + 2 + 4 + 1 + 28 * 12 + 1);
    // model.safetensors of VideoLLaMA3-2B is 3.92 GB of bf16 (spec §1.3).
    let params = c.num_parameters() as f64;
    assert!((params * 2.0 - 3.92e9).abs() < 0.02e9, "{params}");
}
