//! Image files as transformers' `load_image` reads them: `PIL.Image.open`,
//! `ImageOps.exif_transpose`, `convert("RGB")`. That is the oracle for a file a
//! user gives (the processor's own `convert_to_rgb`, which composites alpha onto
//! white, only sees images that are RGB by then, so it changes nothing): alpha
//! is dropped, not composited, and the EXIF orientation is applied. The one
//! exception is a colour-key transparency, which survives `convert("RGB")` and
//! which the processor does composite ([`super::trns`]).
//!
//! JPEG goes through libjpeg-turbo ([`super::jpeg`]), the decoder Pillow uses,
//! for bit-identical pixels; PNG, WebP, BMP, TIFF and GIF through the `image`
//! crate, whose pixels then follow Pillow's mode conversions ([`super::modes`]).
//! Every decode is bounded first: the file's size by `read_bounded`, the
//! header's pixel count by Pillow's decompression-bomb limit.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use vl3c_frontends::limits::{read_bounded, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS};

use super::{jpeg, modes, orient, trns, PreprocessError};

const SUPPORTED: &str = "PNG, JPEG, WebP, BMP, TIFF or GIF";

/// Loads an image file as 8-bit RGB, upright. Errors name the file; malformed,
/// truncated, empty or oversized files give an error, never a panic.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, PreprocessError> {
    let path = path.as_ref();
    let what = "an image file (PNG, JPEG, WebP, BMP, TIFF or GIF)";
    let bytes = read_bounded(path, MAX_IMAGE_BYTES, what).map_err(|e| PreprocessError::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    decode_image_bytes(&bytes, path)
}

/// Decodes an in-memory image file as [`load_image`] does; `name` is used in
/// error messages.
pub fn decode_image_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage, PreprocessError> {
    let err = |msg: String| PreprocessError::Decode {
        path: name.to_path_buf(),
        msg,
    };
    if bytes.is_empty() {
        return Err(err("file is empty".into()));
    }
    let (img, orientation) = match sniff(bytes).map_err(err)? {
        ImageFormat::Jpeg => {
            let (exif, xmp) = orient::jpeg_metadata(bytes);
            let d = jpeg::decode_jpeg(bytes, &check_pixels).map_err(err)?;
            let img = RgbImage::from_raw(d.width, d.height, d.rgb)
                .ok_or_else(|| err("decoded image has the wrong size".into()))?;
            (img, orient::orientation(exif, xmp))
        }
        format => {
            let (mut img, orientation) = decode_with_image_crate(bytes, format).map_err(err)?;
            if let Some(key) = trns::color_key(bytes, format) {
                trns::whiten(&mut img, key);
            }
            (img, orientation)
        }
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(PreprocessError::InvalidSize(format!(
            "{}: image has zero size ({}x{})",
            name.display(),
            img.height(),
            img.width()
        )));
    }
    Ok(orient::apply(img, orientation))
}

/// The file's format from its first bytes, or why it cannot be read. AVIF and
/// HEIF are recognised so the error can say what they are.
fn sniff(bytes: &[u8]) -> Result<ImageFormat, String> {
    if let Some(brand) = bytes
        .get(8..12)
        .filter(|_| bytes.get(4..8) == Some(b"ftyp"))
    {
        let brand = String::from_utf8_lossy(brand);
        let kind = match &*brand {
            "avif" | "avis" => Some("AVIF"),
            "heic" | "heix" | "hevc" | "heim" | "heis" | "mif1" | "msf1" => Some("HEIF/HEIC"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(format!(
                "{kind} images are not supported yet; convert the file to {SUPPORTED}"
            ));
        }
    }
    match image::guess_format(bytes) {
        Ok(
            f @ (ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::Gif),
        ) => Ok(f),
        Ok(f) => Err(format!(
            "{f:?} images are not supported yet; convert the file to {SUPPORTED}"
        )),
        Err(_) => Err(format!(
            "not a recognised image format ({SUPPORTED} expected)"
        )),
    }
}

/// Pillow's `_decompression_bomb_check`: more than `2 * MAX_IMAGE_PIXELS` is an error.
fn check_pixels(width: u32, height: u32) -> Result<(), String> {
    let pixels = width as u64 * height as u64;
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "image size ({width}x{height} = {pixels} pixels) exceeds the limit of \
             {MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb bound)"
        ));
    }
    Ok(())
}

/// Decodes a non-JPEG file with the `image` crate: header and orientation
/// first, the size checked before any pixel buffer exists.
fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
) -> Result<(RgbImage, image::metadata::Orientation), String> {
    let with_iend;
    let bytes = if format == ImageFormat::Png && !bytes.ends_with(PNG_IEND) {
        // Pillow stops reading a PNG once its pixels are complete; the png
        // crate also wants the closing IEND chunk. A file whose pixel data is
        // cut short still fails (the zlib stream ends early).
        with_iend = [bytes, PNG_IEND].concat();
        &with_iend[..]
    } else {
        bytes
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The pixel bound is ours; allow what a bounded image needs in the widest
    // layout (16-bit RGBA), which the crate's default 512 MiB would refuse.
    let mut limits = Limits::no_limits();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    // Decoders should not panic on bad input, but make sure of it (quietly: the user sees
    // one error line).
    let caught = crate::guard::catch_quietly(|| {
        let mut decoder = reader.into_decoder().map_err(message)?;
        let (w, h) = decoder.dimensions();
        check_pixels(w, h)?;
        let exif = decoder.exif_metadata().ok().flatten();
        let xmp = decoder.xmp_metadata().ok().flatten();
        let orientation = match format {
            // the TIFF decoder reads the Orientation tag of the file's own IFD
            ImageFormat::Tiff => decoder.orientation().map_err(message)?,
            _ => orient::orientation(exif.as_deref(), xmp.as_deref()),
        };
        let img = DynamicImage::from_decoder(decoder).map_err(message)?;
        Ok::<_, String>((img, orientation))
    });
    let (img, orientation) =
        caught.map_err(|panic| format!("the image decoder panicked ({panic})"))??;
    Ok((modes::to_rgb_like_pil(img)?, orientation))
}

/// The chunk that ends every PNG: length 0, "IEND", its CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xAE\x42\x60\x82";

/// The `image` crate's error as one line; running out of data is said the way
/// Pillow says it.
fn message(e: image::ImageError) -> String {
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "image file is truncated".into()
        }
        e => e.to_string().replace('\n', " "),
    }
}
