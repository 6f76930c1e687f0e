//! VideoLLaMA3 checkpoint reading (config.json + safetensors, both the transformers and the
//! original DAMO layouts) and lowering into vl3c IR.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod limits;
pub mod names;

pub use checkpoint::{Checkpoint, IgnoredTensor, TensorRef};
pub use config::{Layout, ModelConfig, TextConfig, VisionConfig, VisionLimits};
pub use error::FrontendError;
pub use names::{expected_weights, ExpectedWeight, Part};
pub mod lower;
