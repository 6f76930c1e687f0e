//! `PIL.ImageOps.exif_transpose`, the first step of transformers' `load_image`:
//! the EXIF Orientation tag (IFD0, tag 0x0112; Pillow's `getexif` falls back to
//! an XMP `tiff:Orientation` when EXIF has none) turned into the transpose that
//! shows the picture upright. Without it a portrait phone photo (orientation 6)
//! reaches the model lying on its side.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

/// The orientation Pillow reads from an EXIF payload (with or without the
/// JPEG APP1 `Exif\0\0` prefix) and an XMP packet; values outside 1..=8 and
/// missing tags mean no transform, as in `exif_transpose`.
pub(super) fn orientation(exif: Option<&[u8]>, xmp: Option<&[u8]>) -> Orientation {
    let from_exif = exif.and_then(|e| {
        let e = e.strip_prefix(b"Exif\0\0").unwrap_or(e);
        Orientation::from_exif_chunk(e)
    });
    from_exif
        .or_else(|| xmp.and_then(xmp_orientation))
        .unwrap_or(Orientation::NoTransforms)
}

/// Pillow's `re.search(rb'tiff:Orientation(="|>)([0-9])', xmp)`.
fn xmp_orientation(xmp: &[u8]) -> Option<Orientation> {
    const KEY: &[u8] = b"tiff:Orientation";
    let mut rest = xmp;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let tail = &rest[at + KEY.len()..];
        let digit = match tail {
            [b'=', b'"', d, ..] | [b'>', d, ..] if d.is_ascii_digit() => Some(d - b'0'),
            _ => None,
        };
        if let Some(d) = digit {
            return Orientation::from_exif(d);
        }
        rest = tail;
    }
    None
}

/// The JPEG's first EXIF APP1 segment and its last XMP APP1 segment (what
/// Pillow's JPEG plugin keeps in `info["exif"]` / `info["xmp"]`), read from
/// the markers before the first scan. Malformed marker data ends the search:
/// the decoder reports what is wrong with the file.
pub(super) fn jpeg_metadata(bytes: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let (mut exif, mut xmp) = (None, None);
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xFF => i -= 1, // fill byte
            0x01 | 0xD0..=0xD7 => {}
            0xDA | 0xD9 => break,
            _ => {
                let Some(len) = bytes
                    .get(i..i + 2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                else {
                    break;
                };
                let Some(seg) = bytes.get(i + 2..i + len as usize) else {
                    break;
                };
                if marker == 0xE1 && seg.starts_with(b"Exif\0\0") && exif.is_none() {
                    exif = Some(seg);
                } else if marker == 0xE1 && seg.starts_with(XMP) {
                    xmp = Some(&seg[XMP.len()..]);
                }
                i += len as usize;
            }
        }
    }
    (exif, xmp)
}

/// The image turned upright (Pillow's transposes for orientations 2..=8).
pub(super) fn apply(img: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return img;
    }
    let mut dynamic = DynamicImage::ImageRgb8(img);
    dynamic.apply_orientation(orientation);
    dynamic.into_rgb8()
}
