//! AVX-512 parts of [`attention`](super): the small-GEMM micro-kernel both products use and the
//! score-row softmax with a vector `exp`.

#![cfg(target_arch = "x86_64")]

use super::super::vmath::exp;
use std::arch::x86_64::*;

/// Rows per micro-tile.
const MR: usize = 8;

/// `C[m, n] = A[m, kc] · B[kc, n]`; `m` a multiple of [`MR`], `n` of 16.
///
/// # Safety
/// AVX-512F available; `a` holds `m` rows of `lda` (≥ `kc`), `b` `kc` rows of `ldb` (≥ `n`),
/// `c` `m` rows of `ldc` (≥ `n`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn products(a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize, m: usize, n: usize, kc: usize) {
    debug_assert!(m % MR == 0 && n % 16 == 0);
    debug_assert!(m == 0 || a.len() >= (m - 1) * lda + kc);
    debug_assert!(kc == 0 || b.len() >= (kc - 1) * ldb + n);
    debug_assert!(m == 0 || c.len() >= (m - 1) * ldc + n);
    let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    for i in (0..m).step_by(MR) {
        let mut j = 0;
        while j + 48 <= n {
            tile::<3>(a.add(i * lda), lda, b.add(j), ldb, c.add(i * ldc + j), ldc, kc);
            j += 48;
        }
        match n - j {
            32 => tile::<2>(a.add(i * lda), lda, b.add(j), ldb, c.add(i * ldc + j), ldc, kc),
            16 => tile::<1>(a.add(i * lda), lda, b.add(j), ldb, c.add(i * ldc + j), ldc, kc),
            _ => {}
        }
    }
}

/// One `MR × 16·NV` tile of `C`, accumulated in registers over `kc`.
#[inline(always)]
unsafe fn tile<const NV: usize>(a: *const f32, lda: usize, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, kc: usize) {
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

/// See [`super::softmax_range`].
///
/// # Safety
/// AVX-512F available; `a ≤ b ≤ row.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_range(row: &mut [f32], a: usize, b: usize, scale: f32) -> f32 {
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
