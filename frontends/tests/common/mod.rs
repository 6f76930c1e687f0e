//! Builders of tiny VideoLLaMA3 checkpoints shared by the checkpoint tests.
#![allow(dead_code)]

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use vl3c_frontends::names::file_name;
use vl3c_frontends::{expected_weights, Checkpoint, FrontendError, Layout, ModelConfig};

pub fn config_json(layout: Layout, tied: bool) -> Value {
    let vision = json!({
        "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_channels": 3, "patch_size": 2, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6
    });
    let text = json!({
        "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 32, "hidden_act": "silu", "rope_theta": 1000000.0,
        "tie_word_embeddings": tied, "bos_token_id": 0, "eos_token_id": 1
    });
    match layout {
        Layout::Transformers => json!({
            "model_type": "video_llama_3", "dtype": "float32", "image_token_id": 30, "video_token_id": 31,
            "tie_word_embeddings": tied, "text_config": text, "vision_config": vision
        }),
        Layout::Damo => {
            let mut v = text;
            v["model_type"] = json!("videollama3_qwen2");
            v["image_token_index"] = json!(30);
            v["vision_encoder_config"] = vision;
            v
        }
    }
}

/// One tensor to write: stored name, dtype, shape, little-endian bytes.
#[derive(Clone)]
pub struct T {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A complete valid tensor set for `cfg`, with distinct deterministic values per tensor.
pub fn tensors_for(cfg: &Value, dtype: Dtype) -> Vec<T> {
    let model = ModelConfig::from_json_str(&cfg.to_string(), "config.json").unwrap();
    expected_weights(&model)
        .into_iter()
        .enumerate()
        .map(|(k, w)| {
            let n: usize = w.shape.iter().product();
            let vals = (0..n).map(|i| (k * 1000 + i) as f32 * 0.001);
            let data = match dtype {
                Dtype::F32 => vals.flat_map(f32::to_le_bytes).collect(),
                Dtype::BF16 => vals
                    .flat_map(|x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
                Dtype::F16 => vals
                    .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            T {
                name: file_name(model.layout, &w.name),
                dtype,
                shape: w.shape,
                data,
            }
        })
        .collect()
}

pub fn write_st(path: &Path, tensors: &[T]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

pub fn write_config(dir: &Path, cfg: &Value) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
}

/// Writes config + tensors: one `model.safetensors`, or `shards` files with an index.
pub fn write_ckpt(dir: &Path, cfg: &Value, tensors: &[T], shards: usize) {
    write_config(dir, cfg);
    if shards <= 1 {
        return write_st(&dir.join("model.safetensors"), tensors);
    }
    let mut map = serde_json::Map::new();
    for (s, chunk) in tensors.chunks(tensors.len().div_ceil(shards)).enumerate() {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        write_st(&dir.join(&name), chunk);
        for t in chunk {
            map.insert(t.name.clone(), json!(name));
        }
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

pub fn valid(layout: Layout, tied: bool, shards: usize) -> (tempfile::TempDir, Value, Vec<T>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_json(layout, tied);
    let tensors = tensors_for(&cfg, Dtype::F32);
    write_ckpt(dir.path(), &cfg, &tensors, shards);
    (dir, cfg, tensors)
}

pub fn open_err(dir: &Path) -> (FrontendError, String) {
    match Checkpoint::open(dir) {
        Ok(_) => panic!("expected {} to fail to open", dir.display()),
        Err(e) => {
            let s = e.to_string();
            (e, s)
        }
    }
}

pub fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not contain `{n}`");
    }
}

pub fn with_modified(layout: Layout, tied: bool, f: impl FnOnce(&mut Vec<T>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_json(layout, tied);
    let mut tensors = tensors_for(&cfg, Dtype::F32);
    f(&mut tensors);
    write_ckpt(dir.path(), &cfg, &tensors, 1);
    dir
}

pub fn check_complete(ck: &Checkpoint) {
    for w in expected_weights(ck.config()) {
        let t = ck
            .tensor(&w.name)
            .unwrap_or_else(|| panic!("{} not exposed", w.name));
        assert_eq!(t.shape, &w.shape[..]);
        assert_eq!(t.bytes.len(), t.numel() * t.dtype.size_bytes());
        assert_eq!(t.stored_name, file_name(ck.config().layout, &w.name));
    }
}

/// A safetensors file written by hand: `header` JSON then `data_len` zero bytes.
pub fn raw_ckpt(header: &Value, data_len: usize) -> tempfile::TempDir {
    let (dir, _, _) = valid(Layout::Transformers, true, 1);
    let h = header.to_string();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}

pub fn raw_bytes_ckpt(bytes: &[u8]) -> tempfile::TempDir {
    let (dir, _, _) = valid(Layout::Transformers, true, 1);
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}
