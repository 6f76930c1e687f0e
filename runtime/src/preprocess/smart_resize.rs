//! `smart_resize` from transformers' `image_processing_video_llama_3.py`
//! (spec §3.1 step 2), with Python semantics: `round()` is banker's
//! rounding, `/` is true (f64) division, `floor`/`ceil` of floats.

use super::PreprocessError;

/// Aspect ratios above this are rejected, as in transformers.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Target (height, width), both multiples of `factor`, keeping the pixel
/// count within `[min_pixels, max_pixels]` where possible.
///
/// ```text
/// if max(h,w)/min(h,w) > 200: error
/// h' = round(h/f)*f ; w' = round(w/f)*f            (banker's rounding)
/// if h'*w' > max_pixels: b = sqrt(h*w/max_pixels); h' = max(f, floor(h/b/f)*f); w' = ...
/// elif h'*w' < min_pixels: b = sqrt(min_pixels/(h*w)); h' = ceil(h*b/f)*f; w' = ...
/// ```
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), PreprocessError> {
    if height == 0 || width == 0 {
        return Err(PreprocessError::InvalidSize(format!(
            "image has zero size ({height}x{width})"
        )));
    }
    if factor == 0 {
        return Err(PreprocessError::InvalidConfig(
            "factor (patch_size*merge_size) is 0".into(),
        ));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_ASPECT_RATIO {
        return Err(PreprocessError::AspectRatio {
            height,
            width,
            ratio,
        });
    }
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    // Python ints do not overflow; use u128 for the products.
    let area = |a: usize, b: usize| a as u128 * b as u128;
    if area(h_bar, w_bar) > max_pixels as u128 {
        // (height*width)/max_pixels: exact int product, correctly rounded division
        let beta = ((height as u128 * width as u128) as f64 / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if area(h_bar, w_bar) < min_pixels as u128 {
        let beta = (min_pixels as f64 / (height as u128 * width as u128) as f64).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    if h_bar == 0 || w_bar == 0 {
        return Err(PreprocessError::InvalidSize(format!(
            "smart_resize({height}, {width}, factor={factor}, min_pixels={min_pixels}, \
             max_pixels={max_pixels}) gives an empty target {h_bar}x{w_bar}"
        )));
    }
    Ok((h_bar, w_bar))
}
