//! This machine's limits as the kernels meet them, for `vl3c bench`'s bounds: the read
//! bandwidth a streaming GEMV can reach, and the compute peak of the instruction the GEMMs
//! issue ([`GemmMode::Auto`]: AMX `tdpbf16ps`, zmm `vdpbf16ps`, or zmm f32 FMA). A bound
//! measured with a weaker instruction or a latency-bound loop is not a ceiling: the kernels
//! beat it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::gemm::GemmMode;

/// [`read_words_gbs`] over a `bytes` buffer of its own, touched before the passes. Give it
/// well over the last-level cache (decode streams GBs).
pub fn read_bandwidth_gbs(bytes: usize, threads: usize, passes: usize) -> f64 {
    let words = (bytes / 64).max(1) * 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    read_words_gbs(&[&buf], threads, passes)
}

/// Read bandwidth in GB/s (10⁹ bytes/s) over memory the caller holds: every thread of the
/// kernels' pool sums its chunk of every part in turn with independent vector accumulators
/// (eight zmm, or eight ymm without AVX-512), so nothing but memory limits it; the best of
/// `passes` passes. Over a decode step's weights that is the pattern of its GEMVs
/// (contiguous halves of the concatenation read 5 % slower than the GEMVs did on a 2-vCPU
/// Zen 4, so that bound was not a ceiling).
pub fn read_words_gbs(parts: &[&[u64]], threads: usize, passes: usize) -> f64 {
    let words: usize = parts.iter().map(|p| p.len()).sum();
    let threads = threads.max(1);
    let sink = AtomicU64::new(0);
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        crate::threads::run(threads, |t| {
            sink.fetch_add(sum_share(parts, threads, t), Ordering::Relaxed);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    (words * 8) as f64 / best / 1e9
}

/// Thread `t`'s share of `parts`: the `t`-th of `threads` chunks of every part, as the GEMVs
/// split every weight; their wrapping sum.
fn sum_share(parts: &[&[u64]], threads: usize, t: usize) -> u64 {
    parts.iter().fold(0u64, |s, p| {
        s.wrapping_add(sum(&p[crate::threads::chunk(p.len(), threads, t)]))
    })
}

fn sum(part: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected.
            return unsafe { x86::sum_zmm(part) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            return unsafe { x86::sum_ymm(part) };
        }
    }
    part.iter().fold(0, |s, &v| s.wrapping_add(v))
}

/// The GEMMs' compute peak in GFLOP/s on `threads` threads and the instruction measured: the
/// one [`GemmMode::Auto`] picks on this CPU.
pub fn gemm_peak_gflops(threads: usize) -> (f64, &'static str) {
    match GemmMode::Auto.resolve() {
        GemmMode::Amx => match crate::amx::peak_gflops(threads) {
            Some(g) => (g, "AMX bf16 tdpbf16ps"),
            None => fma_peak_gflops(threads),
        },
        GemmMode::Bf16Dot => match dpbf16_peak_gflops(threads) {
            Some(g) => (g, "zmm bf16 vdpbf16ps"),
            None => fma_peak_gflops(threads),
        },
        _ => fma_peak_gflops(threads),
    }
}

/// f32 FMA throughput in GFLOP/s (the exact GEMM's and the reference executor's instruction):
/// zmm with AVX-512, ymm with AVX2+FMA, else a scalar multiply-add loop (a lower bound).
pub fn fma_peak_gflops(threads: usize) -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected.
            let g = best_gflops(threads, |iters| unsafe { x86::fma_zmm(iters) });
            return (g, "zmm f32 FMA");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were just detected.
            let g = best_gflops(threads, |iters| unsafe { x86::fma_ymm(iters) });
            return (g, "ymm f32 FMA");
        }
    }
    let g = best_gflops(threads, |iters| {
        let mut acc = [1.0f32; 32];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = *a * 0.999_999 + 1e-7;
            }
        }
        std::hint::black_box(acc);
        (iters * 32 * 2) as f64
    });
    (g, "scalar f32 multiply-add")
}

/// `vdpbf16ps` zmm throughput in GFLOP/s (16 lanes × 2 products × 2 FLOPs per instruction);
/// `None` without AVX512-BF16.
pub fn dpbf16_peak_gflops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx512_bf16() {
        // SAFETY: AVX512-BF16 (with F, BW, VL) was just detected.
        return Some(best_gflops(threads, |iters| unsafe {
            x86::dpbf16_zmm(iters)
        }));
    }
    let _ = threads;
    None
}

