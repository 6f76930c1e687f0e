//! Matmul kernel benchmark on VideoLLaMA3-2B shapes.
//!
//! Run: `cargo bench -p vl3c-cpu --bench matmul` (add `-- quick` for fewer shapes,
//! `-- gemm` / `-- gemv` / `-- peak` / `-- amx` to run one section).
//!
//! GEMV "hot" repeats one weight (it may sit in the 480 MB L3 of some hosts); "cold" cycles
//! through enough copies (> 600 MB) that every call streams from DRAM, as in decode.

use std::time::{Duration, Instant};

use half::bf16;
use vl3c_cpu::{self as cpu, Backend, Epilogue, GemmMode, GemvMode, PackedBf16};

struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

fn weight(rng: &mut Rng, n: usize, k: usize) -> PackedBf16<'static> {
    let w: Vec<bf16> = (0..n * k)
        .map(|_| bf16::from_f32(rng.next_f32() * 0.05))
        .collect();
    cpu::pack(&w, n, k)
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A copy of `w`'s bytes on 64-byte lines, as an engine's `weights.bin` maps them (a `Vec<u8>`
/// from [`cpu::pack`] may start mid-line, which splits every AMX tile row load).
fn aligned(w: &PackedBf16) -> Vec<Line> {
    let bytes = w.as_bytes();
    let mut v = vec![Line([0; 64]); bytes.len().div_ceil(64)];
    // SAFETY: `v` holds at least `bytes.len()` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len())
    };
    v
}

fn as_packed(lines: &[Line], n: usize, k: usize) -> PackedBf16<'_> {
    // SAFETY: `Line` is plain bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u8, cpu::packed_len(n, k)) };
    PackedBf16::from_bytes(bytes, n, k).expect("packed length")
}

/// Median seconds per call, at least `min_reps` calls and about `budget` of time.
fn time(mut f: impl FnMut(), min_reps: usize, budget: Duration) -> f64 {
    f();
    let mut ts = Vec::new();
    let start = Instant::now();
    while ts.len() < min_reps || (start.elapsed() < budget && ts.len() < 1000) {
        let t = Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn row(shape: &str, kernel: &str, threads: usize, secs: f64, metric: &str) {
    println!(
        "| {shape:<22} | {kernel:<22} | {threads:>2} | {:>10.3} ms | {metric:>16} |",
        secs * 1e3
    );
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;
    use std::mem::transmute;

    /// 24 independent vdpbf16ps chains; returns FLOPs done (2 per bf16 MAC).
    ///
    /// # Safety
    ///
    /// the CPU must have AVX-512F, BF16, BW and VL (the caller checks
    /// `Simd`/`is_x86_feature_detected!`).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn dp_loop(iters: usize) -> f64 {
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 24];
            let a: __m512bh = transmute(_mm512_set1_epi32(0x3f803f80));
            let b: __m512bh = transmute(_mm512_set1_epi32(0x3f003f00u32 as i32));
            for _ in 0..iters {
                for v in acc.iter_mut() {
                    *v = _mm512_dpbf16_ps(*v, a, b);
                }
            }
            let mut s = _mm512_setzero_ps();
            for v in acc {
                s = _mm512_add_ps(s, v);
            }
            std::hint::black_box(s);
            (iters * 24 * 64) as f64
        }
    }

    /// 24 independent f32 FMA chains; returns FLOPs.
    ///
    /// # Safety
    ///
    /// the CPU must have AVX-512F (the caller checks it).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_loop(iters: usize) -> f64 {
        let mut acc = [_mm512_setzero_ps(); 24];
        let a = _mm512_set1_ps(1.0);
        let b = _mm512_set1_ps(1e-30);
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        std::hint::black_box(s);
        (iters * 24 * 32) as f64
    }
}

