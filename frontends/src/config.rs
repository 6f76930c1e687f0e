//! config.json parsing for both checkpoint layouts (spec §1).
//!
//! Transformers-layout fields that are absent take the defaults of the transformers
//! classes, because `save_pretrained` may leave out values equal to the defaults and such
//! a config must mean what it means to transformers. The DAMO layout comes from a
//! different code base, so its core sizes are required rather than guessed.

use std::path::Path;

use serde_json::{Map, Value};
use vl3c_ir::DType;

use crate::error::FrontendError;

/// Which naming scheme the checkpoint uses (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Hugging Face transformers >= 5 (`model_type: "video_llama_3"`).
    Transformers,
    /// Original DAMO-NLP-SG release (`model_type: "videollama3_qwen2"`).
    Damo,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Transformers => "transformers (video_llama_3)",
            Layout::Damo => "DAMO original (videollama3_qwen2)",
        })
    }
}

/// The Qwen2 LLM.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The text config's own flag; [`ModelConfig::tie_word_embeddings`] is the one that counts.
    pub tie_word_embeddings: bool,
}

/// The SigLIP-NaViT vision encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub num_channels: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub rope_theta: f64,
}

/// Everything vl3c needs from config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub layout: Layout,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    /// `None` for the DAMO layout, which has a single `image_token_index` placeholder.
    pub video_token_id: Option<u32>,
    /// Effective tying: true if either the top level or the text config says so.
    pub tie_word_embeddings: bool,
    pub declared_dtype: DType,
    /// How many patches one image or one video may have: the bounds of the vision symbols.
    pub vision_limits: VisionLimits,
}

/// The processors' pixel limits in patches. Defaults are transformers' class defaults; a
/// runner that reads the checkpoint's preprocessor config replaces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionLimits {
    /// `VideoLlama3ImageProcessor`'s `size.longest_edge` (1003520 px) in patches, per image.
    pub image_max_patches: usize,
    /// `VideoLlama3VideoProcessor`'s `size.longest_edge` (602112 px) in patches: the budget is
    /// shared by all frames of one video.
    pub video_max_patches: usize,
}

impl VisionLimits {
    pub fn from_pixels(
        image_max_pixels: usize,
        video_max_pixels: usize,
        patch_size: usize,
    ) -> VisionLimits {
        let pp = (patch_size * patch_size).max(1);
        VisionLimits {
            image_max_patches: image_max_pixels / pp,
            video_max_patches: video_max_pixels / pp,
        }
    }

    pub fn class_defaults(patch_size: usize) -> VisionLimits {
        VisionLimits::from_pixels(1_003_520, 602_112, patch_size)
    }
}

/// Activations accepted for the vision MLP: all of them are the tanh approximation of GELU.
pub const VISION_ACTS: [&str; 3] = ["gelu_pytorch_tanh", "gelu_new", "gelu_fast"];
/// Activations accepted for the LLM MLP (transformers' ACT2FN maps both to SiLU).
pub const TEXT_ACTS: [&str; 2] = ["silu", "swish"];

/// The bound of a size field of config.json (the LLM's and the vision encoder's share names).
fn size_bound(key: &str) -> Option<usize> {
    use crate::limits::*;
    Some(match key {
        "num_hidden_layers" => MAX_LAYERS,
        "hidden_size" => MAX_HIDDEN,
        "intermediate_size" => MAX_INTERMEDIATE,
        "vocab_size" => MAX_VOCAB,
        "num_attention_heads" | "num_key_value_heads" => MAX_HEADS,
        "head_dim" => MAX_HEAD_DIM,
        "max_position_embeddings" => MAX_POSITIONS,
        "patch_size" => MAX_PATCH,
        "num_channels" => MAX_CHANNELS,
        _ => return None,
    })
}

