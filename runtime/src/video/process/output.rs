//! The processor's output for a list of videos, and its safetensors form with transformers' names.

use super::VideoProcessError;

/// Which frames one video contributed and when they were taken.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTimestamps {
    /// Frame indices into the video, one per frame of the grid.
    pub indices: Vec<usize>,
    /// Seconds per frame, as `VideoMetadata.timestamps` gives them (see `timestamps`).
    pub seconds: Vec<f64>,
    /// The video's fps was unknown and 1 was assumed, as transformers does (with a warning).
    pub fps_assumed: bool,
}

/// The processor's output: the four tensors transformers returns, plus per video its frames'
/// indices and timestamps (transformers' `video_metadata`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedVideos {
    /// Row-major [Σ t·h·w, patch_dim]; rows in (video, frame, block row, block col, ii, jj) order.
    pub pixel_values: Vec<f32>,
    /// Per video [t, grid_h, grid_w].
    pub grid_thw: Vec<[i64; 3]>,
    /// Per video its merge size (2).
    pub merge_sizes: Vec<i64>,
    /// Per merged token (Σ t·h·w / m²) whether Differential Frame Pruning keeps it.
    pub compression_mask: Vec<bool>,
    /// Row length of `pixel_values` (3·p·p = 588).
    pub patch_dim: usize,
    /// Per video, its frames.
    pub timestamps: Vec<VideoTimestamps>,
}

impl ProcessedVideos {
    pub(super) fn empty(patch_dim: usize) -> Self {
        Self {
            pixel_values: Vec::new(),
            grid_thw: Vec::new(),
            merge_sizes: Vec::new(),
            compression_mask: Vec::new(),
            patch_dim,
            timestamps: Vec::new(),
        }
    }

    /// Appends another call's videos after these (transformers concatenates in input order).
    pub fn append(&mut self, other: ProcessedVideos) {
        self.pixel_values.extend(other.pixel_values);
        self.grid_thw.extend(other.grid_thw);
        self.merge_sizes.extend(other.merge_sizes);
        self.compression_mask.extend(other.compression_mask);
        self.timestamps.extend(other.timestamps);
    }

    /// Number of rows of `pixel_values` (Σ t·h·w).
    pub fn n_patches(&self) -> usize {
        self.pixel_values
            .len()
            .checked_div(self.patch_dim)
            .unwrap_or(0)
    }

    /// Merged tokens per video before pruning: t·h·w / m².
    pub fn tokens_per_video(&self) -> Vec<usize> {
        self.grid_thw
            .iter()
            .zip(&self.merge_sizes)
            .map(|(g, &m)| (g[0] * g[1] * g[2] / (m * m)) as usize)
            .collect()
    }

    /// Video `v`'s part of the compression mask (frame-major), None past the last video.
    pub fn video_mask(&self, v: usize) -> Option<&[bool]> {
        let tokens = self.tokens_per_video();
        let start: usize = tokens.get(..v)?.iter().sum();
        self.compression_mask.get(start..start + tokens.get(v)?)
    }

    /// Serializes with transformers' names and dtypes: `pixel_values_videos` f32
    /// [N, patch_dim], `video_grid_thw` i64 [n, 3], `video_merge_sizes` i64 [n],
    /// `video_compression_mask` bool [Σ t·h·w / m²].
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, VideoProcessError> {
        crate::preprocess::serialize::visual_safetensors(
            crate::preprocess::serialize::Visual::Video,
            &self.pixel_values,
            self.patch_dim,
            &self.grid_thw,
            &self.merge_sizes,
            Some(&self.compression_mask),
        )
        .map_err(VideoProcessError::Serialize)
    }
}
