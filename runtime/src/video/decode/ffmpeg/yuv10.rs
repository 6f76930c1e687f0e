//! 10-bit YUV 4:2:0 → RGB24 as PyAV's libswscale (9.5, FFmpeg 8) converts it; Debian's 6.7
//! converts these frames differently (mean 4 levels off, up to 130 on colour edges), so H.264
//! High 10 and HEVC Main 10 frames are converted here instead.
//!
//! libswscale 9 has no unscaled routine for this pair and takes its general scaler with
//! `SWS_BILINEAR` and no full chroma interpolation. Measured against PyAV on decoded High 10
//! frames and on random synthetic ones (tools/golden/probe_swscale10.py, every matrix and range),
//! this is its arithmetic, bit for bit:
//! - luma is widened to 15 bits and rounded to 8: `(y + 2) >> 2`;
//! - chroma is sampled once per pair of luma columns (RGB24 output keeps horizontal 4:2:x) and
//!   per luma row, bilinearly, with the picture's chroma siting (`chroma_location`, which
//!   libswscale 9 reads from the frame and 6.7 ignores): 14-bit weights horizontally, 12-bit
//!   vertically, edges replicated, then rounded to 8 bits;
//! - the 8-bit triple goes through `ff_yuv2rgb_c_init_tables`' lookup tables, whose luma ramp
//!   and chroma offsets are quantised differently from the SIMD 8-bit path in `decode::yuv`.

use rayon::prelude::*;

use crate::video::decode::ColorInfo;

/// Where chroma samples sit relative to luma, in 1/256 of a luma sample (libavutil's
/// `av_chroma_location_enum_to_pos`), from the frame's `AVChromaLocation` numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChromaSiting {
    h: i64,
    v: i64,
}

impl ChromaSiting {
    pub(super) fn from_av(location: u32) -> Self {
        let (h, v) = match location {
            1 => (0, 128),   // left (MPEG-2, H.264's and HEVC's default)
            2 => (128, 128), // center (MPEG-1, JPEG)
            3 => (0, 0),     // top-left
            4 => (128, 0),   // top
            5 => (0, 256),   // bottom-left
            6 => (128, 256), // bottom
            // Unspecified: libswscale's default for a subsampled plane, halfway.
            _ => (128, 128),
        };
        ChromaSiting { h, v }
    }
}

/// One plane of 16-bit little-endian samples: line `r` starts at byte `(first + r·step)·stride`.
pub(super) struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub first: usize,
    pub step: usize,
}

impl Plane<'_> {
    fn line(&self, r: usize, width: usize) -> impl Iterator<Item = i64> + '_ {
        let start = (self.first + r * self.step) * self.stride;
        self.data[start..start + 2 * width]
            .chunks_exact(2)
            .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
    }

    /// Whether `lines` lines of `width` samples lie inside the data.
    fn holds(&self, lines: usize, width: usize) -> bool {
        lines == 0
            || ((self.first + (lines - 1) * self.step)
                .checked_mul(self.stride)
                .and_then(|s| s.checked_add(2 * width))
                .is_some_and(|end| end <= self.data.len())
                && self.stride >= 2 * width)
    }
}

/// A picture (or one field of one) in `yuv420p10le`.
pub(super) struct Yuv420p10<'a> {
    pub width: usize,
    pub height: usize,
    pub y: Plane<'a>,
    pub u: Plane<'a>,
    pub v: Plane<'a>,
}

/// Bilinear taps for output position `i`: the source sample at `f = (i·num + off) / den` with
/// `den` a power of two, as (first index, weight of the next) with `one` the weight sum.
fn taps(i: i64, num: i64, off: i64, den: i64, last: usize, one: i64) -> (usize, usize, i64) {
    let f = i * num + off;
    let i0 = f.div_euclid(den);
    let w1 = f.rem_euclid(den) * one / den;
    let clamp = |k: i64| k.clamp(0, last as i64) as usize;
    (clamp(i0), clamp(i0 + 1), w1)
}

/// `ff_yuv2rgb_c_init_tables` for 24-bit output, brightness 0, contrast and saturation 1.
struct Tables {
    /// `y_table` indexed from its `yoffs` origin: luma index `k` (may be negative).
    cy: i64,
    base: i64,
    crv: i64,
    cbu: i64,
    cgu: i64,
    cgv: i64,
}

