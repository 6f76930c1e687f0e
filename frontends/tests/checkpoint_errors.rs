//! Every way a checkpoint can be broken gives an error naming the file and the tensor.
mod common;

use common::*;
use safetensors::Dtype;
use serde_json::{json, Value};
use vl3c_frontends::names;
use vl3c_frontends::{Checkpoint, FrontendError, Layout};

#[test]
fn error_missing_config() {
    let (dir, _, _) = valid(Layout::Transformers, true, 1);
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, FrontendError::MissingConfig { .. }), "{msg}");
    assert_has(&msg, &["no config.json found"]);
}

#[test]
fn error_invalid_config_json() {
    let (dir, _, _) = valid(Layout::Transformers, true, 1);
    std::fs::write(
        dir.path().join("config.json"),
        "{\n \"model_type\": \"video_llama_3\",,\n}",
    )
    .unwrap();
    let (_, msg) = open_err(dir.path());
    assert_has(&msg, &["config.json: invalid JSON at line 2, column"]);
}

#[test]
fn error_no_weights() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &config_json(Layout::Damo, true));
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, FrontendError::NoWeights { .. }), "{msg}");
}

#[test]
fn error_missing_tensor_names_file_tensor_and_part() {
    let dir = with_modified(Layout::Transformers, true, |ts| {
        ts.retain(|t| t.name != names::LLM_NORM)
    });
    let (_, msg) = open_err(dir.path());
    assert_has(&msg, &["model.safetensors: missing tensor `model.language_model.norm.weight` (needed by the LLM)"]);

    let dir = with_modified(Layout::Damo, true, |ts| {
        ts.retain(|t| !t.name.starts_with("model.mm_projector."))
    });
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &[
            "model.safetensors: missing tensor `model.mm_projector.readout.0.weight`",
            "canonical name `model.projector.readout.0.weight`, needed by the projector",
            "and 3 more missing tensors",
        ],
    );
}

#[test]
fn error_missing_lm_head_when_untied() {
    let dir = with_modified(Layout::Transformers, false, |ts| {
        ts.retain(|t| t.name != names::LM_HEAD)
    });
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["missing tensor `lm_head.weight` (needed by the LLM)"],
    );
}

#[test]
fn error_missing_tensor_in_sharded_names_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_json(Layout::Damo, false);
    let mut ts = tensors_for(&cfg, Dtype::F32);
    ts.retain(|t| t.name != "model.layers.1.mlp.up_proj.weight");
    write_ckpt(dir.path(), &cfg, &ts, 2);
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["model.safetensors.index.json: missing tensor `model.layers.1.mlp.up_proj.weight`"],
    );
}

#[test]
fn error_mis_shaped_tensor() {
    let name = "model.language_model.layers.0.self_attn.k_proj.weight";
    let dir = with_modified(Layout::Transformers, true, |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.shape = vec![16, 8]; // same byte size, wrong shape
    });
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &[
            &format!("model.safetensors: tensor `{name}` has shape [16, 8] but "),
            "config.json implies [8, 16]",
        ],
    );
}

#[test]
fn error_unsupported_dtypes() {
    for (dtype, label, elem) in [
        (Dtype::F64, "F64", 8),
        (Dtype::I8, "I8", 1),
        (Dtype::I64, "I64", 8),
    ] {
        let dir = with_modified(Layout::Damo, true, |ts| {
            let t = ts
                .iter_mut()
                .find(|t| t.name == "model.norm.weight")
                .unwrap();
            t.dtype = dtype;
            t.data = vec![0; t.shape.iter().product::<usize>() * elem];
        });
        let (_, msg) = open_err(dir.path());
        assert_has(&msg, &[&format!(
            "model.safetensors: tensor `model.norm.weight` has dtype {label}, which vl3c does not support (expected F32, F16 or BF16)"
        )]);
    }
}

#[test]
fn error_layer_beyond_config() {
    let dir = with_modified(Layout::Damo, false, |ts| {
        let t = ts
            .iter()
            .find(|t| t.name == "model.layers.1.mlp.up_proj.weight")
            .unwrap()
            .clone();
        ts.push(T {
            name: "model.layers.2.mlp.up_proj.weight".into(),
            ..t
        });
    });
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &[
            "model.safetensors: tensor `model.layers.2.mlp.up_proj.weight` belongs to LLM layer 2",
            "config.json says LLM has 2 layers",
        ],
    );
    let dir = with_modified(Layout::Transformers, true, |ts| {
        let t = ts
            .iter()
            .find(|t| t.name == names::vision_layer(0, "mlp.fc1.bias"))
            .unwrap()
            .clone();
        ts.push(T {
            name: names::vision_layer(7, "mlp.fc1.bias"),
            ..t
        });
    });
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["`model.vision_model.encoder.layers.7.mlp.fc1.bias` belongs to vision encoder layer 7"],
    );
}

