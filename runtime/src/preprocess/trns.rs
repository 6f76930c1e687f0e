//! The one place where transformers' processor still changes a loaded image:
//! `load_image`'s `convert("RGB")` keeps a *colour-key* transparency (Pillow's
//! `info["transparency"]`: a PNG tRNS naming one palette index, one gray level
//! or one RGB colour; a GIF's transparent index) as an RGB colour, and the
//! processor's `convert_to_rgb` then composites that key onto white. So every
//! pixel of exactly that colour turns white, palette entries that merely share
//! it included. Alpha channels (RGBA, LA, a tRNS with several alphas) are
//! dropped by `convert("RGB")` and never reach the compositing.

use image::{ImageFormat, RgbImage};

/// The colour key Pillow keeps through `convert("RGB")`, if the file has one.
pub(super) fn color_key(bytes: &[u8], format: ImageFormat) -> Option<[u8; 3]> {
    match format {
        ImageFormat::Png => png_key(bytes),
        ImageFormat::Gif => gif_key(bytes),
        _ => None,
    }
}

/// Turns every pixel of colour `key` white (alpha_composite of alpha 0 on white).
pub(super) fn whiten(img: &mut RgbImage, key: [u8; 3]) {
    for p in img.pixels_mut().filter(|p| p.0 == key) {
        p.0 = [255; 3];
    }
}

/// PngImagePlugin's `chunk_tRNS`: for a palette image, a tRNS of 0xFF bytes
/// with exactly one 0x00 is that index (anything else is per-index alpha);
/// for 8-bit (or 2/4-bit) gray, the gray value; for 8-bit RGB, the colour.
/// 1- and 16-bit keys take other Pillow paths and are left alone.
fn png_key(bytes: &[u8]) -> Option<[u8; 3]> {
    let (mut palette, mut trns, mut ihdr) = (None, None, None);
    let mut i = 8;
    while let Some(head) = bytes.get(i..i + 8) {
        let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
        let data = bytes.get(i + 8..(i + 8).checked_add(len)?)?;
        match &head[4..8] {
            b"IHDR" => ihdr = Some(data),
            b"PLTE" => palette = Some(data),
            b"tRNS" => trns = Some(data),
            b"IDAT" => break,
            _ => {}
        }
        i += 12 + len;
    }
    let (ihdr, trns) = (ihdr?, trns?);
    let (depth, color_type) = (*ihdr.get(8)?, *ihdr.get(9)?);
    let be16 = |k: usize| Some(u16::from_be_bytes([*trns.get(k)?, *trns.get(k + 1)?]));
    let byte = |v: u16| u8::try_from(v).ok();
    match (color_type, depth) {
        (3, _) => {
            let zero = trns.iter().position(|&a| a == 0)?;
            let simple = trns
                .iter()
                .enumerate()
                .all(|(k, &a)| a == 0xFF || k == zero);
            let rgb = palette?.get(zero * 3..zero * 3 + 3)?;
            simple.then(|| [rgb[0], rgb[1], rgb[2]])
        }
        (0, 2 | 4 | 8) => byte(be16(0)?).map(|v| [v; 3]),
        (2, 8) => Some([byte(be16(0)?)?, byte(be16(2)?)?, byte(be16(4)?)?]),
        _ => None,
    }
}

/// GifImagePlugin: the first frame's graphic control extension names a
/// transparent index; its colour is in the frame's local table, else the
/// global one.
fn gif_key(bytes: &[u8]) -> Option<[u8; 3]> {
    let flags = *bytes.get(10)?;
    let table_len = |f: u8| 3usize << ((f & 7) + 1);
    let mut i = 13;
    let global = if flags & 0x80 != 0 {
        let t = bytes.get(i..i + table_len(flags))?;
        i += t.len();
        Some(t)
    } else {
        None
    };
    let mut transparent = None;
    loop {
        match *bytes.get(i)? {
            0x21 => {
                let label = *bytes.get(i + 1)?;
                if label == 0xF9 && *bytes.get(i + 2)? == 4 {
                    let gce = bytes.get(i + 3..i + 7)?;
                    transparent = (gce[0] & 1 != 0).then_some(gce[3] as usize);
                }
                i += 2;
                while let Some(&n) = bytes.get(i) {
                    i += 1 + n as usize;
                    if n == 0 {
                        break;
                    }
                }
            }
            0x2C => {
                let f = *bytes.get(i + 9)?;
                let local = (f & 0x80 != 0)
                    .then(|| bytes.get(i + 10..i + 10 + table_len(f)))
                    .flatten();
                let rgb = local
                    .or(global)?
                    .get(transparent? * 3..transparent? * 3 + 3)?;
                return Some([rgb[0], rgb[1], rgb[2]]);
            }
            _ => return None,
        }
    }
}