impl Tables {
    fn new(color: ColorInfo) -> Self {
        let [mut crv, mut cbu, cgu, cgv] = color.matrix_row();
        let (mut cgu, mut cgv) = (-cgu, -cgv);
        let (cy, oy, yoffs): (i64, i64, i64) = if color.full_range {
            // C integer division truncates toward zero, as Rust's does.
            crv = crv * 224 / 255;
            cbu = cbu * 224 / 255;
            cgu = cgu * 224 / 255;
            cgv = cgv * 224 / 255;
            (1 << 16, 0, 384)
        } else {
            ((1 << 16) * 255 / 219, 16 << 16, 326)
        };
        let scale = |c: i64| ((c << 16) + 0x8000) / cy;
        Tables {
            cy,
            base: yoffs * cy - (384 << 16) - oy + 0x8000,
            crv: scale(crv),
            cbu: scale(cbu),
            cgu: scale(cgu),
            cgv: scale(cgv),
        }
    }

    fn y(&self, k: i64) -> u8 {
        ((k * self.cy + self.base) >> 16).clamp(0, 255) as u8
    }

    /// `fill_table` / `fill_gv_table`: a chroma sample's offset into the luma table.
    fn offset(c: i64, inc: i64) -> i64 {
        ((c.clamp(0, 255) * inc) >> 16) - (inc >> 9)
    }

    fn rgb(&self, y: i64, u: i64, v: i64) -> [u8; 3] {
        [
            self.y(y + Self::offset(v, self.crv)),
            self.y(y + Self::offset(u, self.cgu) + Self::offset(v, self.cgv)),
            self.y(y + Self::offset(u, self.cbu)),
        ]
    }
}

