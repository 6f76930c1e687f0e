//! Weight names (spec §2). Canonical names are the transformers names; the DAMO layout
//! is mapped onto them so that everything past the reader sees one naming scheme.

use crate::config::{Layout, ModelConfig};

/// Which sub-model a weight belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Vision,
    Projector,
    Llm,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Vision => "vision encoder",
            Part::Projector => "projector",
            Part::Llm => "LLM",
        })
    }
}

/// One tensor the model needs, with the shape config.json implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedWeight {
    pub name: String,
    pub shape: Vec<usize>,
    pub part: Part,
}

pub const VISION_PREFIX: &str = "model.vision_model.";
pub const VISION_LAYERS_PREFIX: &str = "model.vision_model.encoder.layers.";
pub const PROJECTOR_PREFIX: &str = "model.projector.";
pub const LLM_PREFIX: &str = "model.language_model.";
pub const LLM_LAYERS_PREFIX: &str = "model.language_model.layers.";
pub const PATCH_EMBED_WEIGHT: &str = "model.vision_model.embeddings.patch_embedding.weight";
pub const PATCH_EMBED_BIAS: &str = "model.vision_model.embeddings.patch_embedding.bias";
pub const VISION_POST_LN_WEIGHT: &str = "model.vision_model.post_layernorm.weight";
pub const VISION_POST_LN_BIAS: &str = "model.vision_model.post_layernorm.bias";
pub const EMBED_TOKENS: &str = "model.language_model.embed_tokens.weight";
pub const LLM_NORM: &str = "model.language_model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// Canonical name of a vision encoder layer tensor, e.g. `vision_layer(3, "mlp.fc1.weight")`.
pub fn vision_layer(i: usize, suffix: &str) -> String {
    format!("{VISION_LAYERS_PREFIX}{i}.{suffix}")
}

/// Canonical name of an LLM decoder layer tensor, e.g. `llm_layer(0, "self_attn.q_proj.bias")`.
pub fn llm_layer(i: usize, suffix: &str) -> String {
    format!("{LLM_LAYERS_PREFIX}{i}.{suffix}")
}

/// Canonical name of a projector tensor: `projector(0, "weight")` is `model.projector.readout.0.weight`.
pub fn projector(index: usize, kind: &str) -> String {
    format!("{PROJECTOR_PREFIX}readout.{index}.{kind}")
}

/// Canonical name of the tensor that serves as the output projection: the embedding when tied.
pub fn lm_head_source(cfg: &ModelConfig) -> &'static str {
    if cfg.tie_word_embeddings {
        EMBED_TOKENS
    } else {
        LM_HEAD
    }
}

