//! AVX-512 parts of [`attention`](super): the small-GEMM micro-kernels both products use (f32
//! FMA, and `vdpbf16ps` for the bf16 path), the score-row softmax with a vector `exp`, and the
//! bf16 path's conversions.

#![cfg(target_arch = "x86_64")]

use super::super::vmath::exp;
use std::arch::x86_64::*;
use std::mem::transmute;

/// Rows per micro-tile.
const MR: usize = 8;

/// `C[m, n] = A[m, kc] · B[kc, n]`; `m` a multiple of [`MR`], `n` of 16.
///
/// # Safety
/// AVX-512F available; `a` holds `m` rows of `lda` (≥ `kc`), `b` `kc` rows of `ldb` (≥ `n`),
/// `c` `m` rows of `ldc` (≥ `n`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn products(
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    m: usize,
    n: usize,
    kc: usize,
) {
    unsafe {
        debug_assert!(m.is_multiple_of(MR) && n.is_multiple_of(16));
        debug_assert!(m == 0 || a.len() >= (m - 1) * lda + kc);
        debug_assert!(kc == 0 || b.len() >= (kc - 1) * ldb + n);
        debug_assert!(m == 0 || c.len() >= (m - 1) * ldc + n);
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        for i in (0..m).step_by(MR) {
            let mut j = 0;
            while j + 48 <= n {
                tile::<3>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kc,
                );
                j += 48;
            }
            match n - j {
                32 => tile::<2>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kc,
                ),
                16 => tile::<1>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kc,
                ),
                _ => {}
            }
        }
    }
}

/// One `MR × 16·NV` tile of `C`, accumulated in registers over `kc`.
///
/// # Safety
///
/// The CPU must have AVX-512F (the caller checks it); `a`, `b` and `c` are valid for `MR` × `kc`,
/// `kc` × `16·NV` and `MR` × `16·NV` f32 at their strides.
#[inline(always)]
unsafe fn tile<const NV: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    kc: usize,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for kk in 0..kc {
            let bp = b.add(kk * ldb);
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bvv) in bv.iter_mut().enumerate() {
                *bvv = _mm512_loadu_ps(bp.add(16 * v));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * lda + kk));
                for v in 0..NV {
                    row[v] = _mm512_fmadd_ps(x, bv[v], row[v]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc + 16 * v), x);
            }
        }
    }
}

/// See [`super::softmax_range`].
///
/// # Safety
/// AVX-512F available; `a ≤ b ≤ row.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_range(row: &mut [f32], a: usize, b: usize, scale: f32) -> f32 {
    unsafe {
        let len = row.len();
        let p = row.as_mut_ptr();
        let sv = _mm512_set1_ps(scale);
        let mask_of = |j: usize, end: usize| -> __mmask16 {
            let left = end.saturating_sub(j).min(16);
            ((1u32 << left) - 1) as __mmask16
        };
        // Pass 1: scale the allowed entries, max and NaN detection.
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut nan: __mmask16 = 0;
        let mut j = a;
        while j < b {
            let m = mask_of(j, b);
            let s = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(j)), sv);
            nan |= _mm512_mask_cmp_ps_mask::<_CMP_UNORD_Q>(m, s, s);
            mx = _mm512_mask_max_ps(mx, m, mx, s);
            _mm512_mask_storeu_ps(p.add(j), m, s);
            j += 16;
        }
        let max = _mm512_reduce_max_ps(mx);
        if nan != 0 || max == f32::NEG_INFINITY || a >= b {
            return f32::NAN;
        }
        // Pass 2: exp(s − max) on a..b, zeros around it; the sum in f32 lanes.
        row[..a].fill(0.0);
        row[b..len].fill(0.0);
        let mv = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut j = a;
        while j < b {
            let m = mask_of(j, b);
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(j)), mv));
            let e = _mm512_maskz_mov_ps(m, e);
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(p.add(j), m, e);
            j += 16;
        }
        _mm512_reduce_add_ps(sum)
    }
}

