//! The AVX-512 element-wise and norm kernels against f64 evaluations of the reference
//! executor's formulas, on both paths (the scalar one is what CPUs without AVX-512 run).

mod common;

use common::Rng;
use vl3c_cpu::elementwise::{activation, layer_norm, rms_norm, swiglu, Act};

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Largest error in units of the f32 spacing at the expected value (floored at 1e-30).
fn ulps(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let spacing = (w.abs() as f32).max(f32::MIN_POSITIVE) * f32::EPSILON;
            (g as f64 - w).abs() / spacing as f64
        })
        .fold(0.0, f64::max)
}

fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    // Mostly moderate values, some large, as activations see.
    (0..n)
        .map(|i| rng.f32() * if i % 7 == 0 { 12.0 } else { 3.0 })
        .collect()
}

#[test]
fn activations_within_a_few_ulp() {
    let mut rng = Rng(11);
    for n in [1, 15, 17, 1000, 70_001] {
        let x = inputs(&mut rng, n);
        for (act, f) in [
            (Act::GeluTanh, gelu_tanh as fn(f64) -> f64),
            (Act::Silu, silu),
        ] {
            let want: Vec<f64> = x.iter().map(|&v| f(v as f64)).collect();
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; n];
                activation(act, &x, &mut out, threads);
                // Near a zero of the function the relative error of f32 inputs dominates.
                let err: f64 = out
                    .iter()
                    .zip(&want)
                    .zip(&x)
                    .map(|((&g, &w), &xv)| {
                        (g as f64 - w).abs()
                            / ((w.abs().max(xv.abs() as f64 * 1e-3)) * f32::EPSILON as f64)
                    })
                    .fold(0.0, f64::max);
                assert!(err < 8.0, "{act:?} n {n}: {err} ulp");
            }
        }
    }
}

#[test]
fn swiglu_reads_column_ranges() {
    let mut rng = Rng(12);
    for (rows, width) in [(1, 8960), (3, 33), (40, 1000)] {
        let x = inputs(&mut rng, rows * 2 * width);
        let want: Vec<f64> = (0..rows * width)
            .map(|i| {
                let (r, j) = (i / width, i % width);
                silu(x[r * 2 * width + j] as f64) * x[r * 2 * width + width + j] as f64
            })
            .collect();
        for threads in [1, 2] {
            let mut out = vec![f32::NAN; rows * width];
            swiglu(
                &x,
                2 * width,
                &x[width..],
                2 * width,
                rows,
                width,
                &mut out,
                threads,
            );
            let err = ulps(&out, &want);
            assert!(err < 16.0, "swiglu {rows}x{width}: {err} ulp");
        }
    }
}

#[test]
fn norms_match_f64() {
    let mut rng = Rng(13);
    for (rows, d) in [(1, 1536), (5, 1152), (300, 40), (2, 7)] {
        let x: Vec<f32> = (0..rows * d).map(|_| rng.f32() * 4.0 + 0.5).collect();
        let w = rng.vec(d);
        let b = rng.vec(d);
        let eps = 1e-6f32;
        let mut ln_want = Vec::new();
        let mut rms_want = Vec::new();
        for r in x.chunks(d) {
            let m = r.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = r.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / d as f64;
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
            for j in 0..d {
                ln_want.push(
                    (r[j] as f64 - m) / (var + eps as f64).sqrt() * w[j] as f64 + b[j] as f64,
                );
                rms_want.push(r[j] as f64 / (ms + eps as f64).sqrt() * w[j] as f64);
            }
        }
        for threads in [1, 2] {
            let mut out = vec![f32::NAN; rows * d];
            layer_norm(&x, &w, &b, eps, &mut out, threads);
            let e = out
                .iter()
                .zip(&ln_want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(e < 2e-5, "layer_norm {rows}x{d}: {e}");
            rms_norm(&x, &w, eps, &mut out, threads);
            let e = ulps(&out, &rms_want);
            assert!(e < 8.0, "rms_norm {rows}x{d}: {e} ulp");
        }
    }
}