/// Every tensor the model needs, in a stable order (vision, projector, LLM), with shapes from config.
pub fn expected_weights(cfg: &ModelConfig) -> Vec<ExpectedWeight> {
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, part: Part| {
        out.push(ExpectedWeight { name, shape, part })
    };

    let v = &cfg.vision;
    let (f, fi) = (v.hidden_size, v.intermediate_size);
    push(
        PATCH_EMBED_WEIGHT.into(),
        vec![f, v.num_channels, v.patch_size, v.patch_size],
        Part::Vision,
    );
    push(PATCH_EMBED_BIAS.into(), vec![f], Part::Vision);
    for i in 0..v.num_hidden_layers {
        let mut layer =
            |suffix: &str, shape: Vec<usize>| push(vision_layer(i, suffix), shape, Part::Vision);
        for ln in ["layer_norm1", "layer_norm2"] {
            layer(&format!("{ln}.weight"), vec![f]);
            layer(&format!("{ln}.bias"), vec![f]);
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            layer(&format!("self_attn.{proj}.weight"), vec![f, f]);
            layer(&format!("self_attn.{proj}.bias"), vec![f]);
        }
        layer("mlp.fc1.weight", vec![fi, f]);
        layer("mlp.fc1.bias", vec![fi]);
        layer("mlp.fc2.weight", vec![f, fi]);
        layer("mlp.fc2.bias", vec![f]);
    }
    push(VISION_POST_LN_WEIGHT.into(), vec![f], Part::Vision);
    push(VISION_POST_LN_BIAS.into(), vec![f], Part::Vision);

    let t = &cfg.text;
    let (h, ti, vocab) = (t.hidden_size, t.intermediate_size, t.vocab_size);
    push(projector(0, "weight"), vec![h, f], Part::Projector);
    push(projector(0, "bias"), vec![h], Part::Projector);
    push(projector(2, "weight"), vec![h, h], Part::Projector);
    push(projector(2, "bias"), vec![h], Part::Projector);

    let q = t.num_attention_heads * t.head_dim;
    let kv = t.num_key_value_heads * t.head_dim;
    push(EMBED_TOKENS.into(), vec![vocab, h], Part::Llm);
    for i in 0..t.num_hidden_layers {
        let mut layer =
            |suffix: &str, shape: Vec<usize>| push(llm_layer(i, suffix), shape, Part::Llm);
        layer("input_layernorm.weight", vec![h]);
        layer("self_attn.q_proj.weight", vec![q, h]);
        layer("self_attn.q_proj.bias", vec![q]);
        layer("self_attn.k_proj.weight", vec![kv, h]);
        layer("self_attn.k_proj.bias", vec![kv]);
        layer("self_attn.v_proj.weight", vec![kv, h]);
        layer("self_attn.v_proj.bias", vec![kv]);
        layer("self_attn.o_proj.weight", vec![h, q]);
        layer("post_attention_layernorm.weight", vec![h]);
        layer("mlp.gate_proj.weight", vec![ti, h]);
        layer("mlp.up_proj.weight", vec![ti, h]);
        layer("mlp.down_proj.weight", vec![h, ti]);
    }
    push(LLM_NORM.into(), vec![h], Part::Llm);
    if !cfg.tie_word_embeddings {
        push(LM_HEAD.into(), vec![vocab, h], Part::Llm);
    }
    out
}

/// (canonical prefix, DAMO prefix) pairs; the LLM body has no sub-module prefix in DAMO.
const DAMO_PREFIXES: [(&str, &str); 5] = [
    ("model.vision_model.", "model.vision_encoder."),
    ("model.projector.", "model.mm_projector."),
    ("model.language_model.embed_tokens.", "model.embed_tokens."),
    ("model.language_model.layers.", "model.layers."),
    ("model.language_model.norm.", "model.norm."),
];

/// The name under which `canonical` is stored in a checkpoint of `layout`.
/// Names outside the known prefixes (e.g. `lm_head.weight`) are stored unchanged.
pub fn file_name(layout: Layout, canonical: &str) -> String {
    if layout == Layout::Damo {
        for (canon, damo) in DAMO_PREFIXES {
            if let Some(rest) = canonical.strip_prefix(canon) {
                return format!("{damo}{rest}");
            }
        }
    }
    canonical.to_string()
}

/// Inverse of [`file_name`]: the canonical name of a tensor stored as `stored`.
pub fn canonical_name(layout: Layout, stored: &str) -> String {
    if layout == Layout::Damo {
        for (canon, damo) in DAMO_PREFIXES {
            if let Some(rest) = stored.strip_prefix(damo) {
                return format!("{canon}{rest}");
            }
        }
    }
    stored.to_string()
}

/// For a canonical per-layer name, the part and the layer index (`...layers.N.`).
pub fn layer_index(canonical: &str) -> Option<(Part, usize)> {
    let (part, rest) = if let Some(rest) = canonical.strip_prefix(VISION_LAYERS_PREFIX) {
        (Part::Vision, rest)
    } else {
        (Part::Llm, canonical.strip_prefix(LLM_LAYERS_PREFIX)?)
    };
    let digits = rest.split('.').next()?;
    digits.parse().ok().map(|i| (part, i))
}
