//! Errors of the checkpoint reader and config parser. Every message starts with
//! the file it is about, and names the tensor or field where there is one.

use std::path::PathBuf;

use crate::names::Part;

/// Anything that can go wrong while reading a VideoLLaMA3 checkpoint directory.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: no config.json found (a VideoLLaMA3 checkpoint directory needs config.json next to its safetensors files)", dir.display())]
    MissingConfig { dir: PathBuf },

    #[error("{}: no model.safetensors, model.safetensors.index.json or other *.safetensors file found", dir.display())]
    NoWeights { dir: PathBuf },

    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// A config.json that parses as JSON but does not describe a model vl3c can compile.
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    #[error("{file}: truncated file: {message}")]
    Truncated { file: String, message: String },

    #[error("{file}: malformed safetensors header: {message}")]
    MalformedHeader { file: String, message: String },

    #[error("{file}: tensor `{tensor}` has dtype {dtype}, which vl3c does not support (expected F32, F16 or BF16)")]
    UnsupportedDtype {
        file: String,
        tensor: String,
        dtype: String,
    },

    #[error("{file}: missing tensor `{tensor}` ({}needed by the {part}){}",
        if canonical != tensor { format!("canonical name `{canonical}`, ") } else { String::new() },
        if *others > 0 { format!(", and {others} more missing tensors") } else { String::new() })]
    MissingTensor {
        file: String,
        tensor: String,
        canonical: String,
        part: Part,
        others: usize,
    },

    #[error("{file}: tensor `{tensor}` has shape {found:?} but {config} implies {expected:?}")]
    ShapeMismatch {
        file: String,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
        config: String,
    },

    #[error("{file}: tensor `{tensor}` has shape {shape:?} and dtype {dtype} ({expected} bytes) but its data_offsets span {found} bytes")]
    DataSize {
        file: String,
        tensor: String,
        shape: Vec<usize>,
        dtype: String,
        expected: usize,
        found: usize,
    },

    #[error("{index}: lists shard `{shard}`, which does not exist")]
    MissingShard { index: String, shard: String },

    #[error("{index}: weight_map puts tensor `{tensor}` in `{shard}`, but that shard does not contain it")]
    IndexMismatch {
        index: String,
        shard: String,
        tensor: String,
    },

    #[error("tensor `{tensor}` is stored twice: in {first} and in {second}")]
    DuplicateTensor {
        tensor: String,
        first: String,
        second: String,
    },

    #[error("{file}: tensor `{tensor}` belongs to {part} layer {layer}, but {config} says {part} has {num_layers} layers (num_hidden_layers); config and weights contradict each other")]
    LayerOutOfRange {
        file: String,
        tensor: String,
        part: Part,
        layer: usize,
        num_layers: usize,
        config: String,
    },
}

impl FrontendError {
    pub(crate) fn config(file: &str, message: impl Into<String>) -> Self {
        FrontendError::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn json(file: &str, e: &serde_json::Error) -> Self {
        // serde_json's Display already appends " at line L column C"; strip it to avoid saying it twice.
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        FrontendError::Json {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}