/// Plain streaming read of 1 GB (sum of u64 words, 8 independent lanes): the DRAM roofline
/// that a GEMV can at best reach on this host, right now.
fn bench_read() {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    for threads in [1usize, 2] {
        let secs = time(
            || {
                let chunk = buf.len() / threads;
                let s: u64 = std::thread::scope(|sc| {
                    let hs: Vec<_> = buf
                        .chunks(chunk)
                        .map(|c| {
                            sc.spawn(move || {
                                let mut acc = [0u64; 8];
                                for w in c.chunks_exact(8) {
                                    for (a, v) in acc.iter_mut().zip(w) {
                                        *a = a.wrapping_add(*v);
                                    }
                                }
                                acc.iter().fold(0u64, |x, y| x.wrapping_add(*y))
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().unwrap())
                        .fold(0, u64::wrapping_add)
                });
                std::hint::black_box(s);
            },
            3,
            Duration::from_millis(500),
        );
        row(
            "1 GiB stream",
            "read (sum u64)",
            threads,
            secs,
            &format!("{:.1} GB/s", 8.0 * buf.len() as f64 / secs / 1e9),
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn bench_peak() {
    if !cpu::has_avx512_bf16() {
        println!("(no AVX512_BF16: peak skipped)");
        return;
    }
    for (name, f) in [
        ("vdpbf16ps zmm", peak::dp_loop as unsafe fn(usize) -> f64),
        ("vfmadd f32 zmm", peak::fma_loop as unsafe fn(usize) -> f64),
    ] {
        for threads in [1usize, 2] {
            let iters = 20_000_000;
            let t = Instant::now();
            let flops: f64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || unsafe { f(iters) }))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            let secs = t.elapsed().as_secs_f64();
            row(
                "peak (register only)",
                name,
                threads,
                secs,
                &format!("{:.1} GFLOP/s", flops / secs / 1e9),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn bench_peak() {}

fn bench_gemv(quick: bool) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut shapes = vec![
        (1536usize, 1536usize, "q/o proj"),
        (8960, 1536, "gate or up"),
        (1536, 8960, "down"),
    ];
    if !quick {
        shapes.push((151936, 1536, "lm head"));
        shapes.push((256, 1536, "k or v proj"));
    }
    let backend = if cpu::has_avx512_bf16() {
        Backend::Avx512
    } else {
        Backend::Scalar
    };
    for &(n, k, what) in &shapes {
        let w = weight(&mut rng, n, k);
        // Enough distinct copies that the set exceeds 600 MB (cold), or one (hot).
        let bytes = w.as_bytes().len();
        let copies = (600_000_000usize).div_ceil(bytes).max(1);
        let ws: Vec<PackedBf16> = if copies > 1 {
            (0..copies).map(|_| w.clone().into_owned()).collect()
        } else {
            vec![w.clone()]
        };
        let x = rng.vec(k);
        let mut y = vec![0f32; n];
        for mode in [GemvMode::Exact, GemvMode::Bf16Dot] {
            for threads in [1usize, 2] {
                let shape = format!("{n}x{k} {what}");
                let kname = format!("gemv {mode:?}");
                let hot = time(
                    || cpu::gemv_with(&w, &x, &mut y, threads, mode, backend),
                    5,
                    Duration::from_millis(300),
                );
                row(
                    &shape,
                    &format!("{kname} hot"),
                    threads,
                    hot,
                    &format!("{:.1} GB/s", bytes as f64 / hot / 1e9),
                );
                if copies > 1 {
                    let mut i = 0;
                    let cold = time(
                        || {
                            cpu::gemv_with(&ws[i % copies], &x, &mut y, threads, mode, backend);
                            i += 1;
                        },
                        copies,
                        Duration::from_millis(500),
                    );
                    row(
                        &shape,
                        &format!("{kname} cold"),
                        threads,
                        cold,
                        &format!("{:.1} GB/s", bytes as f64 / cold / 1e9),
                    );
                }
            }
        }
    }
}

fn bench_gemm(quick: bool) {
    let mut rng = Rng(0x0fed_cba9_8765_4321);
    let mut shapes = vec![
        (1024usize, 1152usize, 4304usize, "vision fc1"),
        (300, 1536, 8960, "llm gate/up"),
    ];
    if !quick {
        shapes.extend([
            (1024, 4304, 1152, "vision fc2"),
            (1024, 1152, 3456, "vision qkv"),
            (1024, 1152, 1152, "vision o"),
            (300, 8960, 1536, "llm down"),
            (300, 1536, 1536, "llm q/o"),
            (300, 1536, 256, "llm k/v"),
        ]);
    }
    let backend = if cpu::has_avx512_bf16() {
        Backend::Avx512
    } else {
        Backend::Scalar
    };
    for &(m, k, n, what) in &shapes {
        let lines = aligned(&weight(&mut rng, n, k));
        let w = as_packed(&lines, n, k);
        let a = rng.vec(m * k);
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let mut modes = vec![GemmMode::Exact, GemmMode::Bf16Dot];
        if cpu::has_amx() {
            modes.push(GemmMode::Amx);
        }
        for mode in modes {
            for threads in [1usize, 2] {
                let secs = time(
                    || cpu::gemm_with(&a, &w, &mut c, threads, &Epilogue::default(), mode, backend),
                    3,
                    Duration::from_millis(700),
                );
                let kname = format!("gemm {mode:?}");
                row(
                    &format!("{m}x{k}x{n} {what}"),
                    &kname,
                    threads,
                    secs,
                    &format!("{:.1} GFLOP/s", flops / secs / 1e9),
                );
            }
        }
    }
}

/// The AMX GEMM at the matmul shapes the 2B engine runs (merged projections as the optimizer
/// fuses them), 1 and 2 threads, best of a time budget: a shared host's noise only slows a run down.
fn bench_amx() {
    if !cpu::has_amx() {
        println!("(no AMX: amx skipped)");
        return;
    }
    let mut rng = Rng(0x5eed_f0a3_c5c5);
    let shapes = [
        (1024usize, 1152usize, 3456usize, "vision qkv"),
        (1024, 1152, 1152, "vision o"),
        (1024, 1152, 4304, "vision fc1"),
        (1024, 4304, 1152, "vision fc2"),
        (300, 1536, 2048, "llm qkv"),
        (300, 1536, 1536, "llm o"),
        (300, 1536, 17920, "llm gate_up"),
        (300, 8960, 1536, "llm down"),
        (300, 1536, 151936, "llm lm head"),
    ];
    for &(m, k, n, what) in &shapes {
        let lines = aligned(&weight(&mut rng, n, k));
        let w = as_packed(&lines, n, k);
        let a = rng.vec(m * k);
        let bias = rng.vec(n);
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let epi = Epilogue {
            bias: Some(&bias),
            ..Epilogue::default()
        };
        for threads in [1, 2] {
            let mut best = f64::INFINITY;
            let start = Instant::now();
            let mut reps = 0;
            while reps < 3 || (start.elapsed() < Duration::from_millis(1000) && reps < 200) {
                let t = Instant::now();
                cpu::gemm_with(&a, &w, &mut c, threads, &epi, GemmMode::Amx, Backend::Auto);
                best = best.min(t.elapsed().as_secs_f64());
                reps += 1;
            }
            row(
                &format!("{m}x{k}x{n} {what}"),
                "gemm Amx +bias (best)",
                threads,
                best,
                &format!("{:.1} GFLOP/s", flops / best / 1e9),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    let only = |s: &str| {
        !args
            .iter()
            .any(|a| a == "gemm" || a == "gemv" || a == "peak" || a == "read" || a == "amx")
            || args.iter().any(|a| a == s)
    };
    println!(
        "command: cargo bench -p vl3c-cpu --bench matmul {}",
        args.join(" ")
    );
    println!("amx: {}", cpu::has_amx());
    println!(
        "avx512_bf16: {}  (MR={}, NR={}, KC={} pairs)",
        cpu::has_avx512_bf16(),
        cpu::MR,
        cpu::NR,
        cpu::KC
    );
    println!(
        "| {:<22} | {:<22} | th | {:>13} | {:>16} |",
        "shape (m x k x n / n x k)", "kernel", "time", "rate"
    );
    println!("|{}|", "-".repeat(90));
    if only("peak") {
        bench_peak();
    }
    if only("gemv") || only("read") {
        bench_read();
    }
    if only("gemv") {
        bench_gemv(quick);
    }
    if only("gemm") {
        bench_gemm(quick);
    }
    if only("amx") {
        bench_amx();
    }
}
