//! Prefill / encoder matrix product `C[m, n] = A[m, k] · Wᵀ` over a [`PackedBf16`] weight.
//!
//! * `A` (f32, row-major) is rounded to bf16 once per call and re-laid-out in row blocks of
//!   [`MR`] rows: block `b`, pair `p`, row `r` at u32 index `(b * kp + p) * MR + r`, each u32 the
//!   bf16 pair `(A[row, 2p], A[row, 2p+1])` (zero-padded rows and column).
//! * The micro-kernel keeps an `MR × 32` f32 tile of `C` in `2·MR` zmm accumulators; per k-pair
//!   it loads two zmm of the weight panel (128 contiguous bytes), broadcasts one u32 of `A` per
//!   row, and issues `2·MR` `vdpbf16ps` ([`GemmMode::Bf16Dot`]). In [`GemmMode::Exact`] `A`
//!   stays f32 (laid out `(b * 2kp + kk) * MR + r`), the two weight zmm are widened in
//!   registers (shift / mask: 4 ops per pair) and `4·MR` f32 FMAs run per k-pair.
//! * Cache blocking: `k` is cut into blocks of [`KC`] pairs so one panel block
//!   (`KC × 128` bytes) stays in L1 while all row blocks of `A` (from L2) pass over it; the
//!   `m × 32` strip of `C` stays in L2 across k-blocks.
//! * Threads take contiguous ranges of panels (columns of `C`).
//! * The [`Epilogue`] is applied on the last k-block while the tile is stored.

use super::pack::{bf16_bits_to_f32, f32_to_bf16_bits, PackedBf16, NR};
use super::threads::{self, SyncPtr};
use std::mem::MaybeUninit;

/// Rows of `C` per micro-tile.
pub const MR: usize = 12;
/// k-pairs per cache block (so `2 * KC` input features), `vdpbf16ps` path.
pub const KC: usize = 192;
/// k-pairs per cache block, exact path (A stays f32, twice the bytes per pair).
pub const KC_EXACT: usize = 128;

/// Arithmetic of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GemmMode {
    /// Whichever is faster on this CPU: [`GemmMode::Amx`] where the CPU has AMX-BF16 (and the
    /// OS grants the tile state), else [`GemmMode::Exact`] on Intel (where `vdpbf16ps` zmm
    /// issues at half the rate of f32 FMA, so widening is both exact and faster),
    /// [`GemmMode::Bf16Dot`] elsewhere (AMD Zen 4: `vdpbf16ps` does twice the FLOPs of FMA).
    #[default]
    Auto,
    /// bf16 weights widened to f32 in registers, f32 `A`, f32 FMA: no rounding of `A`.
    Exact,
    /// `A` rounded to bf16 (RNE), `vdpbf16ps`, f32 accumulation.
    Bf16Dot,
    /// Same arithmetic class as [`GemmMode::Bf16Dot`] (`A` rounded to bf16, f32
    /// accumulation), on AMX tiles (`tdpbf16ps`, see [`amx`](super::amx)). Where AMX is not
    /// available (or with [`Backend::Scalar`](super::Backend::Scalar)) it runs as `Bf16Dot`.
    Amx,
}

impl GemmMode {
    pub fn resolve(self) -> GemmMode {
        match self {
            GemmMode::Auto => {
                if super::amx::available() {
                    GemmMode::Amx
                } else if is_intel() {
                    GemmMode::Exact
                } else {
                    GemmMode::Bf16Dot
                }
            }
            m => m,
        }
    }
}

fn is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let r = std::arch::x86_64::__cpuid(0);
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&r.ebx.to_le_bytes());
        v[4..8].copy_from_slice(&r.edx.to_le_bytes());
        v[8..].copy_from_slice(&r.ecx.to_le_bytes());
        &v == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Work folded into the store of `C`. Column vector `bias` has length `n`; `residual` is
/// `[m, n]` row-major; with `accumulate`, the product is added to what `c` already holds
/// (an in-place residual add).
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'e> {
    pub bias: Option<&'e [f32]>,
    pub residual: Option<&'e [f32]>,
    pub accumulate: bool,
}

