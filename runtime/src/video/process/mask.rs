//! `video_compression_mask` (Differential Frame Pruning, spec §4.3) by the executor's
//! `diff_frame_prune`, the op the model graphs use, so the processor's mask and the graphs'
//! cannot drift apart.

use super::VideoProcessError;
use crate::exec::{diff_frame_prune, Tensor, TensorData};

/// transformers' `_get_compression_mask(threshold=0.1)`: a merged token is kept when the mean
/// |Δ| of its normalized pixels against the previous frame, times 255, exceeds it.
const THRESHOLD: f64 = 0.1;

/// One video's pixels `[t·h·w, patch_dim]` and grid `[t, h, w]` → (the same pixels, the keep
/// mask over its `t·h·w / merge²` merged tokens).
pub(super) fn compression_mask(
    pixels: Vec<f32>,
    patch_dim: usize,
    grid: [usize; 3],
    merge: usize,
) -> Result<(Vec<f32>, Vec<bool>), VideoProcessError> {
    let err = |m: String| VideoProcessError::Mask(m);
    let rows = pixels.len() / patch_dim.max(1);
    let grid_i64 = grid
        .iter()
        .map(|&d| i64::try_from(d).map_err(|_| err(format!("grid {grid:?} overflows"))))
        .collect::<Result<_, _>>()?;
    let pixels = Tensor::f32(vec![rows, patch_dim], pixels);
    let mask = diff_frame_prune(
        &pixels,
        &Tensor::i64(vec![1, 3], grid_i64),
        THRESHOLD,
        merge,
        None,
    )
    .map_err(err)?;
    let pixels = match pixels.data {
        TensorData::F32(v) => v,
        _ => unreachable!("built as f32 above"),
    };
    match mask.data {
        TensorData::Bool(mask) => Ok((pixels, mask)),
        other => Err(err(format!("expected a bool mask, got {}", other.dtype()))),
    }
}
