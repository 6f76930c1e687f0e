//! Video preprocessing exactly as transformers' `VideoLlama3VideoProcessor` (spec §4):
//!
//! 1. which frames to use ([`sample_indices`]): `sample_frames`' arithmetic, including torch's
//!    float32 `arange(0, total, total/n).int()`, so that a caller decodes only those frames;
//! 2. per frame ([`preprocess_video`]): `smart_resize` with factor `patch·merge` and the pixel
//!    budget `longest_edge // T` shared by the T frames, torch's uint8 antialiased bicubic resize,
//!    `(x − 127.5) / 127.5`, patchify in (frame, block row, block col, ii, jj) row order;
//! 3. Differential Frame Pruning's `video_compression_mask` (the executor's `diff_frame_prune`);
//! 4. timestamps `frame_idx / fps` as `VideoMetadata.timestamps` computes them.
//!
//! The image half of the pipeline is `crate::preprocess`, shared here.

mod config;
mod mask;
mod output;
mod pipeline;
mod sample;

use std::path::PathBuf;

use crate::preprocess::PreprocessError;

pub use config::VideoProcessorConfig;
pub use output::{ProcessedVideos, VideoTimestamps};
pub use pipeline::{
    preprocess_video, preprocess_video_resized, preprocess_videos, target_size, VideoFrames,
};
pub use sample::{
    sample_frames, sample_indices, timestamps, torch_arange_int, FrameSelection, SamplingRequest,
    ARANGE_EXACT_LEN,
};

/// Errors of video sampling and preprocessing. Each names what was wrong and, for files, which.
#[derive(Debug, thiserror::Error)]
pub enum VideoProcessError {
    // The io error is part of the message, not a `source`, as in `PreprocessError`.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid video processor config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("invalid video processor config: {0}")]
    InvalidConfig(String),
    #[error("cannot sample frames: {0}")]
    Sampling(String),
    #[error("invalid video input: {0}")]
    Input(String),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("video compression mask: {0}")]
    Mask(String),
    #[error("cannot serialize processed videos: {0}")]
    Serialize(String),
}