/// Converts to packed RGB24 rows (`width·3` bytes each), or `None` if the planes do not hold
/// the picture.
pub(super) fn yuv420p10_to_rgb(
    p: &Yuv420p10<'_>,
    color: ColorInfo,
    siting: ChromaSiting,
) -> Option<Vec<u8>> {
    let (w, h) = (p.width, p.height);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w == 0 || h == 0 || !p.y.holds(h, w) || !p.u.holds(ch, cw) || !p.v.holds(ch, cw) {
        return None;
    }
    let tables = Tables::new(color);
    // Horizontal pass, 10 → 15 bits: output chroma column j covers luma columns 2j and 2j+1
    // (centred at 2j + ½); source sample k sits at luma 2k + h/256.
    let horizontal = |plane: &Plane<'_>| -> Vec<i64> {
        let mut out = Vec::with_capacity(cw * ch);
        let cols: Vec<(usize, usize, i64)> = (0..cw as i64)
            .map(|j| taps(j, 512, 128 - siting.h, 512, cw - 1, 1 << 14))
            .collect();
        for r in 0..ch {
            let line: Vec<i64> = plane.line(r, cw).collect();
            out.extend(
                cols.iter()
                    .map(|&(a, b, w1)| (line[a] * ((1 << 14) - w1) + line[b] * w1) >> 9),
            );
        }
        out
    };
    let (u15, v15) = (horizontal(&p.u), horizontal(&p.v));
    let mut rgb = vec![0u8; w * h * 3];
    rgb.par_chunks_mut(w * 3)
        .enumerate()
        .for_each(|(row, out)| {
            // Luma row `row` takes chroma at (row − v/256) / 2, in 12-bit weights.
            let (a, b, w1) = taps(row as i64, 256, -siting.v, 512, ch - 1, 1 << 12);
            let w0 = (1 << 12) - w1;
            let chroma = |c: &[i64]| -> Vec<i64> {
                let (above, below) = (&c[a * cw..][..cw], &c[b * cw..][..cw]);
                above
                    .iter()
                    .zip(below)
                    .map(|(x, y)| (x * w0 + y * w1 + (1 << 18)) >> 19)
                    .collect()
            };
            let (u8s, v8s) = (chroma(&u15), chroma(&v15));
            for (x, (px, y)) in out.chunks_exact_mut(3).zip(p.y.line(row, w)).enumerate() {
                px.copy_from_slice(&tables.rgb((y + 2) >> 2, u8s[x / 2], v8s[x / 2]));
            }
        });
    Some(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane laid out with `stride = 2·width + pad` bytes.
    fn at(data: &[u8], width: usize, pad: usize, first: usize, step: usize) -> Plane<'_> {
        Plane {
            data,
            stride: 2 * width + pad,
            first,
            step,
        }
    }

    fn plane(samples: &[u64], width: usize) -> Vec<u8> {
        // A stride wider than the picture, as decoders lay planes out.
        let stride = 2 * width + 6;
        let mut out = vec![0xAB; stride * samples.len() / width];
        for (r, line) in samples.chunks(width).enumerate() {
            for (x, &s) in line.iter().enumerate() {
                out[r * stride + 2 * x..][..2].copy_from_slice(&(s as u16).to_le_bytes());
            }
        }
        out
    }

    /// Random pictures over the whole 10-bit range, every matrix and range, against PyAV.
    #[test]
    fn random_pictures_equal_libswscale_9() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/video_media/swscale10_random.json"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (w, h) = (
            doc["width"].as_u64().unwrap() as usize,
            doc["height"].as_u64().unwrap() as usize,
        );
        let list = |c: &serde_json::Value, k: &str| -> Vec<u64> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        let cases = doc["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 12);
        for case in cases {
            let (y, u, v) = (
                plane(&list(case, "y"), w),
                plane(&list(case, "u"), w / 2),
                plane(&list(case, "v"), w / 2),
            );
            let picture = Yuv420p10 {
                width: w,
                height: h,
                y: at(&y, w, 6, 0, 1),
                u: at(&u, w / 2, 6, 0, 1),
                v: at(&v, w / 2, 6, 0, 1),
            };
            let color = ColorInfo {
                matrix: case["colorspace"].as_u64().unwrap() as u8,
                full_range: case["full_range"].as_bool().unwrap(),
            };
            let got = yuv420p10_to_rgb(&picture, color, ChromaSiting::from_av(0)).unwrap();
            let want: Vec<u8> = list(case, "rgb").iter().map(|&x| x as u8).collect();
            assert_eq!(got, want, "{color:?}");
        }
    }

    /// Field 1 of a picture is its odd lines, chroma lines included.
    #[test]
    fn a_field_is_every_other_line() {
        let (w, h) = (4, 8);
        let ys: Vec<u64> = (0..(w * h) as u64).map(|i| 64 + 20 * i).collect();
        let cs: Vec<u64> = (0..(w * h / 4) as u64).map(|i| 300 + 50 * i).collect();
        let (y, u) = (plane(&ys, w), plane(&cs, w / 2));
        let field = Yuv420p10 {
            width: w,
            height: h / 2,
            y: at(&y, w, 6, 1, 2),
            u: at(&u, w / 2, 6, 1, 2),
            v: at(&u, w / 2, 6, 1, 2),
        };
        let odd = |s: &[u64], width: usize| -> Vec<u64> {
            s.chunks(width)
                .skip(1)
                .step_by(2)
                .flatten()
                .copied()
                .collect()
        };
        let (fy, fu) = (plane(&odd(&ys, w), w), plane(&odd(&cs, w / 2), w / 2));
        let alone = Yuv420p10 {
            width: w,
            height: h / 2,
            y: at(&fy, w, 6, 0, 1),
            u: at(&fu, w / 2, 6, 0, 1),
            v: at(&fu, w / 2, 6, 0, 1),
        };
        let color = ColorInfo::default();
        let siting = ChromaSiting::from_av(1);
        assert_eq!(
            yuv420p10_to_rgb(&field, color, siting),
            yuv420p10_to_rgb(&alone, color, siting)
        );
    }

    #[test]
    fn planes_too_small_are_refused() {
        let y = vec![0u8; 2 * 4 * 3];
        let c = vec![0u8; 2 * 2 * 2];
        let p = Yuv420p10 {
            width: 4,
            height: 4,
            y: at(&y, 4, 0, 0, 1),
            u: at(&c, 2, 0, 0, 1),
            v: at(&c, 2, 0, 0, 1),
        };
        assert!(yuv420p10_to_rgb(&p, ColorInfo::default(), ChromaSiting::from_av(0)).is_none());
    }
}
