//! YUV 4:2:0 → RGB, bit-exact with what transformers gets from PyAV's
//! `frame.to_ndarray(format="rgb24")` on x86-64.
//!
//! PyAV (18, libswscale 9.5) converts with `sws_scale_frame` and the flags `SWS_BILINEAR`, no
//! `ACCURATE_RND` and no full chroma interpolation. For an unscaled yuv420p → rgb24 conversion
//! libswscale then takes its SSSE3 routine (`yuv_2_rgb.asm`), whose arithmetic this module
//! reproduces: chroma is nearest-neighbour (one U/V sample per 2×2 luma block), every term is a
//! 16-bit `pmulhw` (product ≫ 16, rounding down) of a sample scaled by 8 against a coefficient
//! in 1/8192 units, the sums saturate to 0..=255. Measured on the fixtures against PyAV's own
//! output: identical on every pixel, for BT.601/BT.709/BT.2020, limited and full range, and
//! widths that are not a multiple of 8 (see tools/golden/make_video_fixtures.py).
//!
//! The coefficients follow libswscale's `sws_setColorspaceDetails` as PyAV drives it: the
//! matrix from the frame's colour space (the stream's VUI `matrix_coefficients`, BT.601 when
//! unspecified) and the range from `video_full_range_flag`.

use image::RgbImage;
use rayon::prelude::*;

/// The colour description of a stream, as H.264's VUI signals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorInfo {
    /// H.264 `matrix_coefficients` (2 = unspecified).
    pub matrix: u8,
    /// `video_full_range_flag`: luma 0..=255 instead of 16..=235.
    pub full_range: bool,
}

impl Default for ColorInfo {
    fn default() -> Self {
        ColorInfo {
            matrix: 2,
            full_range: false,
        }
    }
}

impl ColorInfo {
    /// libswscale's `ff_yuv2rgb_coeffs` row for this matrix: {crv, cbu, cgu, cgv} in 1/65536,
    /// limited range. `sws_getCoefficients` maps the values it has no row for (YCgCo, ≥ 11)
    /// to BT.601, and row 0 (identity / GBR) holds BT.601 too.
    pub(super) fn matrix_row(self) -> [i64; 4] {
        const BT601: [i64; 4] = [104597, 132201, 25675, 53279];
        match self.matrix {
            1 => [117489, 138438, 13975, 34925],      // BT.709
            4 => [104448, 132798, 24759, 53109],      // FCC
            7 => [117579, 136230, 16907, 35559],      // SMPTE 240M
            9 | 10 => [110013, 140363, 12277, 42626], // BT.2020
            _ => BT601,
        }
    }
}

/// The 16-bit constants of the SIMD routine (`c->yCoeff` … `c->yOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Coefficients {
    y: i32,
    vr: i32,
    ub: i32,
    ug: i32,
    vg: i32,
    y_offset: i32,
}

/// libswscale's `roundToInt16`: round half up, then clamp to ±0x7FFF.
fn round_to_i16(f: i64) -> i32 {
    let r = (f + (1 << 15)) >> 16;
    r.clamp(-0x7FFF, 0x7FFF) as i32
}

impl Coefficients {
    /// `ff_yuv2rgb_c_init_tables` with brightness 0, contrast and saturation 1.
    fn new(color: ColorInfo) -> Self {
        let [mut crv, mut cbu, cgu, cgv] = color.matrix_row();
        let (mut cgu, mut cgv) = (-cgu, -cgv);
        let mut cy: i64 = 1 << 16;
        let mut oy: i64 = 0;
        if color.full_range {
            // C integer division truncates toward zero, as Rust's does.
            crv = crv * 224 / 255;
            cbu = cbu * 224 / 255;
            cgu = cgu * 224 / 255;
            cgv = cgv * 224 / 255;
        } else {
            cy = cy * 255 / 219;
            oy = 16 << 16;
        }
        Coefficients {
            y: round_to_i16(cy * 8192),
            vr: round_to_i16(crv * 8192),
            ub: round_to_i16(cbu * 8192),
            ug: round_to_i16(cgu * 8192),
            vg: round_to_i16(cgv * 8192),
            y_offset: round_to_i16(oy * 8),
        }
    }
}

/// One decoded picture's planes. Strides may exceed the widths; chroma planes are
/// `ceil(width / 2)` × `ceil(height / 2)`.
pub struct Yuv420<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
}

impl Yuv420<'_> {
    /// Whether the planes hold `width` × `height` at these strides (so indexing cannot fail).
    pub fn is_consistent(&self) -> bool {
        let (cw, ch) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let fits = |plane: &[u8], stride: usize, w: usize, h: usize| {
            h == 0 || (stride >= w && plane.len() >= (h - 1) * stride + w)
        };
        self.width > 0
            && self.height > 0
            && fits(self.y, self.y_stride, self.width, self.height)
            && fits(self.u, self.uv_stride, cw, ch)
            && fits(self.v, self.uv_stride, cw, ch)
    }
}

