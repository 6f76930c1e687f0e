//! Writes a VideoLLaMA3 checkpoint with random weights at the real shapes of a config:
//! `cargo run --release --example random_checkpoint -- --preset 2b --out /tmp/vl3-2b`.
//! The safetensors file is streamed to disk, so a 4 GB checkpoint needs little memory. The
//! tokenizer is examples/tiny's small BPE with its special tokens moved to the Qwen2.5 ids the
//! config names, so `vl3c run` and `vl3c chat` work on the checkpoint (random weights answer
//! with ids the small vocabulary cannot spell; those print as nothing).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use vl3c_frontends::{expected_weights, ModelConfig};

/// VideoLLaMA3-2B in transformers' layout (spec §1): Qwen2.5-1.5B + VL3-SigLIP-NaViT, tied head.
const CONFIG_2B: &str = r#"{
  "model_type": "video_llama_3",
  "architectures": ["VideoLlama3ForConditionalGeneration"],
  "dtype": "bfloat16",
  "image_token_id": 151655,
  "video_token_id": 151656,
  "tie_word_embeddings": true,
  "text_config": {
    "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_act": "silu",
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "use_sliding_window": false, "sliding_window": null, "max_window_layers": 21,
    "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151645
  },
  "vision_config": {
    "model_type": "video_llama_3_vision", "hidden_size": 1152, "intermediate_size": 4304,
    "num_hidden_layers": 27, "num_attention_heads": 16, "num_channels": 3, "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06
  }
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = PathBuf::from(
        value("--out").ok_or("usage: random_checkpoint [--preset 2b | --config FILE] --out DIR")?,
    );
    let config = match value("--config") {
        Some(path) => std::fs::read_to_string(path)?,
        None => CONFIG_2B.to_string(),
    };
    let cfg = ModelConfig::from_json_str(&config, "config.json")?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("config.json"), &config)?;

    write_tokenizer(&out)?;

    let weights = expected_weights(&cfg);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for w in &weights {
        let bytes = w.shape.iter().product::<usize>() * 2;
        header.insert(
            w.name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": w.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut file = BufWriter::with_capacity(
        1 << 22,
        std::fs::File::create(out.join("model.safetensors"))?,
    );
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(&header)?;

    // xorshift noise scaled like transformers' init: norms near 1, everything else ~N(0, 0.02).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for w in &weights {
        let is_norm = w.name.contains("norm");
        let n: usize = w.shape.iter().product();
        let mut buf = Vec::with_capacity(n * 2);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let uniform = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            let x = if is_norm {
                1.0 + 0.1 * uniform
            } else {
                0.035 * uniform
            };
            buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
        }
        file.write_all(&buf)?;
    }
    file.flush()?;
    eprintln!(
        "wrote {} tensors, {:.2} GB, to {}",
        weights.len(),
        offset as f64 / 1e9,
        out.display()
    );
    Ok(())
}

/// Qwen2.5's ids for the special tokens examples/tiny's tokenizer holds.
const QWEN_SPECIAL_IDS: [(&str, u64); 5] = [
    ("<|endoftext|>", 151643),
    ("<|im_start|>", 151644),
    ("<|im_end|>", 151645),
    ("<|image_pad|>", 151655),
    ("<|video_pad|>", 151656),
];

fn write_tokenizer(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("tokenizer.json"))?)?;
    for added in tokenizer["added_tokens"]
        .as_array_mut()
        .ok_or("tokenizer.json has no added_tokens")?
    {
        let content = added["content"].as_str().unwrap_or_default().to_string();
        let (_, id) = QWEN_SPECIAL_IDS
            .iter()
            .find(|(c, _)| *c == content)
            .ok_or(format!("unexpected special token {content}"))?;
        added["id"] = (*id).into();
    }
    // `tokenizers` renumbers added tokens after the model's vocabulary unless the model already
    // holds them, so the ids go into the BPE vocabulary too.
    let vocab = tokenizer["model"]["vocab"]
        .as_object_mut()
        .ok_or("tokenizer.json has no model.vocab")?;
    for (content, id) in QWEN_SPECIAL_IDS {
        vocab.insert(content.to_string(), id.into());
    }
    std::fs::write(
        out.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?,
    )?;
    std::fs::copy(
        tiny.join("tokenizer_config.json"),
        out.join("tokenizer_config.json"),
    )?;
    Ok(())
}
