//! Decode matrix-vector product `y[n] = W · x` over a [`PackedBf16`] weight.
//!
//! Memory-bound: every thread streams its own contiguous range of panels exactly once, front to
//! back, as one stream. Two streams per thread (the two halves of its range in turn) read
//! 28.8 GB/s against one stream's 33.3 over the 2B LM head on 2 Zen 4 vCPUs, interleaved runs,
//! median of 9, when a plain read reached 31.7; and 31 against 43 when it reached 46.5.
//! Two arithmetic variants:
//! * **exact** — each bf16 weight is widened to f32 (a shift or a mask: the pair layout puts the
//!   even column in the low half) and multiplied by the f32 `x` with FMA; no rounding of `x`.
//! * **dot** — `x` is rounded to bf16 once and `vdpbf16ps` does two MACs per lane.

use super::pack::{bf16_bits_to_f32, f32_to_bf16_bits, PackedBf16, NR};
use super::threads::{self, SyncPtr};

/// How far ahead (bytes) to prefetch the weight stream: over the 2B LM head on 2 Zen 4
/// vCPUs (interleaved runs, median of 5) one stream read 30.1 GB/s with no prefetch, 32.3
/// at 2 KiB and 33.1 at 3 KiB, while a plain read reached 31.1.
pub(crate) const PREFETCH: usize = 3072;

/// Arithmetic of a GEMV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvMode {
    /// bf16 weights widened to f32, f32 `x`, f32 FMA accumulation.
    Exact,
    /// `x` rounded to bf16, `vdpbf16ps` products, f32 accumulation.
    Bf16Dot,
}

pub(crate) fn gemv_impl(
    w: &PackedBf16,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
    mode: GemvMode,
    simd: bool,
) {
    assert_eq!(
        x.len(),
        w.k(),
        "gemv: x has length {}, weight is [{}, {}]",
        x.len(),
        w.n(),
        w.k()
    );
    assert_eq!(
        y.len(),
        w.n(),
        "gemv: y has length {}, weight is [{}, {}]",
        y.len(),
        w.n(),
        w.k()
    );
    let kp = w.kp();
    let threads = threads.clamp(1, w.panels().max(1));
    // x padded to an even length (the padded weight column is zero).
    let mut xp = Vec::with_capacity(2 * kp);
    xp.extend_from_slice(x);
    xp.resize(2 * kp, 0.0);
    // bf16 pairs of x, as the u32 that vdpbf16ps broadcasts.
    let xb: Vec<u32> = match mode {
        GemvMode::Bf16Dot => xp
            .chunks_exact(2)
            .map(|p| f32_to_bf16_bits(p[0]) as u32 | (f32_to_bf16_bits(p[1]) as u32) << 16)
            .collect(),
        GemvMode::Exact => Vec::new(),
    };
    let n = w.n();
    let panels = w.panels();
    let yp = SyncPtr(y.as_mut_ptr());
    threads::run(threads, |t| {
        let range = threads::chunk(panels, threads, t);
        // SAFETY: panels are disjoint between threads, so are the rows of y they write.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if simd {
                match mode {
                    GemvMode::Exact => avx512::exact(w, &xp, yp.get(), n, range),
                    GemvMode::Bf16Dot => avx512::dot(w, &xb, yp.get(), n, range),
                }
                return;
            }
            let _ = simd;
            match mode {
                GemvMode::Exact => scalar_exact(w, &xp, yp.get(), n, range),
                GemvMode::Bf16Dot => scalar_dot(w, &xb, yp.get(), n, range),
            }
        }
    });
}

/// # Safety
///
/// `y` must be valid for writes of `n` f32, and no other thread may write the rows of the panels in
/// `range` while this runs.
unsafe fn scalar_exact(
    w: &PackedBf16,
    xp: &[f32],
    y: *mut f32,
    n: usize,
    range: std::ops::Range<usize>,
) {
    unsafe {
        let kp = w.kp();
        for panel in range {
            let mut acc = [0f32; NR];
            for p in 0..kp {
                let (x0, x1) = (xp[2 * p], xp[2 * p + 1]);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a += bf16_bits_to_f32(w.bits(panel, p, r, 0)) * x0;
                    *a += bf16_bits_to_f32(w.bits(panel, p, r, 1)) * x1;
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let i = panel * NR + r;
                if i < n {
                    *y.add(i) = *a;
                }
            }
        }
    }
}

