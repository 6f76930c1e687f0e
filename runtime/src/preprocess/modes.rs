//! Pillow's `Image.convert("RGB")` for every pixel layout the `image` crate's
//! decoders give, which is what transformers' `load_image` ends with. Each
//! arm names the Pillow mode the same file opens as; the conversions are
//! Pillow's (libImaging/Convert.c and Unpack.c), not the `image` crate's own
//! `to_rgb8` (which scales 16-bit values and would keep no Pillow rules).

use image::{DynamicImage, RgbImage};

/// The decoded image as Pillow's `convert("RGB")` gives it, or a message for
/// layouts Pillow's `load_image` has no RGB conversion matching ours for.
pub(super) fn to_rgb_like_pil(img: DynamicImage) -> Result<RgbImage, String> {
    let (w, h) = (img.width(), img.height());
    let rgb: Vec<u8> = match img {
        // "RGB"
        DynamicImage::ImageRgb8(rgb) => return Ok(rgb),
        // "L" (also 1/2/4-bit grayscale, which the PNG decoder scales to 8 bits
        // exactly as Pillow's "L;2"/"L;4" unpackers do): replicated
        DynamicImage::ImageLuma8(l) => l.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        // "LA", and "L" or "P" with a transparent colour: alpha dropped, no compositing
        DynamicImage::ImageLumaA8(la) => la
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        // "RGBA", "P" with transparency (palette colour kept), WebP with alpha
        DynamicImage::ImageRgba8(rgba) => rgba
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        // "I;16" (16-bit grayscale): Convert.c's I16_RGB clips to 255, it does not scale
        DynamicImage::ImageLuma16(l) => l
            .into_raw()
            .iter()
            .flat_map(|&v| {
                let v = v.min(255) as u8;
                [v, v, v]
            })
            .collect(),
        // "LA" from 16-bit gray+alpha ("LA;16B"): the high byte
        DynamicImage::ImageLumaA16(la) => la
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let v = (p[0] >> 8) as u8;
                [v, v, v]
            })
            .collect(),
        // "RGB" / "RGBA" from 16-bit samples ("RGB;16B", "RGBA;16B"): the high byte
        DynamicImage::ImageRgb16(rgb) => rgb.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(rgba) => rgba
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => {
            return Err(format!(
                "{:?} pixels are not supported yet (8- and 16-bit integer images are)",
                other.color()
            ))
        }
    };
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| "decoded image has the wrong size".to_string())
}

/// Pillow's `cmyk2rgb` (Convert.c): each channel is `255 - k - c·(255 - k)/255`
/// with its rounded integer division.
pub(super) fn cmyk_to_rgb(p: [u8; 4]) -> [u8; 3] {
    let nk = 255 - p[3] as i32;
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let ch = |c: u8| (nk - muldiv255(c as i32, nk)).clamp(0, 255) as u8;
    [ch(p[0]), ch(p[1]), ch(p[2])]
}