/// Reads fields of one JSON object, producing errors that name the file and the dotted path.
struct Obj<'a> {
    file: &'a str,
    prefix: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
    fn err(&self, msg: String) -> FrontendError {
        FrontendError::config(self.file, msg)
    }
    /// JSON `null` counts as absent, as it does for transformers' config classes.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn size_opt(&self, key: &str) -> Result<Option<usize>, FrontendError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_i64() {
            // Bounded as it is read, before any check divides by it or anything is sized from
            // it (see `crate::limits`).
            Some(n) if n > 0 => match size_bound(key) {
                Some(max) => crate::limits::check_size(&self.path(key), n as usize, max)
                    .map(|()| Some(n as usize))
                    .map_err(|m| self.err(m)),
                None => Ok(Some(n as usize)),
            },
            Some(n) => Err(self.err(format!(
                "{} must be a positive integer, got {n}",
                self.path(key)
            ))),
            None => Err(self.err(format!(
                "{} must be a positive integer, got {v}",
                self.path(key)
            ))),
        }
    }
    fn size(&self, key: &str, default: Option<usize>) -> Result<usize, FrontendError> {
        match (self.size_opt(key)?, default) {
            (Some(n), _) => Ok(n),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.err(format!("missing required field {}", self.path(key)))),
        }
    }
    fn float(&self, key: &str, default: f64) -> Result<f64, FrontendError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(self.err(format!(
                    "{} must be a positive number, got {v}",
                    self.path(key)
                ))),
            },
        }
    }
    fn string(&self, key: &str, default: &str) -> Result<String, FrontendError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(format!("{} must be a string, got {v}", self.path(key)))),
        }
    }
    fn boolean(&self, key: &str, default: bool) -> Result<bool, FrontendError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(format!("{} must be true or false, got {v}", self.path(key)))),
        }
    }
    fn token_id(&self, key: &str) -> Result<Option<u32>, FrontendError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        self.as_token(key, v).map(Some)
    }
    fn as_token(&self, key: &str, v: &Value) -> Result<u32, FrontendError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.err(format!(
                    "{} must be a non-negative token id, got {v}",
                    self.path(key)
                ))
            })
    }
    /// `eos_token_id` may be an int or a list of ints.
    fn token_ids(&self, key: &str) -> Result<Vec<u32>, FrontendError> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(|v| self.as_token(key, v)).collect(),
            Some(v) => Ok(vec![self.as_token(key, v)?]),
        }
    }
    fn object(&self, key: &str) -> Result<Option<Obj<'a>>, FrontendError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                file: self.file,
                prefix: format!("{}{key}.", self.prefix),
                map,
            })),
            Some(v) => Err(self.err(format!("{} must be an object, got {v}", self.path(key)))),
        }
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig, FrontendError> {
        let path = dir.join("config.json");
        // Present but not a regular file (a device, a pipe): read_bounded says what it is.
        if !path.exists() {
            return Err(FrontendError::MissingConfig {
                dir: dir.to_path_buf(),
            });
        }
        let text = crate::limits::read_bounded_to_string(
            &path,
            crate::limits::MAX_CONFIG_BYTES,
            "config.json",
        )
        .map_err(|source| FrontendError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses config.json text; `source_name` is the file name used in error messages.
    pub fn from_json_str(s: &str, source_name: &str) -> Result<ModelConfig, FrontendError> {
        let file = source_name;
        let root: Value = serde_json::from_str(s).map_err(|e| FrontendError::json(file, &e))?;
        let Value::Object(map) = &root else {
            return Err(FrontendError::config(
                file,
                "the top level must be a JSON object",
            ));
        };
        let top = Obj {
            file,
            prefix: String::new(),
            map,
        };
        let model_type = match top.get("model_type") {
            None => return Err(top.err("missing required field model_type".into())),
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(top.err(format!("model_type must be a string, got {v}"))),
        };
        let cfg = match model_type {
            "video_llama_3" => Self::parse_transformers(&top)?,
            "videollama3_qwen2" => Self::parse_damo(&top)?,
            other => {
                return Err(top.err(format!(
                    "unknown model_type `{other}` (vl3c reads `video_llama_3` (transformers) and `videollama3_qwen2` (original DAMO))"
                )))
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn parse_transformers(top: &Obj) -> Result<ModelConfig, FrontendError> {
        let empty = Map::new();
        let text_obj = top.object("text_config")?.unwrap_or(Obj {
            file: top.file,
            prefix: "text_config.".into(),
            map: &empty,
        });
        if let Some(Value::String(mt)) = text_obj.get("model_type") {
            if mt != "qwen2" {
                return Err(top.err(format!(
                    "text_config.model_type is `{mt}`, but VideoLLaMA3 uses a qwen2 LLM"
                )));
            }
        }
        let vision_obj = top.object("vision_config")?.unwrap_or(Obj {
            file: top.file,
            prefix: "vision_config.".into(),
            map: &empty,
        });
        let text = parse_text(&text_obj, false)?;
        let vision = parse_vision(&vision_obj)?;
        let top_tie = top.boolean("tie_word_embeddings", false)?;
        Ok(ModelConfig {
            layout: Layout::Transformers,
            tie_word_embeddings: top_tie || text.tie_word_embeddings,
            image_token_id: top.token_id("image_token_id")?.unwrap_or(151655),
            video_token_id: Some(top.token_id("video_token_id")?.unwrap_or(151656)),
            declared_dtype: declared_dtype(top, Some(&text_obj))?,
            vision_limits: VisionLimits::class_defaults(vision.patch_size),
            text,
            vision,
        })
    }

    fn parse_damo(top: &Obj) -> Result<ModelConfig, FrontendError> {
        let Some(vision_obj) = top.object("vision_encoder_config")? else {
            return Err(top.err(
                "missing required field vision_encoder_config (vl3c cannot fetch the vision encoder config named by `vision_encoder`)".into(),
            ));
        };
        let text = parse_text(top, true)?;
        let vision = parse_vision(&vision_obj)?;
        let Some(image_token_id) = top.token_id("image_token_index")? else {
            return Err(top.err("missing required field image_token_index".into()));
        };
        Ok(ModelConfig {
            layout: Layout::Damo,
            tie_word_embeddings: text.tie_word_embeddings,
            image_token_id,
            video_token_id: None,
            declared_dtype: declared_dtype(top, None)?,
            vision_limits: VisionLimits::class_defaults(vision.patch_size),
            text,
            vision,
        })
    }

    fn validate(&self, file: &str) -> Result<(), FrontendError> {
        let err = |m: String| Err(FrontendError::config(file, m));
        let (t, v) = (&self.text, &self.vision);
        let tp = if self.layout == Layout::Damo {
            ""
        } else {
            "text_config."
        };
        let vp = if self.layout == Layout::Damo {
            "vision_encoder_config."
        } else {
            "vision_config."
        };
        // Every size read was bounded as it was read (`Obj::size_opt`); the head sizes derived
        // from them are bounded here (see `crate::limits`).
        for (field, value) in [
            (format!("{tp}head_dim"), t.head_dim),
            (format!("{vp}head_dim"), v.head_dim),
        ] {
            crate::limits::check_size(&field, value, crate::limits::MAX_HEAD_DIM).or_else(err)?;
        }
        if t.num_attention_heads % t.num_key_value_heads != 0 {
            return err(format!(
                "{tp}num_attention_heads ({}) is not divisible by num_key_value_heads ({})",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if t.head_dim % 2 != 0 {
            return err(format!(
                "{tp}head_dim ({}) must be even for rotary embeddings",
                t.head_dim
            ));
        }
        if v.head_dim % 4 != 0 {
            return err(format!(
                "{vp}head_dim (hidden_size {} / num_attention_heads {} = {}) must be divisible by 4: the 2-D rotary embedding splits each half of it between rows and columns",
                v.hidden_size, v.num_attention_heads, v.head_dim
            ));
        }
        if !TEXT_ACTS.contains(&t.hidden_act.as_str()) {
            return err(format!(
                "{tp}hidden_act `{}` is not supported (the Qwen2 LLM uses silu)",
                t.hidden_act
            ));
        }
        if !VISION_ACTS.contains(&v.hidden_act.as_str()) {
            return err(format!(
                "{vp}hidden_act `{}` is not supported (expected one of {}: tanh-approximated GELU)",
                v.hidden_act,
                VISION_ACTS.join(", ")
            ));
        }
        let vocab = t.vocab_size;
        let tokens = [
            ("image_token_id", Some(self.image_token_id)),
            ("video_token_id", self.video_token_id),
        ];
        for (name, id) in tokens {
            if let Some(id) = id.filter(|&id| id as usize >= vocab) {
                let name = if self.layout == Layout::Damo {
                    "image_token_index"
                } else {
                    name
                };
                return err(format!(
                    "{name} ({id}) is outside the vocabulary ({tp}vocab_size {vocab})"
                ));
            }
        }
        Ok(())
    }

    /// Number of parameters the config implies (tied lm_head counted once).
    pub fn num_parameters(&self) -> usize {
        crate::names::expected_weights(self)
            .iter()
            .map(|w| w.shape.iter().product::<usize>())
            .sum()
    }

    /// Multi-line human-readable description, for `vl3c inspect`.
    pub fn summary(&self) -> String {
        let (t, v) = (&self.text, &self.vision);
        let video = self
            .video_token_id
            .map_or("none (shares the image placeholder)".to_string(), |id| {
                id.to_string()
            });
        format!(
            "layout:      {}\n\
             dtype:       {} (declared)\n\
             vision:      {} layers, width {}, {} heads x {}, mlp {}, patch {}x{}, {} channels, {}, ln eps {:e}, rope theta {}\n\
             projector:   Linear({}, {}) -> GELU -> Linear({}, {})\n\
             llm:         {} layers, width {}, {} heads x {} ({} kv heads), mlp {}, vocab {}, {}, rms eps {:e}, rope theta {}, max positions {}\n\
             lm_head:     {}\n\
             tokens:      image {}, video {}, bos {:?}, eos {:?}\n\
             parameters:  {}",
            self.layout,
            self.declared_dtype,
            v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.head_dim, v.intermediate_size,
            v.patch_size, v.patch_size, v.num_channels, v.hidden_act, v.layer_norm_eps, v.rope_theta,
            v.hidden_size, t.hidden_size, t.hidden_size, t.hidden_size,
            t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.head_dim, t.num_key_value_heads,
            t.intermediate_size, t.vocab_size, t.hidden_act, t.rms_norm_eps, t.rope_theta, t.max_position_embeddings,
            if self.tie_word_embeddings { "tied to embed_tokens" } else { "separate" },
            self.image_token_id, video, t.bos_token_id, t.eos_token_ids,
            self.num_parameters(),
        )
    }
}

/// `require_sizes`: the DAMO layout has no class defaults we can trust, so its core sizes must be present.
fn parse_text(o: &Obj, require_sizes: bool) -> Result<TextConfig, FrontendError> {
    let d = |x: usize| if require_sizes { None } else { Some(x) };
    // Qwen2Config defaults (configuration_qwen2.py).
    let vocab_size = o.size("vocab_size", d(151936))?;
    let hidden_size = o.size("hidden_size", d(4096))?;
    let intermediate_size = o.size("intermediate_size", d(22016))?;
    let num_hidden_layers = o.size("num_hidden_layers", d(32))?;
    let num_attention_heads = o.size("num_attention_heads", d(32))?;
    let num_key_value_heads = o.size("num_key_value_heads", Some(num_attention_heads))?;
    let head_dim = match o.size_opt("head_dim")? {
        Some(hd) => hd,
        None if hidden_size % num_attention_heads != 0 => {
            return Err(o.err(format!(
            "{} ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads})",
            o.path("hidden_size")
        )))
        }
        None => hidden_size / num_attention_heads,
    };
    if o.boolean("use_sliding_window", false)? {
        return Err(o.err(format!(
            "{} is true: sliding-window attention is not supported yet",
            o.path("use_sliding_window")
        )));
    }
    if let Some(Value::Array(types)) = o.get("layer_types") {
        if let Some(bad) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return Err(o.err(format!(
                "{} contains {bad}: only full_attention layers are supported (sliding-window attention is not supported yet)",
                o.path("layer_types")
            )));
        }
    }
    Ok(TextConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: o.float("rms_norm_eps", 1e-6)?,
        rope_theta: rope_theta(o, "default")?,
        max_position_embeddings: o.size("max_position_embeddings", Some(32768))?,
        hidden_act: o.string("hidden_act", "silu")?,
        bos_token_id: o.token_id("bos_token_id")?,
        eos_token_ids: o.token_ids("eos_token_id")?,
        pad_token_id: o.token_id("pad_token_id")?,
        tie_word_embeddings: o.boolean("tie_word_embeddings", false)?,
    })
}

fn parse_vision(o: &Obj) -> Result<VisionConfig, FrontendError> {
    // VideoLlama3VisionConfig defaults (spec §1.2).
    let hidden_size = o.size("hidden_size", Some(768))?;
    let num_attention_heads = o.size("num_attention_heads", Some(12))?;
    if hidden_size % num_attention_heads != 0 {
        return Err(o.err(format!(
            "{} ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads})",
            o.path("hidden_size")
        )));
    }
    Ok(VisionConfig {
        hidden_size,
        intermediate_size: o.size("intermediate_size", Some(3072))?,
        num_hidden_layers: o.size("num_hidden_layers", Some(12))?,
        num_attention_heads,
        head_dim: hidden_size / num_attention_heads,
        num_channels: o.size("num_channels", Some(3))?,
        patch_size: o.size("patch_size", Some(16))?,
        hidden_act: o.string("hidden_act", "gelu_pytorch_tanh")?,
        layer_norm_eps: o.float("layer_norm_eps", 1e-6)?,
        rope_theta: rope_theta(o, "axial")?,
    })
}

/// RoPE theta from `rope_parameters` (transformers 5) or legacy `rope_theta`/`rope_scaling`.
/// Any scaled RoPE would silently change the numbers, so it is refused.
fn rope_theta(o: &Obj, native_type: &str) -> Result<f64, FrontendError> {
    let mut theta = o.float("rope_theta", 10000.0)?;
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(params) = o.object(key)? else {
            continue;
        };
        let kind = params.string("rope_type", "")?;
        let kind = if kind.is_empty() {
            params.string("type", native_type)?
        } else {
            kind
        };
        if kind != native_type && kind != "default" {
            return Err(o.err(format!(
                "{} is `{kind}`: only `{native_type}` RoPE is supported",
                params.path("rope_type")
            )));
        }
        if key == "rope_parameters" {
            theta = params.float("rope_theta", theta)?;
        }
    }
    Ok(theta)
}

fn declared_dtype(top: &Obj, text: Option<&Obj>) -> Result<DType, FrontendError> {
    for o in std::iter::once(top).chain(text) {
        for key in ["dtype", "torch_dtype"] {
            let Some(v) = o.get(key) else { continue };
            let s = v.as_str().unwrap_or("");
            return match s.trim_start_matches("torch.") {
                "float32" | "float" => Ok(DType::F32),
                "bfloat16" => Ok(DType::BF16),
                "float16" | "half" => Ok(DType::F16),
                _ => Err(o.err(format!(
                    "{} is {v}; vl3c supports float32, bfloat16 and float16",
                    o.path(key)
                ))),
            };
        }
    }
    Ok(DType::F32)
}