/// `C[m, n] = A[m, 2·kp] · B[2·kp, n]` on bf16 pairs with `vdpbf16ps` (see
/// [`super::bf16`]'s `products`); `m` a multiple of [`MR`], `n` of 16.
///
/// # Safety
/// AVX-512F and AVX512_BF16 available; `a` holds `m` rows of `lda` (≥ `kp`) pairs, `b` `kp`
/// pair-rows of `ldb` (≥ `n`), `c` `m` rows of `ldc` (≥ `n`) floats.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn products_bf16(
    a: *const u32,
    lda: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    n: usize,
    kp: usize,
) {
    unsafe {
        debug_assert!(m.is_multiple_of(MR) && n.is_multiple_of(16));
        for i in (0..m).step_by(MR) {
            let mut j = 0;
            while j + 48 <= n {
                tile_bf16::<3>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kp,
                );
                j += 48;
            }
            match n - j {
                32 => tile_bf16::<2>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kp,
                ),
                16 => tile_bf16::<1>(
                    a.add(i * lda),
                    lda,
                    b.add(j),
                    ldb,
                    c.add(i * ldc + j),
                    ldc,
                    kp,
                ),
                _ => {}
            }
        }
    }
}

/// One `MR × 16·NV` tile of `C`: per k-pair, a broadcast pair of `A` times `NV` vectors of `B`.
///
/// # Safety
///
/// The CPU must have AVX-512F and BF16; `a`, `b` and `c` are valid for `MR` × `kp`, `kp` × `16·NV`
/// and `MR` × `16·NV` elements at their strides.
#[inline(always)]
unsafe fn tile_bf16<const NV: usize>(
    a: *const u32,
    lda: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    kp: usize,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for kk in 0..kp {
            let bp = b.add(kk * ldb);
            let mut bv = [_mm512_setzero_si512(); NV];
            for (v, bvv) in bv.iter_mut().enumerate() {
                *bvv = _mm512_loadu_si512(bp.add(16 * v) as *const _);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let x: __m512bh = transmute(_mm512_set1_epi32(*a.add(r * lda + kk) as i32));
                for v in 0..NV {
                    row[v] = _mm512_dpbf16_ps(row[v], x, transmute::<__m512i, __m512bh>(bv[v]));
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc + 16 * v), x);
            }
        }
    }
}

/// The low `n` (≤ 16) lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// `dst = bf16(src)` (RNE), equal lengths.
///
/// # Safety
/// AVX-512F, BW and AVX512_BF16 available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
    unsafe {
        let len = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < len {
            let m = lanes(len - i);
            let h: __m256i = transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, s.add(i))));
            _mm256_mask_storeu_epi16(d.add(i) as *mut i16, m, h);
            i += 16;
        }
    }
}

/// `dst[i] = (bf16(x0[i]), bf16(x1[i]))` as a pair, entries past a slice's end 0.
///
/// # Safety
/// AVX-512F and AVX512_BF16 available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn interleave(x0: &[f32], x1: &[f32], dst: &mut [u32]) {
    unsafe {
        let (p0, p1, d) = (x0.as_ptr(), x1.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < dst.len() {
            let (m0, m1) = (
                lanes(x0.len().saturating_sub(i)),
                lanes(x1.len().saturating_sub(i)),
            );
            let lo: __m256i = transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m0, p0.add(i))));
            let hi: __m256i = transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m1, p1.add(i))));
            let pair = _mm512_or_si512(
                _mm512_cvtepu16_epi32(lo),
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)),
            );
            _mm512_mask_storeu_epi32(d.add(i) as *mut i32, lanes(dst.len() - i), pair);
            i += 16;
        }
    }
}