#[test]
fn error_truncated_files() {
    let (_, msg) = open_err(raw_bytes_ckpt(&[1, 2, 3]).path());
    assert_has(
        &msg,
        &["model.safetensors: truncated file: the file is 3 bytes, shorter than the 8-byte"],
    );

    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let (_, msg) = open_err(raw_bytes_ckpt(&bytes).path());
    assert_has(&msg, &["model.safetensors: truncated file: the header length prefix says 1000 bytes, but only 2 bytes follow it"]);

    let h = json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}});
    let (e, msg) = open_err(raw_ckpt(&h, 8).path());
    assert!(matches!(e, FrontendError::Truncated { .. }), "{msg}");
    assert_has(&msg, &["model.safetensors: truncated file: tensor `a` has data_offsets [0, 16], past the end of the data section (8 bytes)"]);

    // A real file cut short: the last tensors' data is gone.
    let (dir, _, _) = valid(Layout::Damo, false, 1);
    let path = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &[
            "model.safetensors: truncated file: tensor `",
            "past the end of the data section",
        ],
    );
}

#[test]
fn error_malformed_headers() {
    let mut bytes = 9u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": [1,");
    let (_, msg) = open_err(raw_bytes_ckpt(&bytes).path());
    assert_has(
        &msg,
        &["model.safetensors: malformed safetensors header: invalid JSON at line 1, column"],
    );

    let (_, msg) = open_err(raw_ckpt(&json!([1, 2]), 0).path());
    assert_has(
        &msg,
        &["malformed safetensors header: the header is not a JSON object"],
    );

    let (_, msg) = open_err(raw_ckpt(&json!({"w": {"dtype": "F32", "shape": [2]}}), 8).path());
    assert_has(
        &msg,
        &["malformed safetensors header: tensor `w`: `data_offsets` must be"],
    );

    let (_, msg) =
        open_err(raw_ckpt(&json!({"w": {"shape": [2], "data_offsets": [0, 8]}}), 8).path());
    assert_has(&msg, &["tensor `w`: missing or non-string `dtype`"]);

    let (_, msg) = open_err(
        raw_ckpt(
            &json!({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}),
            8,
        )
        .path(),
    );
    assert_has(
        &msg,
        &["tensor `w`: `shape` must be a list of non-negative integers"],
    );

    let (_, msg) = open_err(
        raw_ckpt(
            &json!({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}),
            8,
        )
        .path(),
    );
    assert_has(
        &msg,
        &["tensor `w`: data_offsets [8, 0] end before they begin"],
    );

    let h = json!({
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}
    });
    let (_, msg) = open_err(raw_ckpt(&h, 24).path());
    assert_has(&msg, &["malformed safetensors header: the data of tensors `a` and `b` overlap (data_offsets [0, 16] and [8, 24])"]);
}

#[test]
fn error_data_size_mismatch() {
    let h = json!({"model.language_model.norm.weight": {"dtype": "BF16", "shape": [16], "data_offsets": [0, 16]}});
    let (_, msg) = open_err(raw_ckpt(&h, 16).path());
    assert_has(&msg, &["model.safetensors: tensor `model.language_model.norm.weight` has shape [16] and dtype BF16 (32 bytes) but its data_offsets span 16 bytes"]);
}

#[test]
fn error_shard_problems() {
    let (dir, _, _) = valid(Layout::Damo, false, 2);
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, FrontendError::MissingShard { .. }), "{msg}");
    assert_has(&msg, &["model.safetensors.index.json: lists shard `model-00002-of-00002.safetensors`, which does not exist"]);

    let (dir, _, _) = valid(Layout::Damo, false, 2);
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.norm.weight"] = json!("model-00002-of-00002.safetensors");
    index["weight_map"]["model.embed_tokens.weight"] = json!("model-00001-of-00002.safetensors");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let ck = Checkpoint::open(dir.path());
    if let Err(e) = ck {
        assert_has(
            &e.to_string(),
            &[
                "model.safetensors.index.json: weight_map puts tensor `",
                "but that shard does not contain it",
            ],
        );
    } else {
        panic!("index mismatch not detected");
    }

    std::fs::write(&index_path, "{\"weight_map\": 3}").unwrap();
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["model.safetensors.index.json: missing `weight_map` object"],
    );
    std::fs::write(&index_path, "{\"weight_map\": {\n").unwrap();
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["model.safetensors.index.json: invalid JSON at line 2"],
    );
}

#[test]
fn error_duplicate_tensor_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_json(Layout::Transformers, true);
    let ts = tensors_for(&cfg, Dtype::F32);
    write_config(dir.path(), &cfg);
    write_st(&dir.path().join("a.safetensors"), &ts);
    write_st(&dir.path().join("b.safetensors"), &ts[..1]);
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &[
            &format!("tensor `{}` is stored twice: in ", ts[0].name),
            "a.safetensors and in ",
            "b.safetensors",
        ],
    );
}

#[test]
fn config_errors_surface_through_open() {
    let (dir, mut cfg, _) = valid(Layout::Transformers, true, 1);
    cfg["text_config"]["hidden_size"] = json!(30);
    write_config(dir.path(), &cfg);
    let (_, msg) = open_err(dir.path());
    assert_has(
        &msg,
        &["config.json: text_config.hidden_size (30) is not divisible by num_attention_heads (4)"],
    );
}

#[test]
fn error_two_stored_names_for_one_canonical_name() {
    let dir = with_modified(Layout::Damo, true, |ts| {
        let t = ts
            .iter()
            .find(|t| t.name == "model.norm.weight")
            .unwrap()
            .clone();
        ts.push(T {
            name: names::LLM_NORM.into(),
            ..t
        });
    });
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, FrontendError::DuplicateTensor { .. }), "{msg}");
    assert_has(
        &msg,
        &[
            "tensor `model.language_model.norm.weight` (stored as `",
            "is stored twice",
        ],
    );
}
