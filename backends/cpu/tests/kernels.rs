//! Accuracy of the CPU matmul kernels against an f64 reference, on awkward sizes.
//!
//! Error bounds, with `S = Σ_k |w·x|` the absolute sum of the products of an output:
//! * exact arithmetic (bf16 weights widened to f32, f32 activations): only f32 accumulation
//!   error, `|err| ≤ 1e-6 · S · max(1, sqrt(k)/4)` (measured worst is far below);
//! * `vdpbf16ps` arithmetic (activations rounded to bf16 with 8 significant bits, relative
//!   error ≤ u = 2^-8 each): `|err| ≤ 2^-8 · S` plus the f32 accumulation term above — a
//!   worst-case bound for any data (the rms error is ~2^-8·sqrt(k)·|typical product|).

mod common;

use common::{reference, tolerance, Rng};
use half::bf16;
use vl3c_cpu::{
    self as cpu, gemm_with, gemv_with, pack, Backend, Epilogue, GemmMode, GemvMode, LayoutError,
    PackedBf16,
};

const SIZES: [usize; 6] = [1, 3, 17, 33, 64, 1000];

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Scalar];
    if cpu::has_avx512_bf16() {
        b.push(Backend::Avx512);
    } else {
        eprintln!("note: CPU lacks AVX512_BF16, only the scalar path is tested");
    }
    b
}

fn check(what: &str, got: &[f32], refs: &[(f64, f64)], exact: bool, k: usize) -> f64 {
    assert_eq!(got.len(), refs.len());
    let mut worst = 0f64;
    for (idx, (g, (r, abs))) in got.iter().zip(refs).enumerate() {
        let err = (*g as f64 - r).abs();
        let tol = tolerance(exact, k, *abs);
        assert!(
            err <= tol,
            "{what}: output {idx}: got {g}, want {r}, |err| {err:e} > tol {tol:e}"
        );
        worst = worst.max(err / abs.max(1e-30));
    }
    worst
}

#[test]
fn pack_roundtrip_and_bytes() {
    let mut rng = Rng(7);
    for &n in &[1usize, 3, 31, 32, 33, 70] {
        for &k in &[1usize, 2, 3, 17, 64] {
            let w = rng.weight(n, k);
            let p = pack(&w, n, k);
            assert_eq!(p.as_bytes().len(), cpu::packed_len(n, k));
            assert_eq!(p.unpack(), w);
            let q = PackedBf16::from_bytes(p.as_bytes(), n, k).unwrap();
            assert_eq!(q.unpack(), w);
            // Unaligned view of the same bytes.
            let mut shifted = vec![0u8; p.as_bytes().len() + 1];
            shifted[1..].copy_from_slice(p.as_bytes());
            let q = PackedBf16::from_bytes(&shifted[1..], n, k).unwrap();
            let x = rng.vec(k);
            let (mut y0, mut y1) = (vec![0.0; n], vec![0.0; n]);
            cpu::gemv(&p, &x, &mut y0, 1);
            cpu::gemv(&q, &x, &mut y1, 2);
            assert_eq!(y0, y1);
            let expected = p.as_bytes().len();
            let err = PackedBf16::from_bytes(&p.as_bytes()[1..], n, k).err();
            assert_eq!(
                err,
                Some(LayoutError {
                    n,
                    k,
                    expected,
                    got: expected - 1
                })
            );
        }
    }
}

#[test]
fn packed_layout_is_documented_one() {
    // Element (i, kk) at bf16 index ((i/32 * kp + kk/2) * 32 + i%32) * 2 + kk%2.
    let (n, k) = (40, 5);
    let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_bits(i as u16 + 1)).collect();
    let p = pack(&w, n, k);
    let kp = 3;
    let b = p.as_bytes();
    for i in 0..n {
        for kk in 0..k {
            let idx = ((i / 32 * kp + kk / 2) * 32 + i % 32) * 2 + kk % 2;
            assert_eq!(
                u16::from_le_bytes([b[2 * idx], b[2 * idx + 1]]),
                (i * k + kk) as u16 + 1
            );
        }
    }
}

