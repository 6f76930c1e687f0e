//! Row-wise and element-wise ops of the transformer blocks (GELU, SiLU, SwiGLU, LayerNorm,
//! RMSNorm) on AVX-512 and several threads, with the reference executor's formulas
//! (`ir/reference/src/fused.rs`): norms accumulate in f64 and take `1/√` in f64; activations
//! use a vector `exp` (about 2 ulp) where the reference calls f64 `exp`/`tanh`, and GELU's
//! `x·½·(1 + tanh(s))` is computed as the equal `x / (1 + e^{−2s})`, which keeps full relative
//! precision where `tanh(s)` is near −1. Without AVX-512 the same formulas run as scalar loops.
//!
//! The generated Cranelift kernels (`codegen`) compute the same ops portably; these are the
//! faster path on AVX-512 CPUs (Cranelift's x86 backend has no 512-bit vectors).

use super::threads::{self, SyncPtr};

/// Below this many elements the work stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// An element-wise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `x / (1 + e^{−x})`.
    Silu,
}

fn simd() -> bool {
    super::has_avx512_bf16()
}

/// Runs `f(first_row, rows)` over `rows` split between threads (one when the work is small).
fn split_rows(rows: usize, width: usize, threads: usize, f: impl Fn(usize, usize) + Sync) {
    let threads = if rows * width < PARALLEL_MIN {
        1
    } else {
        threads.clamp(1, rows.max(1))
    };
    threads::run(threads, |t| {
        let r = threads::chunk(rows, threads, t);
        if !r.is_empty() {
            f(r.start, r.len());
        }
    });
}

/// `out = act(x)`; `out.len() == x.len()`.
pub fn activation(act: Act, x: &[f32], out: &mut [f32], threads: usize) {
    assert_eq!(
        x.len(),
        out.len(),
        "activation: input and output lengths differ"
    );
    let (n, simd) = (x.len(), simd());
    // Chunks of whole vectors, so every thread but the last runs without a tail.
    let rows = n.div_ceil(1024);
    let o = SyncPtr(out.as_mut_ptr());
    split_rows(rows, 1024, threads, |r0, rs| {
        let (a, b) = (r0 * 1024, ((r0 + rs) * 1024).min(n));
        // SAFETY: threads write disjoint ranges of `out`.
        let out = unsafe { std::slice::from_raw_parts_mut(o.get().add(a), b - a) };
        let x = &x[a..b];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX-512 detected; equal lengths.
            unsafe { avx::activation(act, x, out) };
            return;
        }
        let _ = simd;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = scalar_act(act, v);
        }
    });
}

fn scalar_act(act: Act, x: f32) -> f32 {
    match act {
        Act::GeluTanh => {
            let s =
                (x + x * x * x * 0.044715f64 as f32) * (2.0 / std::f64::consts::PI).sqrt() as f32;
            x / (((-2.0 * s) as f64).exp() as f32 + 1.0)
        }
        Act::Silu => x / (((-x) as f64).exp() as f32 + 1.0),
    }
}

/// `out[r, j] = silu(gate[r·gs + j])·up[r·us + j]` for `r < rows`, `j < width` (`gate` and `up`
/// may be column ranges of one wider matrix: row strides `gs`, `us`); `out` is `[rows, width]`.
#[allow(clippy::too_many_arguments)]
pub fn swiglu(
    gate: &[f32],
    gs: usize,
    up: &[f32],
    us: usize,
    rows: usize,
    width: usize,
    out: &mut [f32],
    threads: usize,
) {
    assert!(
        out.len() == rows * width,
        "swiglu: output is not [rows, width]"
    );
    assert!(
        rows == 0 || (gate.len() >= (rows - 1) * gs + width && up.len() >= (rows - 1) * us + width),
        "swiglu: operands too short"
    );
    let simd = simd();
    let o = SyncPtr(out.as_mut_ptr());
    // Long single rows (a decode step) split by columns instead.
    let (rows_x, cols) = if rows == 1 {
        (width.div_ceil(1024), 1024)
    } else {
        (rows, width)
    };
    split_rows(rows_x, cols, threads, |r0, rs| {
        let (rows_range, cols_range) = if rows == 1 {
            (0..1, r0 * 1024..((r0 + rs) * 1024).min(width))
        } else {
            (r0..r0 + rs, 0..width)
        };
        for r in rows_range {
            let (g, u) = (
                &gate[r * gs..][cols_range.clone()],
                &up[r * us..][cols_range.clone()],
            );
            // SAFETY: threads write disjoint rows (or column ranges) of `out`.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    o.get().add(r * width + cols_range.start),
                    cols_range.len(),
                )
            };
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX-512 detected; equal lengths.
                unsafe { avx::swiglu(g, u, out) };
                continue;
            }
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = scalar_act(Act::Silu, g) * u;
            }
        }
    });
}

/// LayerNorm over rows of `w.len()`: `(x − mean)·rsqrt(var + eps)·w + b`.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], threads: usize) {
    norm(x, w, Some(b), eps, out, threads)
}

/// RMSNorm over rows of `w.len()`: `x·rsqrt(mean(x²) + eps)·w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], threads: usize) {
    norm(x, w, None, eps, out, threads)
}

fn norm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32], threads: usize) {
    let d = w.len();
    assert!(
        d > 0
            && x.len().is_multiple_of(d)
            && out.len() == x.len()
            && b.is_none_or(|b| b.len() == d),
        "norm: shapes do not match"
    );
    let simd = simd();
    let o = SyncPtr(out.as_mut_ptr());
    split_rows(x.len() / d, d, threads, |r0, rs| {
        for r in r0..r0 + rs {
            let xr = &x[r * d..(r + 1) * d];
            // SAFETY: threads write disjoint rows of `out`.
            let or = unsafe { std::slice::from_raw_parts_mut(o.get().add(r * d), d) };
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX-512 detected; rows of `d`.
                unsafe { avx::norm_row(xr, w, b, eps, or) };
                continue;
            }
            scalar_norm_row(xr, w, b, eps, or);
        }
    });
}

