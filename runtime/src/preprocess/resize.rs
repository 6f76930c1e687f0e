//! Antialiased bicubic resize of uint8 images, a port of PyTorch's CPU
//! uint8 kernel behind `torch.nn.functional.interpolate(mode="bicubic",
//! antialias=True)` (what `torchvision.transforms.v2.functional.resize`
//! calls for a uint8 tensor on CPU):
//! `aten/src/ATen/native/cpu/UpSampleKernel.cpp`
//! (`HelperInterpBase::_compute_indices_min_size_weights_aa`,
//! `_compute_index_ranges_weights`, `_compute_index_ranges_int16_weights`,
//! `basic_loop_aa_{horizontal,vertical}<uint8_t>`,
//! `separable_upsample_generic_Nd_kernel_impl`) and its AVX2 twin
//! `UpSampleKernelAVXAntialias.h`, which computes the same integers.
//!
//! * weights in f64 with Keys' cubic a = -0.5, support 2·scale when
//!   downscaling (scale = in/out), normalised to sum 1;
//! * converted to int16 fixed point with a precision chosen from the largest
//!   weight of that dimension (`weights_precision`);
//! * horizontal pass first (if the width changes), its output rounded and
//!   clamped to u8, then the vertical pass (if the height changes);
//! * each output = clamp((2^(p-1) + Σ pixel·w) >> p, 0, 255) in i32.

use rayon::prelude::*;

/// Keys cubic convolution kernel, a = -0.5 (antialias=True, PIL compatible).
#[inline]
fn cubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        // cubic_convolution1
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        // cubic_convolution2
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Int16 fixed-point weights for one dimension.
#[derive(Debug, Clone)]
pub(crate) struct AxisWeights {
    /// First input index of each output index.
    pub xmin: Vec<usize>,
    /// Number of taps of each output index.
    pub xsize: Vec<usize>,
    /// `out_size * ksize` weights, row i holds output i's taps.
    pub weights: Vec<i16>,
    /// Row stride of `weights` (max_interp_size).
    pub ksize: usize,
    /// Fixed-point precision (bits).
    pub precision: u32,
}

/// `_compute_index_ranges_int16_weights` for bicubic, antialias=True,
/// align_corners=False and no explicit scale factor.
pub(crate) fn compute_axis_weights(input_size: usize, output_size: usize) -> AxisWeights {
    // area_pixel_compute_scale<double>(in, out, align_corners=false, nullopt)
    let scale = input_size as f64 / output_size as f64;
    const INTERP_SIZE: f64 = 4.0;
    let support = if scale >= 1.0 {
        (INTERP_SIZE * 0.5) * scale
    } else {
        INTERP_SIZE * 0.5
    };
    let ksize = support.ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };

    let mut wf = vec![0.0f64; output_size * ksize];
    let mut xmin_v = Vec::with_capacity(output_size);
    let mut xsize_v = Vec::with_capacity(output_size);
    let mut wt_max = 0.0f64;
    for i in 0..output_size {
        let center = scale * (i as f64 + 0.5);
        // static_cast<int64_t> truncates toward zero
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xsize = ((center + support + 0.5) as i64).min(input_size as i64) - xmin;
        let xsize = xsize.clamp(0, ksize as i64);
        let row = &mut wf[i * ksize..(i + 1) * ksize];
        let mut total_w = 0.0f64;
        for j in 0..xsize {
            let w = cubic_filter(((j + xmin) as f64 - center + 0.5) * invscale);
            row[j as usize] = w;
            total_w += w;
        }
        if total_w != 0.0 {
            for w in row.iter_mut().take(xsize as usize) {
                *w /= total_w;
                wt_max = wt_max.max(*w);
            }
        }
        xmin_v.push(xmin as usize);
        xsize_v.push(xsize as usize);
    }

    let mut precision: u32 = 0;
    while precision < 22 {
        let next_value = (0.5 + wt_max * (1u32 << (precision + 1)) as f64) as i32;
        if next_value >= (1 << 15) {
            break;
        }
        precision += 1;
    }
    let mult = (1u32 << precision) as f64;
    let weights = wf
        .iter()
        .map(|&w| {
            let v = w * mult;
            let r = if v < 0.0 {
                (-0.5 + v) as i32
            } else {
                (0.5 + v) as i32
            };
            r as i16
        })
        .collect();
    AxisWeights {
        xmin: xmin_v,
        xsize: xsize_v,
        weights,
        ksize,
        precision,
    }
}