/// Best of five runs of `spin` (returns the FLOPs it did) on every thread at once.
fn best_gflops(threads: usize, spin: impl Fn(u64) -> f64 + Sync) -> f64 {
    const ITERS: u64 = 10_000_000;
    let threads = threads.max(1);
    let flops = AtomicU64::new(0);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        flops.store(0, Ordering::Relaxed);
        let start = Instant::now();
        crate::threads::run(threads, |_| {
            flops.fetch_add(spin(ITERS) as u64, Ordering::Relaxed);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    flops.load(Ordering::Relaxed) as f64 / best / 1e9
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Independent chains per probe: more than latency × issue width on current cores.
    const CHAINS: usize = 12;

    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_zmm(part: &[u64]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 8];
        let blocks = part.chunks_exact(64);
        let tail = blocks.remainder();
        for block in blocks {
            for (i, a) in acc.iter_mut().enumerate() {
                // The GEMV's software prefetch, so the probe reads as fast as the kernel can:
                // a hint, never a fault, wherever it points.
                _mm_prefetch::<_MM_HINT_T0>(
                    block
                        .as_ptr()
                        .wrapping_byte_add(crate::gemv::PREFETCH + 64 * i)
                        .cast(),
                );
                // SAFETY: `block` holds 64 u64, so lane group i (8 u64) is inside it.
                let v = unsafe { _mm512_loadu_si512(block.as_ptr().add(8 * i).cast()) };
                *a = _mm512_add_epi64(*a, v);
            }
        }
        let mut s = tail.iter().fold(0u64, |s, &v| s.wrapping_add(v));
        for a in acc {
            s = s.wrapping_add(_mm512_reduce_add_epi64(a) as u64);
        }
        s
    }

    /// # Safety
    ///
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_ymm(part: &[u64]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 8];
        let blocks = part.chunks_exact(32);
        let tail = blocks.remainder();
        for block in blocks {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: `block` holds 32 u64, so lane group i (4 u64) is inside it.
                let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(4 * i).cast()) };
                *a = _mm256_add_epi64(*a, v);
            }
        }
        let mut s = tail.iter().fold(0u64, |s, &v| s.wrapping_add(v));
        for a in acc {
            let mut lanes = [0u64; 4];
            // SAFETY: `lanes` is 32 writable bytes.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a) };
            s = lanes.iter().fold(s, |s, &v| s.wrapping_add(v));
        }
        s
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_zmm(iters: u64) -> f64 {
        let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        std::hint::black_box(&acc);
        (iters as usize * CHAINS * 16 * 2) as f64
    }

    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_ymm(iters: u64) -> f64 {
        let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        std::hint::black_box(&acc);
        (iters as usize * CHAINS * 8 * 2) as f64
    }

    /// # Safety
    ///
    /// The CPU must have AVX-512F, BF16, BW and VL.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn dpbf16_zmm(iters: u64) -> f64 {
        let a: __m512bh = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        let b: __m512bh = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(-1e-3));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        std::hint::black_box(&acc);
        (iters as usize * CHAINS * 16 * 2 * 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_sums_are_the_plain_sum() {
        let v: Vec<u64> = (0..1000u64).map(|i| (i * i) ^ 0x9E37).collect();
        for len in [0, 7, 64, 65, 999, 1000] {
            let want = v[..len].iter().fold(0u64, |s, &x| s.wrapping_add(x));
            assert_eq!(sum(&v[..len]), want, "len {len}");
        }
    }

    #[test]
    fn probes_report_positive_finite_figures() {
        let bw = read_bandwidth_gbs(1 << 20, 2, 2);
        assert!(bw.is_finite() && bw > 0.0, "{bw}");
        let (a, b) = (vec![1u64; 1000], vec![2u64; 24]);
        let bw = read_words_gbs(&[&a, &[], &b], 3, 2);
        assert!(bw.is_finite() && bw > 0.0, "{bw}");
    }

    #[test]
    fn thread_shares_read_every_word_once() {
        let parts: Vec<Vec<u64>> = [1000usize, 0, 24, 513, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n as u64).map(|w| w * 31 + i as u64).collect())
            .collect();
        let parts: Vec<&[u64]> = parts.iter().map(Vec::as_slice).collect();
        let all = parts
            .iter()
            .flat_map(|p| p.iter())
            .fold(0u64, |s, &w| s.wrapping_add(w));
        for threads in 1..=5 {
            let shares = (0..threads)
                .map(|t| sum_share(&parts, threads, t))
                .fold(0u64, u64::wrapping_add);
            assert_eq!(shares, all, "{threads} threads");
        }
        let (g, kind) = gemm_peak_gflops(1);
        assert!(g.is_finite() && g > 0.0 && !kind.is_empty(), "{g} {kind}");
    }
}