fn rsqrt(x: f32) -> f32 {
    (1.0 / (x as f64).sqrt()) as f32
}

fn scalar_norm_row(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let d = x.len();
    let mean =
        |v: &mut dyn Iterator<Item = f32>| (v.fold(0f64, |a, x| a + x as f64) / d as f64) as f32;
    match b {
        Some(b) => {
            let m = mean(&mut x.iter().copied());
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v - m;
            }
            let inv = rsqrt(mean(&mut out.iter().map(|&c| c * c)) + eps);
            for j in 0..d {
                out[j] = out[j] * inv * w[j] + b[j];
            }
        }
        None => {
            let inv = rsqrt(mean(&mut x.iter().map(|&v| v * v)) + eps);
            for j in 0..d {
                out[j] = x[j] * inv * w[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::vmath::exp;
    use super::{rsqrt, Act};
    use std::arch::x86_64::*;

    #[inline(always)]
    fn tail(n: usize, j: usize) -> __mmask16 {
        let left = (n - j).min(16);
        ((1u32 << left) - 1) as __mmask16
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it).
    #[inline(always)]
    unsafe fn act_v(act: Act, x: __m512) -> __m512 {
        unsafe {
            let one = _mm512_set1_ps(1.0);
            let t = match act {
                Act::GeluTanh => {
                    // −2s, s = √(2/π)·(x + 0.044715·x³), rounded as the reference rounds s.
                    let cubic = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_mul_ps(x, x), x),
                        _mm512_set1_ps(0.044715),
                    );
                    let s = _mm512_mul_ps(_mm512_add_ps(x, cubic), _mm512_set1_ps(0.797_884_6));
                    _mm512_mul_ps(s, _mm512_set1_ps(-2.0))
                }
                Act::Silu => _mm512_sub_ps(_mm512_setzero_ps(), x),
            };
            // x / (1 + e^t), with the reciprocal from `vrcp14ps` and one Newton step (within an
            // ulp of the division, at a fraction of `vdivps`' cost). e^t is capped at e^80 so the
            // reciprocal stays normal (x / (1 + e^80) rounds to a value below 1e-34 · |x| anyway).
            let den = _mm512_add_ps(exp(_mm512_min_ps(t, _mm512_set1_ps(80.0))), one);
            let r = _mm512_rcp14_ps(den);
            let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(den, r, _mm512_set1_ps(2.0)));
            _mm512_mul_ps(x, r)
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn activation(act: Act, x: &[f32], out: &mut [f32]) {
        unsafe {
            let n = x.len();
            let mut j = 0;
            while j < n {
                let m = tail(n, j);
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, act_v(act, v));
                j += 16;
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn swiglu(g: &[f32], u: &[f32], out: &mut [f32]) {
        unsafe {
            let n = out.len();
            let mut j = 0;
            while j < n {
                let m = tail(n, j);
                let gv = _mm512_maskz_loadu_ps(m, g.as_ptr().add(j));
                let uv = _mm512_maskz_loadu_ps(m, u.as_ptr().add(j));
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().add(j),
                    m,
                    _mm512_mul_ps(act_v(Act::Silu, gv), uv),
                );
                j += 16;
            }
        }
    }

    /// Σ of f32 values in f64 lanes (the reference's f64 accumulation).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it).
    #[inline(always)]
    unsafe fn acc_f64(acc: (__m512d, __m512d), v: __m512) -> (__m512d, __m512d) {
        unsafe {
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(v),
            )));
            (_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi))
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn norm_row(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        eps: f32,
        out: &mut [f32],
    ) {
        unsafe {
            let d = x.len();
            let (xp, op, wp) = (x.as_ptr(), out.as_mut_ptr(), w.as_ptr());
            let z = (_mm512_setzero_pd(), _mm512_setzero_pd());
            let mean_of = |acc: (__m512d, __m512d)| {
                (_mm512_reduce_add_pd(_mm512_add_pd(acc.0, acc.1)) / d as f64) as f32
            };
            let src = match b {
                Some(_) => {
                    // Centre first, into `out`, as the reference does.
                    let mut acc = z;
                    let mut j = 0;
                    while j < d {
                        acc = acc_f64(acc, _mm512_maskz_loadu_ps(tail(d, j), xp.add(j)));
                        j += 16;
                    }
                    let m = _mm512_set1_ps(mean_of(acc));
                    let mut j = 0;
                    while j < d {
                        let k = tail(d, j);
                        _mm512_mask_storeu_ps(
                            op.add(j),
                            k,
                            _mm512_sub_ps(_mm512_maskz_loadu_ps(k, xp.add(j)), m),
                        );
                        j += 16;
                    }
                    op as *const f32
                }
                None => xp,
            };
            let mut acc = z;
            let mut j = 0;
            while j < d {
                let v = _mm512_maskz_loadu_ps(tail(d, j), src.add(j));
                acc = acc_f64(acc, _mm512_mul_ps(v, v));
                j += 16;
            }
            let inv = _mm512_set1_ps(rsqrt(mean_of(acc) + eps));
            let mut j = 0;
            while j < d {
                let k = tail(d, j);
                let v = _mm512_mul_ps(
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src.add(j)), inv),
                    _mm512_maskz_loadu_ps(k, wp.add(j)),
                );
                let v = match b {
                    Some(b) => _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b.as_ptr().add(j))),
                    None => v,
                };
                _mm512_mask_storeu_ps(op.add(j), k, v);
                j += 16;
            }
        }
    }
}