#[test]
fn gemv_matches_f64_reference() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut worst = [0f64; 2];
    for &n in &SIZES {
        for &k in &SIZES {
            let w = rng.weight(n, k);
            let p = pack(&w, n, k);
            let x = rng.vec(k);
            let refs = reference(&x, &w, 1, n, k);
            for mode in [GemvMode::Exact, GemvMode::Bf16Dot] {
                let exact = mode == GemvMode::Exact;
                let mut outs = Vec::new();
                for backend in backends() {
                    for threads in [1, 2] {
                        let mut y = vec![f32::NAN; n];
                        gemv_with(&p, &x, &mut y, threads, mode, backend);
                        let what = format!("gemv {n}x{k} {mode:?} {backend:?} t{threads}");
                        let e = check(&what, &y, &refs, exact, k);
                        worst[usize::from(!exact)] = worst[usize::from(!exact)].max(e);
                        outs.push((what, y));
                    }
                }
                // Scalar and SIMD agree with each other to the same bound.
                let base = &outs[0].1;
                for (what, y) in &outs[1..] {
                    for (j, (a, b)) in base.iter().zip(y).enumerate() {
                        let tol = 2.0 * tolerance(exact, k, refs[j].1);
                        assert!(
                            ((a - b) as f64).abs() <= tol,
                            "{what} vs {}: row {j}: {a} vs {b}",
                            outs[0].0
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "gemv worst |err|/S: exact {:e}, bf16 dot {:e}",
        worst[0], worst[1]
    );
}

#[test]
fn gemm_matches_f64_reference() {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let ms = [1usize, 5, 12, 13, 37];
    // 385 pairs > KC crosses a cache-block boundary; 1000 is not a multiple of anything.
    let ks = [1usize, 3, 17, 33, 770, 1001];
    let ns = [1usize, 3, 17, 33, 100];
    let mut worst = [0f64; 2];
    for &m in &ms {
        for &k in &ks {
            for &n in &ns {
                if m * k * n > 2_000_000 && m != 37 {
                    continue;
                }
                let w = rng.weight(n, k);
                let p = pack(&w, n, k);
                let a = rng.vec(m * k);
                let refs = reference(&a, &w, m, n, k);
                for mode in [GemmMode::Exact, GemmMode::Bf16Dot] {
                    let exact = mode == GemmMode::Exact;
                    let mut outs: Vec<(String, Vec<f32>)> = Vec::new();
                    for backend in backends() {
                        for threads in [1, 2] {
                            let mut c = vec![f32::NAN; m * n];
                            gemm_with(&a, &p, &mut c, threads, &Epilogue::default(), mode, backend);
                            let what = format!("gemm {m}x{k}x{n} {mode:?} {backend:?} t{threads}");
                            let e = check(&what, &c, &refs, exact, k);
                            worst[usize::from(!exact)] = worst[usize::from(!exact)].max(e);
                            outs.push((what, c));
                        }
                    }
                    let base = &outs[0].1;
                    for (what, c) in &outs[1..] {
                        for (j, (x, y)) in base.iter().zip(c).enumerate() {
                            let tol = 2.0 * tolerance(exact, k, refs[j].1);
                            assert!(
                                ((x - y) as f64).abs() <= tol,
                                "{what} vs {}: {j}: {x} vs {y}",
                                outs[0].0
                            );
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "gemm worst |err|/S: exact {:e}, bf16 dot {:e}",
        worst[0], worst[1]
    );
}

#[test]
fn gemm_epilogue_bias_residual_accumulate() {
    let mut rng = Rng(99);
    let (m, k, n) = (14, 401, 45);
    let w = rng.weight(n, k);
    let p = pack(&w, n, k);
    let a = rng.vec(m * k);
    let bias = rng.vec(n);
    let res = rng.vec(m * n);
    let prior = rng.vec(m * n);
    let refs = reference(&a, &w, m, n, k);
    for mode in [GemmMode::Exact, GemmMode::Bf16Dot] {
        for backend in backends() {
            for threads in [1, 2] {
                let mut c = prior.clone();
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some(&res),
                    accumulate: true,
                };
                gemm_with(&a, &p, &mut c, threads, &epi, mode, backend);
                for i in 0..m {
                    for j in 0..n {
                        let (r, abs) = refs[i * n + j];
                        let want =
                            r + bias[j] as f64 + res[i * n + j] as f64 + prior[i * n + j] as f64;
                        let err = (c[i * n + j] as f64 - want).abs();
                        let tol = tolerance(mode == GemmMode::Exact, k, abs) + 1e-6 * want.abs();
                        assert!(
                            err <= tol,
                            "{mode:?} {backend:?} t{threads} ({i},{j}): {} vs {want}",
                            c[i * n + j]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_with_one_row_equals_gemv_exact() {
    let mut rng = Rng(5);
    let (k, n) = (300, 70);
    let w = rng.weight(n, k);
    let p = pack(&w, n, k);
    let x = rng.vec(k);
    let refs = reference(&x, &w, 1, n, k);
    let mut y = vec![0.0; n];
    let mut c = vec![0.0; n];
    cpu::gemv(&p, &x, &mut y, 2);
    cpu::gemm_with(
        &x,
        &p,
        &mut c,
        2,
        &Epilogue::default(),
        GemmMode::Exact,
        Backend::Auto,
    );
    check("gemv", &y, &refs, true, k);
    check("gemm", &c, &refs, true, k);
}