/// `pmulhw`: the high 16 bits of the signed 32-bit product.
#[inline]
fn mulhi(a: i32, b: i32) -> i32 {
    (a * b) >> 16
}

/// Converts to RGB as PyAV's `to_ndarray(format="rgb24")` does. Callers check
/// [`Yuv420::is_consistent`] first.
pub fn yuv420_to_rgb(p: &Yuv420<'_>, color: ColorInfo) -> RgbImage {
    let k = Coefficients::new(color);
    let mut out = vec![0u8; p.width * p.height * 3];
    let clamp = |x: i32| x.clamp(0, 255) as u8;
    let cw = p.width.div_ceil(2);
    // One task per pair of luma rows: they share a chroma row.
    out.par_chunks_mut(2 * p.width * 3)
        .enumerate()
        .for_each(|(pair, rows)| {
            let c = pair * p.uv_stride;
            let terms: Vec<(i32, i32, i32)> = (0..cw)
                .map(|cx| {
                    let u = i32::from(p.u[c + cx]) * 8 - 1024;
                    let v = i32::from(p.v[c + cx]) * 8 - 1024;
                    (
                        mulhi(v, k.vr),
                        mulhi(u, k.ug) + mulhi(v, k.vg),
                        mulhi(u, k.ub),
                    )
                })
                .collect();
            for (r, dst) in rows.chunks_exact_mut(p.width * 3).enumerate() {
                let row = 2 * pair + r;
                let luma = &p.y[row * p.y_stride..row * p.y_stride + p.width];
                for (x, (&y, px)) in luma.iter().zip(dst.chunks_exact_mut(3)).enumerate() {
                    let y = mulhi(i32::from(y) * 8 - k.y_offset, k.y);
                    let (r, g, b) = terms[x / 2];
                    px[0] = clamp(y + r);
                    px[1] = clamp(y + g);
                    px[2] = clamp(y + b);
                }
            }
        });
    RgbImage::from_raw(p.width as u32, p.height as u32, out)
        .expect("buffer sized width × height × 3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_match_libswscale() {
        // The values libswscale's SIMD routine loads (measured through PyAV's output).
        let bt601 = Coefficients::new(ColorInfo::default());
        assert_eq!(
            bt601,
            Coefficients {
                y: 9539,
                vr: 13075,
                ub: 16525,
                ug: -3209,
                vg: -6660,
                y_offset: 128
            }
        );
        let bt709 = Coefficients::new(ColorInfo {
            matrix: 1,
            full_range: false,
        });
        assert_eq!(
            bt709,
            Coefficients {
                y: 9539,
                vr: 14686,
                ub: 17305,
                ug: -1747,
                vg: -4366,
                y_offset: 128
            }
        );
        let full = Coefficients::new(ColorInfo {
            matrix: 2,
            full_range: true,
        });
        assert_eq!(
            full,
            Coefficients {
                y: 8192,
                vr: 11485,
                ub: 14516,
                ug: -2819,
                vg: -5850,
                y_offset: 0
            }
        );
        let full709 = Coefficients::new(ColorInfo {
            matrix: 1,
            full_range: true,
        });
        assert_eq!(
            full709,
            Coefficients {
                y: 8192,
                vr: 12901,
                ub: 15201,
                ug: -1534,
                vg: -3835,
                y_offset: 0
            }
        );
        let bt2020 = Coefficients::new(ColorInfo {
            matrix: 9,
            full_range: false,
        });
        assert_eq!(
            bt2020,
            Coefficients {
                y: 9539,
                vr: 13752,
                ub: 17545,
                ug: -1535,
                vg: -5328,
                y_offset: 128
            }
        );
    }

    #[test]
    fn odd_sizes_and_strides() {
        // 3×3 picture, luma stride 5, chroma 2×2 at stride 4.
        let y = [16u8, 235, 128, 0, 0, 16, 235, 128, 0, 0, 16, 235, 128];
        let u = [128u8, 128, 0, 0, 128, 128];
        let v = [128u8, 128, 0, 0, 128, 128];
        let p = Yuv420 {
            width: 3,
            height: 3,
            y: &y,
            u: &u,
            v: &v,
            y_stride: 5,
            uv_stride: 4,
        };
        assert!(p.is_consistent());
        let rgb = yuv420_to_rgb(&p, ColorInfo::default());
        // Grey: limited-range 16 → 0 and 235 → 255.
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 2).0, [255, 255, 255]);
        let short = Yuv420 { y: &y[..12], ..p };
        assert!(!short.is_consistent());
    }
}