/// `A` in bf16 pairs, row blocks of `MR`.
///
/// In [`GemmMode::Exact`] the entries are the f32 bits of `A` itself, one per column:
/// `(b * 2kp + kk) * MR + r`.
pub(crate) struct PackedA {
    pub data: Vec<u32>,
    pub kp: usize,
    pub blocks: usize,
}

pub(crate) fn pack_a_f32(a: &[f32], m: usize, k: usize, threads: usize) -> PackedA {
    let kp = k.div_ceil(2);
    let blocks = m.div_ceil(MR);
    let mut data = vec![0u32; blocks * 2 * kp * MR];
    let dp = SyncPtr(data.as_mut_ptr());
    let threads = threads.clamp(1, blocks.max(1));
    threads::run(threads, |t| {
        for b in threads::chunk(blocks, threads, t) {
            // SAFETY: each block is written by exactly one thread.
            let blk = unsafe {
                std::slice::from_raw_parts_mut(dp.get().add(b * 2 * kp * MR), 2 * kp * MR)
            };
            for r in 0..MR.min(m - b * MR) {
                let src = &a[(b * MR + r) * k..][..k];
                for (kk, v) in src.iter().enumerate() {
                    blk[kk * MR + r] = v.to_bits();
                }
            }
        }
    });
    PackedA { data, kp, blocks }
}

pub(crate) fn pack_a(a: &[f32], m: usize, k: usize, threads: usize) -> PackedA {
    let kp = k.div_ceil(2);
    let blocks = m.div_ceil(MR);
    let mut data = vec![0u32; blocks * kp * MR];
    let dp = SyncPtr(data.as_mut_ptr());
    let threads = threads.clamp(1, blocks.max(1));
    threads::run(threads, |t| {
        let mut row = vec![0u32; kp];
        for b in threads::chunk(blocks, threads, t) {
            // SAFETY: each block is written by exactly one thread.
            let blk = unsafe { std::slice::from_raw_parts_mut(dp.get().add(b * kp * MR), kp * MR) };
            for r in 0..MR.min(m - b * MR) {
                let src = &a[(b * MR + r) * k..][..k];
                convert_row(src, &mut row);
                for (p, v) in row.iter().enumerate() {
                    blk[p * MR + r] = *v;
                }
            }
        }
    });
    PackedA { data, kp, blocks }
}

/// f32 row → bf16 pairs (RNE), odd tail padded with zero.
pub(crate) fn convert_row(src: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512_bf16() {
        // SAFETY: features detected.
        unsafe { avx512::convert_row(src, dst) };
        return;
    }
    convert_row_scalar(src, dst);
}

fn convert_row_scalar(src: &[f32], dst: &mut [u32]) {
    for (p, d) in dst.iter_mut().enumerate() {
        let lo = f32_to_bf16_bits(src[2 * p]) as u32;
        let hi = src
            .get(2 * p + 1)
            .map_or(0, |v| f32_to_bf16_bits(*v) as u32);
        *d = lo | hi << 16;
    }
}