/// # Safety
///
/// `y` must be valid for writes of `n` f32, and no other thread may write the rows of the panels in
/// `range` while this runs.
unsafe fn scalar_dot(
    w: &PackedBf16,
    xb: &[u32],
    y: *mut f32,
    n: usize,
    range: std::ops::Range<usize>,
) {
    unsafe {
        let kp = w.kp();
        for panel in range {
            let mut acc = [0f32; NR];
            for (p, &pair) in xb.iter().enumerate().take(kp) {
                let x0 = bf16_bits_to_f32(pair as u16);
                let x1 = bf16_bits_to_f32((pair >> 16) as u16);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a += bf16_bits_to_f32(w.bits(panel, p, r, 0)) * x0
                        + bf16_bits_to_f32(w.bits(panel, p, r, 1)) * x1;
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let i = panel * NR + r;
                if i < n {
                    *y.add(i) = *a;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    use std::ops::Range;

    use super::super::pack::{PackedBf16, NR, STEP_BYTES};
    use super::PREFETCH;

    /// # Safety
    ///
    /// The CPU must have AVX-512F (the caller checks it); `y` is valid for writes of `n` f32 and
    /// the panel's rows are this thread's.
    #[inline(always)]
    unsafe fn store_rows(y: *mut f32, n: usize, panel: usize, y0: __m512, y1: __m512) {
        unsafe {
            let first = panel * NR;
            let valid = (n - first).min(NR);
            let m0: __mmask16 = if valid >= 16 {
                0xffff
            } else {
                (1u32 << valid) as u16 - 1
            };
            let m1: __mmask16 = if valid >= 32 {
                0xffff
            } else if valid > 16 {
                (1u32 << (valid - 16)) as u16 - 1
            } else {
                0
            };
            _mm512_mask_storeu_ps(y.add(first), m0, y0);
            _mm512_mask_storeu_ps(y.add(first + 16), m1, y1);
        }
    }

    /// One panel at a time, each widened bf16 pair multiplied by the f32 `x` pair.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `y` must be valid for writes of `n` f32, and no other
    /// thread may write the rows of the panels in `range` while this runs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn exact(w: &PackedBf16, xp: &[f32], y: *mut f32, n: usize, range: Range<usize>) {
        unsafe {
            let kp = w.kp();
            let x = xp.as_ptr();
            let hi = _mm512_set1_epi32(0xffff0000u32 as i32);
            for panel in range {
                let base = w.ptr().add(panel * kp * STEP_BYTES);
                let mut a = [_mm512_setzero_ps(); 4];
                let mut p = 0;
                while p + 4 <= kp {
                    let q = base.add(p * STEP_BYTES);
                    for f in 0..8 {
                        _mm_prefetch::<_MM_HINT_T0>(q.add(PREFETCH + 64 * f) as *const i8);
                    }
                    for u in 0..4 {
                        step(q.add(u * STEP_BYTES), x.add(2 * (p + u)), hi, &mut a);
                    }
                    p += 4;
                }
                while p < kp {
                    step(base.add(p * STEP_BYTES), x.add(2 * p), hi, &mut a);
                    p += 1;
                }
                store_rows(
                    y,
                    n,
                    panel,
                    _mm512_add_ps(a[0], a[1]),
                    _mm512_add_ps(a[2], a[3]),
                );
            }
        }
    }

    /// One k-pair step of one panel: 128 bytes at `q`, x pair at `xv`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `q` is valid for reads of 128 bytes and `x` of 2 f32.
    #[inline(always)]
    unsafe fn step(q: *const u8, x: *const f32, hi: __m512i, a: &mut [__m512; 4]) {
        unsafe {
            let v0 = _mm512_loadu_si512(q as *const _);
            let v1 = _mm512_loadu_si512(q.add(64) as *const _);
            let xe = _mm512_set1_ps(*x);
            let xo = _mm512_set1_ps(*x.add(1));
            a[0] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0)), xe, a[0]);
            a[1] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, hi)), xo, a[1]);
            a[2] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1)), xe, a[2]);
            a[3] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, hi)), xo, a[3]);
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `y` must be valid for writes of `n` f32, and no other
    /// thread may write the rows of the panels in `range` while this runs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn dot(w: &PackedBf16, xb: &[u32], y: *mut f32, n: usize, range: Range<usize>) {
        unsafe {
            let kp = w.kp();
            let x = xb.as_ptr();
            for panel in range {
                let base = w.ptr().add(panel * kp * STEP_BYTES);
                let mut a = [_mm512_setzero_ps(); 8];
                let mut p = 0;
                while p + 4 <= kp {
                    let q = base.add(p * STEP_BYTES);
                    for f in 0..8 {
                        _mm_prefetch::<_MM_HINT_T0>(q.add(PREFETCH + 64 * f) as *const i8);
                    }
                    for u in 0..4 {
                        let v0: __m512bh =
                            transmute(_mm512_loadu_si512(q.add(u * STEP_BYTES) as *const _));
                        let v1: __m512bh =
                            transmute(_mm512_loadu_si512(q.add(u * STEP_BYTES + 64) as *const _));
                        let xv: __m512bh = transmute(_mm512_set1_epi32(*x.add(p + u) as i32));
                        a[2 * u] = _mm512_dpbf16_ps(a[2 * u], xv, v0);
                        a[2 * u + 1] = _mm512_dpbf16_ps(a[2 * u + 1], xv, v1);
                    }
                    p += 4;
                }
                while p < kp {
                    let q = base.add(p * STEP_BYTES);
                    let v0: __m512bh = transmute(_mm512_loadu_si512(q as *const _));
                    let v1: __m512bh = transmute(_mm512_loadu_si512(q.add(64) as *const _));
                    let xv: __m512bh = transmute(_mm512_set1_epi32(*x.add(p) as i32));
                    a[0] = _mm512_dpbf16_ps(a[0], xv, v0);
                    a[1] = _mm512_dpbf16_ps(a[1], xv, v1);
                    p += 1;
                }
                let y0 = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[4], a[6]));
                let y1 = _mm512_add_ps(_mm512_add_ps(a[1], a[3]), _mm512_add_ps(a[5], a[7]));
                store_rows(y, n, panel, y0, y1);
            }
        }
    }
}
