//! Image file loading and RGB conversion as transformers does it for PIL
//! inputs (`image_transforms.convert_to_rgb`): images with an alpha channel
//! are composited onto an opaque white background with Pillow's
//! `alpha_composite` integer arithmetic, then the alpha is dropped.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, RgbImage, RgbaImage};
use vl3c_frontends::limits::{read_bounded, MAX_IMAGE_BYTES};

use super::PreprocessError;

/// Loads a PNG or JPEG file as 8-bit RGB. Errors name the file; malformed,
/// truncated or empty files give an error, never a panic.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, PreprocessError> {
    let path = path.as_ref();
    let what = "an image file (PNG or JPEG)";
    let bytes = read_bounded(path, MAX_IMAGE_BYTES, what).map_err(|e| PreprocessError::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    decode_image_bytes(&bytes, path)
}

/// Decodes an in-memory PNG/JPEG; `name` is used in error messages.
pub fn decode_image_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage, PreprocessError> {
    let err = |msg: String| PreprocessError::Decode {
        path: name.to_path_buf(),
        msg,
    };
    if bytes.is_empty() {
        return Err(err("file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err(
            "not a recognised image format (PNG or JPEG expected)".into()
        ));
    }
    // Decoders should not panic on bad input, but make sure of it.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| err("the image decoder panicked".into()))?
        .map_err(|e| err(e.to_string()))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(PreprocessError::InvalidSize(format!(
            "{}: image has zero size ({}x{})",
            name.display(),
            decoded.height(),
            decoded.width()
        )));
    }
    Ok(to_rgb_like_transformers(decoded))
}

/// `convert_to_rgb`: alpha images are composited onto white, others converted.
pub fn to_rgb_like_transformers(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        composite_on_white(&img.to_rgba8())
    } else {
        img.to_rgb8()
    }
}

/// Pillow's `Image.alpha_composite(white, img).convert("RGB")`
/// (libImaging/AlphaComposite.c, PRECISION_BITS = 7).
pub fn composite_on_white(src: &RgbaImage) -> RgbImage {
    const PRECISION_BITS: u32 = 7;
    #[inline]
    fn shift_for_div255(a: u32) -> u32 {
        ((a >> 8) + a) >> 8
    }
    let (w, h) = src.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, s) in out.pixels_mut().zip(src.pixels()) {
        let [r, g, b, a] = s.0;
        if a == 0 {
            o.0 = [255, 255, 255];
            continue;
        }
        let a = a as u32;
        let blend = 255 * (255 - a); // dst alpha = 255
        let outa255 = a * 255 + blend;
        let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
        let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
        let ch = |c: u8| {
            let tmp = c as u32 * coef1 + 255 * coef2;
            (shift_for_div255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
        };
        o.0 = [ch(r), ch(g), ch(b)];
    }
    out
}