/// `c` may be uninitialized when the epilogue does not accumulate: every element is written
/// (through raw pointers, never read) before it is returned.
pub(crate) fn gemm_impl(
    a: &[f32],
    w: &PackedBf16,
    c: &mut [MaybeUninit<f32>],
    threads: usize,
    epi: &Epilogue,
    mode: GemmMode,
    simd: bool,
) {
    let mode = mode.resolve();
    let (n, k) = (w.n(), w.k());
    assert!(k > 0 || a.is_empty(), "gemm: k = 0");
    assert_eq!(
        a.len() % k.max(1),
        0,
        "gemm: a has {} elements, not a multiple of k = {k}",
        a.len()
    );
    let m = a.len().checked_div(k).unwrap_or(0);
    assert_eq!(
        c.len(),
        m * n,
        "gemm: c has {} elements, expected {m}×{n}",
        c.len()
    );
    if let Some(b) = epi.bias {
        assert_eq!(
            b.len(),
            n,
            "gemm: bias has {} elements, expected {n}",
            b.len()
        );
    }
    if let Some(r) = epi.residual {
        assert_eq!(
            r.len(),
            m * n,
            "gemm: residual has {} elements, expected {m}×{n}",
            r.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    let mode = match mode {
        GemmMode::Amx if simd && super::amx::available() => {
            super::amx::gemm(a, w, c, m, threads, epi);
            return;
        }
        GemmMode::Amx => GemmMode::Bf16Dot,
        m => m,
    };
    let exact = mode == GemmMode::Exact;
    let pa = match (exact, simd) {
        (true, _) => pack_a_f32(a, m, k, threads),
        (false, true) => pack_a(a, m, k, threads),
        (false, false) => pack_a_scalar(a, m, k),
    };
    let panels = w.panels();
    let threads = threads.clamp(1, panels);
    let cp = SyncPtr(c.as_mut_ptr() as *mut f32);
    threads::run(threads, |t| {
        let range = threads::chunk(panels, threads, t);
        // SAFETY: each thread writes only the columns of its own panels.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if simd {
                if exact {
                    avx512::gemm_panels_exact(&pa, w, cp.get(), m, range, epi);
                } else {
                    avx512::gemm_panels(&pa, w, cp.get(), m, range, epi);
                }
                return;
            }
            scalar_panels(&pa, w, cp.get(), m, range, epi, exact);
        }
    });
}

fn pack_a_scalar(a: &[f32], m: usize, k: usize) -> PackedA {
    let kp = k.div_ceil(2);
    let blocks = m.div_ceil(MR);
    let mut data = vec![0u32; blocks * kp * MR];
    let mut row = vec![0u32; kp];
    for i in 0..m {
        convert_row_scalar(&a[i * k..][..k], &mut row);
        let (b, r) = (i / MR, i % MR);
        for (p, v) in row.iter().enumerate() {
            data[(b * kp + p) * MR + r] = *v;
        }
    }
    PackedA { data, kp, blocks }
}

