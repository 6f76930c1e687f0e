//! `genai_config.json`: onnxruntime-genai's description of a multimodal export (file names,
//! input and output names, head counts, token ids), plus what onnxruntime-genai has no key for
//! (every graph's shapes with their symbol bounds, the processor settings).

use crate::{ExportedGraph, IoSpec, MatmulPrecision, ModelInfo, Role};
use serde_json::{json, Map, Value};

fn spec_json(s: &IoSpec) -> Value {
    json!({
        "name": s.name,
        "dtype": s.dtype.name(),
        "shape": s.shape.iter().map(|d| match d.as_const() {
            Some(c) => json!(c),
            None => json!(d.to_string()),
        }).collect::<Vec<_>>(),
    })
}

fn const_dim(g: &ExportedGraph, io: &str, axis: usize) -> Option<i64> {
    g.inputs
        .iter()
        .chain(&g.outputs)
        .find(|s| s.name == io)
        .and_then(|s| s.shape.get(axis))
        .and_then(|d| d.as_const())
}

/// A key of `config.json`'s text config, or of its top level (the DAMO layout is flat).
fn text_key(info: &ModelInfo, key: &str) -> Value {
    let Some(cfg) = info.configs.get("config.json") else {
        return Value::Null;
    };
    cfg.get("text_config")
        .and_then(|t| t.get(key))
        .or_else(|| cfg.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

fn generation_key(info: &ModelInfo, key: &str) -> Value {
    info.configs
        .get("generation_config.json")
        .and_then(|g| g.get(key))
        .cloned()
        .unwrap_or_else(|| text_key(info, key))
}

pub fn config(exported: &[ExportedGraph], info: &ModelInfo, precision: MatmulPrecision) -> Value {
    let decoder = exported.iter().find(|g| g.role == Role::Decoder);
    let layers = decoder.map_or(0, |d| {
        d.inputs
            .iter()
            .filter(|s| s.name.starts_with("past_key_values.") && s.name.ends_with(".key"))
            .count()
    });
    let dec = |io: &str, axis: usize| decoder.and_then(|d| const_dim(d, io, axis));
    let context = decoder
        .and_then(|d| d.symbols.get("past_len"))
        .map(|b| b.max + 1);
    let mut vision_files = Map::new();
    for g in exported {
        if let Role::Vision { merge } = g.role {
            vision_files.insert(merge.to_string(), json!(g.file));
        }
    }
    let graphs: Vec<Value> = exported
        .iter()
        .map(|g| {
            json!({
                "filename": g.file,
                "inputs": g.inputs.iter().map(spec_json).collect::<Vec<_>>(),
                "outputs": g.outputs.iter().map(spec_json).collect::<Vec<_>>(),
                "symbols": g.symbols.iter().map(|(k, b)| (k.clone(), json!([b.min, b.max]))).collect::<Map<_, _>>(),
            })
        })
        .collect();
    let embedding_inputs: Map<String, Value> = exported
        .iter()
        .filter(|g| g.role == Role::Embedding)
        .flat_map(|g| &g.inputs)
        .map(|s| (s.name.clone(), json!(s.name)))
        .collect();
    let processor: Map<String, Value> = info
        .configs
        .iter()
        .filter(|(name, _)| name.contains("preprocessor"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "model": {
            "type": "videollama3",
            "bos_token_id": generation_key(info, "bos_token_id"),
            "eos_token_id": generation_key(info, "eos_token_id"),
            "pad_token_id": generation_key(info, "pad_token_id"),
            "image_token_id": info.configs.get("config.json").and_then(|c| c.get("image_token_id")).cloned(),
            "video_token_id": info.configs.get("config.json").and_then(|c| c.get("video_token_id")).cloned(),
            "context_length": context,
            "vocab_size": dec("logits", 2),
            "decoder": {
                "filename": "decoder.onnx",
                "hidden_size": dec("inputs_embeds", 2),
                "head_size": dec("past_key_values.0.key", 3),
                "num_attention_heads": text_key(info, "num_attention_heads"),
                "num_key_value_heads": dec("past_key_values.0.key", 1),
                "num_hidden_layers": layers,
                "inputs": {
                    "inputs_embeds": "inputs_embeds",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
            "embedding": {
                "filename": "embedding.onnx",
                // A checkpoint without a video token has no video inputs.
                "inputs": embedding_inputs,
                "outputs": { "inputs_embeds": "inputs_embeds" },
            },
            "vision": {
                "filenames_by_merge_size": vision_files,
                "entries_per_call": 1,
                "inputs": {
                    "pixel_values": "pixel_values",
                    "image_grid_thw": "grid_thw",
                    "merge_sizes": "merge_sizes",
                },
                "outputs": { "image_features": "features", "keep_mask": "keep_mask" },
            },
        },
        "search": {
            "max_length": context,
            "past_present_share_buffer": false,
            "do_sample": false,
        },
        "vl3c": {
            "matmul_precision": precision.dtype().name(),
            "batch_size": 1,
            "graphs": graphs,
            "processor": processor,
        },
    })
}