/// The bf16 path's softmax (see [`super::bf16`]'s `softmax`): scaled maximum of `row[a..b]`,
/// then over `p`'s whole vectors `exp(s·scale − max)` on `a..b`, 0 elsewhere, rounded to bf16.
/// A NaN score is not looked for: it passes through [`exp2`] into the sum, as the f32 path's
/// explicit check makes it.
///
/// # Safety
/// AVX-512F, BW and AVX512_BF16 available; `a ≤ b ≤ p.len() ≤ row.len()`, `p.len()` a multiple
/// of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn softmax_bf16(
    row: &[f32],
    a: usize,
    b: usize,
    scale: f32,
    p: &mut [u16],
) -> f32 {
    unsafe {
        debug_assert!(a <= b && b <= p.len() && p.len() <= row.len() && p.len().is_multiple_of(16));
        let (s, d) = (row.as_ptr(), p.as_mut_ptr());
        let sv = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut j = a;
        while j + 16 <= b {
            mx = _mm512_max_ps(mx, _mm512_mul_ps(_mm512_loadu_ps(s.add(j)), sv));
            j += 16;
        }
        if j < b {
            let m = lanes(b - j);
            mx = _mm512_mask_max_ps(
                mx,
                m,
                mx,
                _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s.add(j)), sv),
            );
        }
        let max = _mm512_reduce_max_ps(mx);
        if max == f32::NEG_INFINITY || a >= b {
            return f32::NAN;
        }
        // exp(s·scale − max) = 2^(s·scale·log2e − max·log2e): one FMA to the exponent.
        let log2e = std::f32::consts::LOG2_E;
        let (sl, ml) = (_mm512_set1_ps(scale * log2e), _mm512_set1_ps(max * log2e));
        let mut sum = _mm512_setzero_ps();
        let exps = |j: usize| -> __m512 {
            if j + 16 <= a || j >= b {
                return _mm512_setzero_ps();
            }
            let e = exp2(_mm512_fmsub_ps(_mm512_loadu_ps(s.add(j)), sl, ml));
            if j < a || j + 16 > b {
                // Lanes j + l with a ≤ j + l < b.
                _mm512_maskz_mov_ps(lanes(b - j) & !lanes(a.saturating_sub(j)), e)
            } else {
                e
            }
        };
        // Two vectors at a time: one conversion instruction rounds both.
        let len = p.len();
        let mut j = 0;
        while j + 32 <= len {
            let (e0, e1) = (exps(j), exps(j + 16));
            sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
            _mm512_storeu_si512(
                d.add(j) as *mut _,
                transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(e1, e0)),
            );
            j += 32;
        }
        if j < len {
            let e = exps(j);
            sum = _mm512_add_ps(sum, e);
            _mm256_storeu_si256(
                d.add(j) as *mut __m256i,
                transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(e)),
            );
        }
        _mm512_reduce_add_ps(sum)
    }
}

/// `2^t` for the softmax's `t ≤ 0`: `t = k + f` (`k` the nearest integer, `|f| ≤ ½`, exact),
/// `2^f = e^(f·ln2)` by its degree-4 Taylor polynomial (relative error below 5e-5, 40 times
/// under the bf16 rounding of the probabilities it feeds), `vscalefps` for `2^k`. `t` is clamped at
/// −150 (a zero result) so −inf gives 0; NaN stays NaN.
///
/// # Safety
///
/// The CPU must have AVX-512F (the caller checks it).
#[inline(always)]
unsafe fn exp2(t: __m512) -> __m512 {
    unsafe {
        // `max(c, t)` returns `t` when it is NaN.
        let t = _mm512_max_ps(_mm512_set1_ps(-150.0), t);
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, k);
        let ln2 = std::f32::consts::LN_2;
        let mut p = _mm512_set1_ps(ln2.powi(4) / 24.0);
        for c in [ln2.powi(3) / 6.0, ln2 * ln2 / 2.0, ln2, 1.0] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, k)
    }
}

/// [`super::rotate`] compiled for AVX-512 (same arithmetic: no contraction into FMA).
///
/// # Safety
/// AVX-512F available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    super::rotate(x, cos, sin, out)
}