/// Same arithmetic as the SIMD kernel (bf16 products, f32 accumulation), plain loops.
///
/// # Safety
///
/// `c` must be valid for writes of `m` rows of `w.n()` f32 (row stride `w.n()`), and no other
/// thread may touch the columns of the panels in `range` while this runs.
unsafe fn scalar_panels(
    pa: &PackedA,
    w: &PackedBf16,
    c: *mut f32,
    m: usize,
    range: std::ops::Range<usize>,
    epi: &Epilogue,
    exact: bool,
) {
    unsafe {
        let (n, kp) = (w.n(), pa.kp);
        for panel in range {
            for i in 0..m {
                let (b, r) = (i / MR, i % MR);
                let mut acc = [0f32; NR];
                for p in 0..kp {
                    let (a0, a1) = if exact {
                        let base = (b * 2 * kp + 2 * p) * MR + r;
                        (
                            f32::from_bits(pa.data[base]),
                            f32::from_bits(pa.data[base + MR]),
                        )
                    } else {
                        let pair = pa.data[(b * kp + p) * MR + r];
                        (
                            bf16_bits_to_f32(pair as u16),
                            bf16_bits_to_f32((pair >> 16) as u16),
                        )
                    };
                    for (j, s) in acc.iter_mut().enumerate() {
                        *s += a0 * bf16_bits_to_f32(w.bits(panel, p, j, 0))
                            + a1 * bf16_bits_to_f32(w.bits(panel, p, j, 1));
                    }
                }
                for (j, s) in acc.iter().enumerate() {
                    let col = panel * NR + j;
                    if col >= n {
                        break;
                    }
                    let dst = c.add(i * n + col);
                    let mut v = *s;
                    if epi.accumulate {
                        v += *dst;
                    }
                    if let Some(bias) = epi.bias {
                        v += bias[col];
                    }
                    if let Some(res) = epi.residual {
                        v += res[i * n + col];
                    }
                    *dst = v;
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
    use super::{Epilogue, PackedA, KC, KC_EXACT, MR};

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn convert_row(src: &[f32], dst: &mut [u32]) {
        unsafe {
            let k = src.len();
            let s = src.as_ptr();
            let d = dst.as_mut_ptr() as *mut u8;
            let mut i = 0;
            while i + 32 <= k {
                let lo = _mm512_loadu_ps(s.add(i));
                let hi = _mm512_loadu_ps(s.add(i + 16));
                // Result: low 16 bf16 from the second operand, high 16 from the first.
                let v: __m512i = transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(d.add(2 * i) as *mut _, v);
                i += 32;
            }
            if i < k {
                let rem = k - i;
                let m0: __mmask16 = if rem >= 16 {
                    0xffff
                } else {
                    ((1u32 << rem) - 1) as u16
                };
                let m1: __mmask16 = if rem > 16 {
                    ((1u32 << (rem - 16)) - 1) as u16
                } else {
                    0
                };
                let lo = _mm512_maskz_loadu_ps(m0, s.add(i));
                let hi = _mm512_maskz_loadu_ps(m1, s.add(i + 16));
                let v: __m512i = transmute(_mm512_cvtne2ps_pbh(hi, lo));
                // bf16 elements to write: rem rounded up to even (the pad is the zero we loaded).
                let elems = rem.div_ceil(2) * 2;
                let mask: __mmask32 = if elems >= 32 {
                    u32::MAX
                } else {
                    (1u32 << elems) - 1
                };
                _mm512_mask_storeu_epi16(d.add(2 * i) as *mut _, mask, v);
            }
        }
    }

    #[inline(always)]
    fn col_masks(valid: usize) -> (__mmask16, __mmask16) {
        let m0 = if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        };
        let m1 = if valid >= 32 {
            0xffff
        } else if valid > 16 {
            ((1u32 << (valid - 16)) - 1) as u16
        } else {
            0
        };
        (m0, m1)
    }

    struct Tile {
        c: *mut f32,
        ldc: usize,
        m0: __mmask16,
        m1: __mmask16,
        load_c: bool,
        bias: *const f32,
        res: *const f32,
    }

    /// `R ≤ MR` rows × 32 columns over `kc` pairs. `a` points at pair `p0` of a packed row block
    /// (stride `MR` u32 per pair), `b` at pair `p0` of a weight panel.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `a` and `b` are valid for `kc` pairs of their packed
    /// layouts; `t.c` must point at an `R`-row × 32-column block of `C` valid for reads and writes
    /// with row stride `t.ldc` (and `t.bias`/`t.res`, where not null, at as many readable values).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel<const R: usize>(a: *const u32, b: *const u8, kc: usize, t: &Tile) {
        unsafe {
            let mut acc0 = [_mm512_setzero_ps(); R];
            let mut acc1 = [_mm512_setzero_ps(); R];
            let mut a = a;
            let mut b = b;
            for _ in 0..kc {
                let b0: __m512bh = transmute(_mm512_loadu_si512(b as *const _));
                let b1: __m512bh = transmute(_mm512_loadu_si512(b.add(64) as *const _));
                for r in 0..R {
                    let av: __m512bh = transmute(_mm512_set1_epi32(*a.add(r) as i32));
                    acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                    acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
                }
                a = a.add(MR);
                b = b.add(STEP_BYTES);
            }
            store_tile(&acc0, &acc1, t);
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `t.c` must point at an `R`-row × 32-column block of `C`
    /// valid for reads and writes with row stride `t.ldc` (and `t.bias`/`t.res`, where not null, at
    /// as many readable values).
    #[inline(always)]
    unsafe fn store_tile<const R: usize>(acc0: &[__m512; R], acc1: &[__m512; R], t: &Tile) {
        unsafe {
            let (bias0, bias1) = if t.bias.is_null() {
                (_mm512_setzero_ps(), _mm512_setzero_ps())
            } else {
                (
                    _mm512_maskz_loadu_ps(t.m0, t.bias),
                    _mm512_maskz_loadu_ps(t.m1, t.bias.add(16)),
                )
            };
            for r in 0..R {
                let cr = t.c.add(r * t.ldc);
                let mut v0 = _mm512_add_ps(acc0[r], bias0);
                let mut v1 = _mm512_add_ps(acc1[r], bias1);
                if t.load_c {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(t.m0, cr));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(t.m1, cr.add(16)));
                }
                if !t.res.is_null() {
                    let rr = t.res.add(r * t.ldc);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(t.m0, rr));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(t.m1, rr.add(16)));
                }
                _mm512_mask_storeu_ps(cr, t.m0, v0);
                _mm512_mask_storeu_ps(cr.add(16), t.m1, v1);
            }
        }
    }

    /// # Safety
    ///
    /// As [`kernel`] with `R = rows`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel_dyn(rows: usize, a: *const u32, b: *const u8, kc: usize, t: &Tile) {
        unsafe {
            match rows {
                12 => kernel::<12>(a, b, kc, t),
                1 => kernel::<1>(a, b, kc, t),
                2 => kernel::<2>(a, b, kc, t),
                3 => kernel::<3>(a, b, kc, t),
                4 => kernel::<4>(a, b, kc, t),
                5 => kernel::<5>(a, b, kc, t),
                6 => kernel::<6>(a, b, kc, t),
                7 => kernel::<7>(a, b, kc, t),
                8 => kernel::<8>(a, b, kc, t),
                9 => kernel::<9>(a, b, kc, t),
                10 => kernel::<10>(a, b, kc, t),
                11 => kernel::<11>(a, b, kc, t),
                _ => unreachable!("MR is 12"),
            }
        }
    }
    const _: () = assert!(MR == 12);

    /// Exact variant of [`kernel`]: `a` points at column `2·p0` of a packed f32 row block
    /// (stride `MR` per column); weights widened to f32 in registers, f32 FMA.
    ///
    /// # Safety
    ///
    /// As [`kernel`].
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel_exact<const R: usize>(a: *const f32, b: *const u8, kc: usize, t: &Tile) {
        unsafe {
            let mut acc0 = [_mm512_setzero_ps(); R];
            let mut acc1 = [_mm512_setzero_ps(); R];
            let hi = _mm512_set1_epi32(0xffff0000u32 as i32);
            let mut a = a;
            let mut b = b;
            for _ in 0..kc {
                let v0 = _mm512_loadu_si512(b as *const _);
                let v1 = _mm512_loadu_si512(b.add(64) as *const _);
                let e0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0));
                let o0 = _mm512_castsi512_ps(_mm512_and_si512(v0, hi));
                let e1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1));
                let o1 = _mm512_castsi512_ps(_mm512_and_si512(v1, hi));
                for r in 0..R {
                    let ae = _mm512_set1_ps(*a.add(r));
                    let ao = _mm512_set1_ps(*a.add(MR + r));
                    acc0[r] = _mm512_fmadd_ps(e0, ae, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(e1, ae, acc1[r]);
                    acc0[r] = _mm512_fmadd_ps(o0, ao, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(o1, ao, acc1[r]);
                }
                a = a.add(2 * MR);
                b = b.add(STEP_BYTES);
            }
            store_tile(&acc0, &acc1, t);
        }
    }

    /// # Safety
    ///
    /// As [`kernel`] with `R = rows`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel_exact_dyn(rows: usize, a: *const f32, b: *const u8, kc: usize, t: &Tile) {
        unsafe {
            match rows {
                12 => kernel_exact::<12>(a, b, kc, t),
                1 => kernel_exact::<1>(a, b, kc, t),
                2 => kernel_exact::<2>(a, b, kc, t),
                3 => kernel_exact::<3>(a, b, kc, t),
                4 => kernel_exact::<4>(a, b, kc, t),
                5 => kernel_exact::<5>(a, b, kc, t),
                6 => kernel_exact::<6>(a, b, kc, t),
                7 => kernel_exact::<7>(a, b, kc, t),
                8 => kernel_exact::<8>(a, b, kc, t),
                9 => kernel_exact::<9>(a, b, kc, t),
                10 => kernel_exact::<10>(a, b, kc, t),
                11 => kernel_exact::<11>(a, b, kc, t),
                _ => unreachable!("MR is 12"),
            }
        }
    }

    /// Walks the weight panels of `range` over k-blocks of `kc_max` pairs and every row block
    /// of A, calling `kernel(rows, row_block, p0, kc, b, tile)`; the epilogue (bias, residual)
    /// rides on the last k-block and the accumulator is reloaded after the first.
    ///
    /// # Safety
    ///
    /// `c` must be valid for writes of `m` rows of `w.n()` f32 (row stride `w.n()`), and no other
    /// thread may touch the columns of the panels in `range` while this runs; `kernel` must be
    /// sound for every tile it is given.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn for_each_tile(
        blocks: usize,
        kp: usize,
        kc_max: usize,
        w: &PackedBf16,
        c: *mut f32,
        m: usize,
        range: Range<usize>,
        epi: &Epilogue,
        mut kernel: impl FnMut(usize, usize, usize, usize, *const u8, &Tile),
    ) {
        unsafe {
            let n = w.n();
            let bias = epi.bias.map_or(std::ptr::null(), |b| b.as_ptr());
            let res = epi.residual.map_or(std::ptr::null(), |r| r.as_ptr());
            for panel in range {
                let col = panel * NR;
                let (m0, m1) = col_masks(n - col);
                let wpanel = w.ptr().add(panel * kp * STEP_BYTES);
                let mut p0 = 0;
                while p0 < kp {
                    let kc = kc_max.min(kp - p0);
                    let (first, last) = (p0 == 0, p0 + kc == kp);
                    for blk in 0..blocks {
                        let row = blk * MR;
                        let t = Tile {
                            c: c.add(row * n + col),
                            ldc: n,
                            m0,
                            m1,
                            load_c: !first || epi.accumulate,
                            bias: if last && !bias.is_null() {
                                bias.add(col)
                            } else {
                                std::ptr::null()
                            },
                            res: if last && !res.is_null() {
                                res.add(row * n + col)
                            } else {
                                std::ptr::null()
                            },
                        };
                        kernel(
                            MR.min(m - row),
                            blk,
                            p0,
                            kc,
                            wpanel.add(p0 * STEP_BYTES),
                            &t,
                        );
                    }
                    p0 += kc;
                }
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `c` must be valid for writes of `m` rows of `w.n()` f32
    /// (row stride `w.n()`), and no other thread may touch the columns of the panels in `range`
    /// while this runs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn gemm_panels_exact(
        pa: &PackedA,
        w: &PackedBf16,
        c: *mut f32,
        m: usize,
        range: Range<usize>,
        epi: &Epilogue,
    ) {
        unsafe {
            let (kp, ad) = (pa.kp, pa.data.as_ptr() as *const f32);
            for_each_tile(
                pa.blocks,
                kp,
                KC_EXACT,
                w,
                c,
                m,
                range,
                epi,
                |rows, blk, p0, kc, b, t| {
                    kernel_exact_dyn(rows, ad.add((blk * 2 * kp + 2 * p0) * MR), b, kc, t)
                },
            );
        }
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`); `c` must be valid for writes of `m` rows of `w.n()` f32
    /// (row stride `w.n()`), and no other thread may touch the columns of the panels in `range`
    /// while this runs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn gemm_panels(
        pa: &PackedA,
        w: &PackedBf16,
        c: *mut f32,
        m: usize,
        range: Range<usize>,
        epi: &Epilogue,
    ) {
        unsafe {
            let kp = pa.kp;
            for_each_tile(
                pa.blocks,
                kp,
                KC,
                w,
                c,
                m,
                range,
                epi,
                |rows, blk, p0, kc, b, t| {
                    kernel_dyn(rows, pa.data.as_ptr().add((blk * kp + p0) * MR), b, kc, t)
                },
            );
        }
    }
}