#[inline]
fn finish(acc: i32, precision: u32) -> u8 {
    (acc >> precision).clamp(0, 255) as u8
}

/// Resample along the width. `src` is HWC with `c` channels.
fn horizontal(src: &[u8], h: usize, w: usize, c: usize, out_w: usize) -> Vec<u8> {
    let aw = compute_axis_weights(w, out_w);
    let init = 1i32 << (aw.precision - 1);
    let mut out = vec![0u8; h * out_w * c];
    out.par_chunks_mut(out_w * c)
        .enumerate()
        .for_each(|(y, orow)| {
            let srow = &src[y * w * c..(y + 1) * w * c];
            for x in 0..out_w {
                let k = &aw.weights[x * aw.ksize..x * aw.ksize + aw.xsize[x]];
                let base = aw.xmin[x];
                for ch in 0..c {
                    let mut acc = init;
                    for (j, &wt) in k.iter().enumerate() {
                        acc += srow[(base + j) * c + ch] as i32 * wt as i32;
                    }
                    orow[x * c + ch] = finish(acc, aw.precision);
                }
            }
        });
    out
}

/// Resample along the height. `src` is HWC with `c` channels.
fn vertical(src: &[u8], h: usize, w: usize, c: usize, out_h: usize) -> Vec<u8> {
    let aw = compute_axis_weights(h, out_h);
    let init = 1i32 << (aw.precision - 1);
    let row_len = w * c;
    let mut out = vec![0u8; out_h * row_len];
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(y, orow)| {
            let k = &aw.weights[y * aw.ksize..y * aw.ksize + aw.xsize[y]];
            let base = aw.xmin[y];
            let mut acc = vec![init; row_len];
            for (j, &wt) in k.iter().enumerate() {
                let srow = &src[(base + j) * row_len..(base + j + 1) * row_len];
                let wt = wt as i32;
                for (a, &s) in acc.iter_mut().zip(srow) {
                    *a += s as i32 * wt;
                }
            }
            for (o, a) in orow.iter_mut().zip(acc) {
                *o = finish(a, aw.precision);
            }
        });
    out
}

/// Antialiased bicubic resize of an interleaved image with `channels`
/// channels (HWC, row-major), bit-exact with torch's CPU uint8 kernel.
/// Sizes must be positive; `src.len()` must be `h * w * channels`.
pub fn resize_bicubic_antialias_u8_channels(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        h * w * channels,
        "source buffer does not match {h}x{w}x{channels}"
    );
    assert!(
        h > 0 && w > 0 && out_h > 0 && out_w > 0,
        "resize sizes must be positive"
    );
    if (h, w) == (out_h, out_w) {
        return src.to_vec();
    }
    let tmp;
    let (cur, cur_w): (&[u8], usize) = if out_w != w {
        tmp = horizontal(src, h, w, channels, out_w);
        (&tmp, out_w)
    } else {
        (src, w)
    };
    if out_h != h {
        vertical(cur, h, cur_w, channels, out_h)
    } else {
        cur.to_vec()
    }
}

/// Antialiased bicubic resize of an RGB image (HWC, row-major `u8`), as
/// `torchvision.transforms.v2.functional.resize(img, [out_h, out_w],
/// InterpolationMode.BICUBIC, antialias=True)` on a CPU uint8 tensor.
pub fn resize_bicubic_antialias_u8(
    src: &[u8],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    resize_bicubic_antialias_u8_channels(src, h, w, 3, out_h, out_w)
}
