//! AVX-512 vector math shared by the kernels: `exp` in f32.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// `e^x` in f32, within about 2 ulp for `x ≤ 88`: `x = k·ln2 + r` (`|r| ≤ ln2/2`, ln2 split in
/// two for an exact product), a degree-7 Taylor polynomial for `e^r` (truncation error below
/// 1e-8 relative), and `vscalefps` for `2^k` (subnormal results as the exact value rounds).
/// Large `x` overflows to +inf; `-inf` gives 0. `max` turns NaN into the lower bound, so callers
/// that must propagate NaN detect it themselves.
///
/// # Safety
/// AVX-512F available.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp(x: __m512) -> __m512 {
    let ln2_hi = _mm512_set1_ps(0.693_145_75);
    let ln2_lo = _mm512_set1_ps(1.428_606_8e-6);
    // Clamped so k stays finite: e^-104 is below f32's smallest subnormal, e^89 above its max.
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
        _mm512_set1_ps(89.0),
    );
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(k, ln2_hi, x);
    let r = _mm512_fnmadd_ps(k, ln2_lo, r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, k)
}
