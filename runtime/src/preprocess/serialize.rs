//! The processors' outputs as safetensors, with transformers' tensor names and dtypes: one
//! writer for images and videos, which differ only in names and the video's compression mask.

use safetensors::tensor::{Dtype, TensorView};

/// Which processor's names to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Visual {
    /// `pixel_values`, `image_grid_thw`, `image_merge_sizes`.
    Image,
    /// `pixel_values_videos`, `video_grid_thw`, `video_merge_sizes`, `video_compression_mask`.
    Video,
}

/// `pixel_values` f32 [N, patch_dim], the grid i64 [n, 3], merge sizes i64 [n], and for videos
/// the compression mask bool [Σ t·h·w / m²]. Errors are safetensors' own, as text.
pub(crate) fn visual_safetensors(
    kind: Visual,
    pixel_values: &[f32],
    patch_dim: usize,
    grid_thw: &[[i64; 3]],
    merge_sizes: &[i64],
    compression_mask: Option<&[bool]>,
) -> Result<Vec<u8>, String> {
    let (pv_name, grid_name, merge_name) = match kind {
        Visual::Image => ("pixel_values", "image_grid_thw", "image_merge_sizes"),
        Visual::Video => ("pixel_values_videos", "video_grid_thw", "video_merge_sizes"),
    };
    let pv: Vec<u8> = pixel_values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let grid: Vec<u8> = grid_thw
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let ms: Vec<u8> = merge_sizes.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mask: Option<Vec<u8>> = compression_mask.map(|m| m.iter().map(|&b| u8::from(b)).collect());
    let n = grid_thw.len();
    let rows = pixel_values.len().checked_div(patch_dim).unwrap_or(0);
    let err = |e: safetensors::SafeTensorError| e.to_string();
    let mut views = vec![
        (
            pv_name,
            TensorView::new(Dtype::F32, vec![rows, patch_dim], &pv).map_err(err)?,
        ),
        (
            grid_name,
            TensorView::new(Dtype::I64, vec![n, 3], &grid).map_err(err)?,
        ),
        (
            merge_name,
            TensorView::new(Dtype::I64, vec![n], &ms).map_err(err)?,
        ),
    ];
    if let Some(mask) = &mask {
        views.push((
            "video_compression_mask",
            TensorView::new(Dtype::BOOL, vec![mask.len()], mask).map_err(err)?,
        ));
    }
    safetensors::tensor::serialize(views, None).map_err(err)
}
