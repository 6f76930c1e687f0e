//! Image preprocessing, matching transformers' `VideoLlama3ImageProcessor`
//! (torchvision backend, the default) — spec §3.1:
//!
//! 1. RGB uint8 as transformers' `load_image` gives it ([`load_image`]: EXIF
//!    orientation applied, Pillow's `convert("RGB")`, alpha dropped),
//! 2. target size from [`smart_resize`] with factor `patch_size * merge_size`,
//! 3. antialiased bicubic resize, bit-exact port of torch's CPU uint8 kernel
//!    ([`resize_bicubic_antialias_u8`]),
//! 4. `(x - 127.5) / 127.5` in f32,
//! 5. patchify into rows of (c, ky, kx) in merge-block-major order.
//!
//! Outputs the same three tensors as transformers: `pixel_values` f32
//! [N, 3·p·p], `image_grid_thw` i64 [n, 3], `image_merge_sizes` i64 [n].

mod config;
mod jpeg;
mod load;
mod modes;
mod orient;
mod patchify;
mod resize;
pub(crate) mod serialize;
mod smart_resize;
mod trns;

use std::path::PathBuf;

use image::RgbImage;

pub use config::ImageProcessorConfig;
pub use load::{decode_image_bytes, load_image};
pub use patchify::{normalize_table, normalize_u8, patchify_into};
pub use resize::{resize_bicubic_antialias_u8, resize_bicubic_antialias_u8_channels};
pub use smart_resize::{smart_resize, MAX_ASPECT_RATIO};

/// Errors of image loading and preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    // The io error is part of the message, not a `source`: a source would print twice in
    // `{:#}` chains ("cannot read x: not found: not found").
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot decode image {}: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    #[error("invalid image size: {0}")]
    InvalidSize(String),
    #[error(
        "absolute aspect ratio must be smaller than 200, got {ratio} (image {height}x{width})"
    )]
    AspectRatio {
        height: usize,
        width: usize,
        ratio: f64,
    },
    #[error("invalid preprocessor config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("invalid preprocessor config: {0}")]
    InvalidConfig(String),
    #[error("cannot serialize preprocessed tensors: {0}")]
    Serialize(String),
}

/// The processor's output for a list of images.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImages {
    /// Row-major [n_patches, patch_dim] (patch_dim = 3·p·p = 588).
    pub pixel_values: Vec<f32>,
    /// Per image [t=1, grid_h, grid_w].
    pub grid_thw: Vec<[i64; 3]>,
    /// Per image merge size (1 for images).
    pub merge_sizes: Vec<i64>,
    /// Row length of `pixel_values`.
    pub patch_dim: usize,
}

impl ProcessedImages {
    /// Number of rows of `pixel_values` (Σ t·h·w).
    pub fn n_patches(&self) -> usize {
        self.pixel_values
            .len()
            .checked_div(self.patch_dim)
            .unwrap_or(0)
    }

    /// LLM image tokens per image: gh·gw / m².
    pub fn tokens_per_image(&self) -> Vec<usize> {
        self.grid_thw
            .iter()
            .zip(&self.merge_sizes)
            .map(|(g, &m)| (g[0] * g[1] * g[2] / (m * m)) as usize)
            .collect()
    }

    /// Serializes to safetensors with transformers' names and dtypes:
    /// `pixel_values` f32 [N, patch_dim], `image_grid_thw` i64 [n, 3],
    /// `image_merge_sizes` i64 [n].
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, PreprocessError> {
        serialize::visual_safetensors(
            serialize::Visual::Image,
            &self.pixel_values,
            self.patch_dim,
            &self.grid_thw,
            &self.merge_sizes,
            None,
        )
        .map_err(PreprocessError::Serialize)
    }
}

/// Resizes one RGB image to its `smart_resize` target (uint8, HWC), as
/// transformers' `VideoLlama3ImageProcessor.resize` does. Returns
/// (pixels, height, width).
pub fn resize_for_model(
    img: &RgbImage,
    cfg: &ImageProcessorConfig,
) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (rh, rw) = smart_resize(h, w, cfg.factor(), cfg.min_pixels, cfg.max_pixels)?;
    Ok((
        resize_bicubic_antialias_u8(img.as_raw(), h, w, rh, rw),
        rh,
        rw,
    ))
}

/// Preprocesses images like `VideoLlama3ImageProcessor()(images)`;
/// several images are concatenated in input order.
pub fn preprocess_images(
    images: &[RgbImage],
    cfg: &ImageProcessorConfig,
) -> Result<ProcessedImages, PreprocessError> {
    cfg.validate()?;
    let mut out = ProcessedImages {
        pixel_values: Vec::new(),
        grid_thw: Vec::with_capacity(images.len()),
        merge_sizes: Vec::with_capacity(images.len()),
        patch_dim: cfg.patch_dim(),
    };
    for img in images {
        let (resized, rh, rw) = resize_for_model(img, cfg)?;
        let (gh, gw) = patchify_into(
            &resized,
            rh,
            rw,
            cfg.patch_size,
            cfg.merge_size,
            &mut out.pixel_values,
        );
        out.grid_thw.push([1, gh as i64, gw as i64]);
        out.merge_sizes.push(cfg.merge_size as i64);
    }
    Ok(out)
}
