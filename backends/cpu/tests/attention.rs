//! The attention kernel (AVX-512 and scalar paths, f32 and bf16 products) against an f64
//! reference of the reference executor's definition: rotate, scores·scale, mask, softmax, ·v.
//! Shapes cover the vision encoder (segments, q and k rotated), prefill (causal, GQA) and a
//! decode step over a cache with spare capacity, through strided views.
//!
//! The f32 path is held to 2e-5. The bf16 path rounds q·k's operands (each by at most 2⁻⁹
//! relative), the probabilities and v (2⁻⁹ each): to first order a score moves by at most
//! `2⁻⁸·E` with `E = scale·Σ|q_c·k_c|`, a probability by `2⁻⁷·E` relative (numerator and sum),
//! and an output by `max|v|·(2⁻⁷·E + 2⁻⁸)`; the bound is that with the largest `E` and `|v|`
//! of the problem, and 10% to spare.

mod common;

use common::Rng;
use vl3c_cpu::attention::{
    attention, attention_with, Keys, Mask, OutView, Precision, Rope, View, BF16_MIN_QUERIES,
};
use vl3c_cpu::{has_avx512_bf16, Backend};

struct Case {
    hq: usize,
    hk: usize,
    n: usize,
    t: usize,
    d: usize,
    rope_q: bool,
    rope_k: bool,
    mask: MaskKind,
}

#[derive(Clone)]
enum MaskKind {
    Full,
    Causal,
    Segments(Vec<i64>),
}

fn rotate(x: &[f64], cos: &[f32], sin: &[f32]) -> Vec<f64> {
    let h = x.len() / 2;
    (0..x.len())
        .map(|j| x[j] * cos[j] as f64 + if j < h { -x[j + h] } else { x[j - h] } * sin[j] as f64)
        .collect()
}

/// f64 attention of contiguous `[h, len, d]` operands, and the largest `scale·Σ|q_c·k_c|` over
/// the scores a query sees (the bf16 bound's `E`).
#[allow(clippy::too_many_arguments)]
fn reference(
    c: &Case,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cos: &[f32],
    sin: &[f32],
    scale: f64,
) -> (Vec<f64>, f64) {
    let (d, n, t) = (c.d, c.n, c.t);
    let mut out = vec![0f64; c.hq * n * d];
    let mut e_max = 0f64;
    for h in 0..c.hq {
        let g = h / (c.hq / c.hk);
        for i in 0..n {
            let mut qi: Vec<f64> = q[(h * n + i) * d..][..d]
                .iter()
                .map(|&x| x as f64)
                .collect();
            if c.rope_q {
                qi = rotate(&qi, &cos[i * d..][..d], &sin[i * d..][..d]);
            }
            let mut s = vec![f64::NEG_INFINITY; t];
            for (j, sj) in s.iter_mut().enumerate() {
                let ok = match &c.mask {
                    MaskKind::Full => true,
                    MaskKind::Causal => j <= t - n + i,
                    MaskKind::Segments(seg) => seg[i] == seg[j],
                };
                if ok {
                    let mut kj: Vec<f64> = k[(g * t + j) * d..][..d]
                        .iter()
                        .map(|&x| x as f64)
                        .collect();
                    if c.rope_k {
                        kj = rotate(&kj, &cos[j * d..][..d], &sin[j * d..][..d]);
                    }
                    *sj = qi.iter().zip(&kj).map(|(a, b)| a * b).sum::<f64>() * scale;
                    e_max = e_max
                        .max(qi.iter().zip(&kj).map(|(a, b)| (a * b).abs()).sum::<f64>() * scale);
                }
            }
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c2 in 0..d {
                out[(h * n + i) * d + c2] = (0..t)
                    .map(|j| e[j] / sum * v[(g * t + j) * d + c2] as f64)
                    .sum();
            }
        }
    }
    (out, e_max)
}

/// Runs a case with q read from a `[n, hq·d + 8]` projection-like buffer, k and v from a cache
/// with spare capacity, and the output written as `[n, hq·d]`; compares both paths.
fn check(c: Case, seed: u64) {
    run_case(c, seed, 1.0, Precision::F32);
}

/// [`check`] with bf16 products, the scores sharpened by `sharp` (a larger scale makes the
/// softmax peaked, where score errors matter most); every implementation (AMX where the CPU
/// has it, `vdpbf16ps`, scalar).
fn check_bf16(c: Case, seed: u64, sharp: f64) {
    run_case(c, seed, sharp, Precision::Bf16);
}

fn run_case(c: Case, seed: u64, sharp: f64, precision: Precision) {
    let mut rng = Rng(seed);
    let (d, n, t) = (c.d, c.n, c.t);
    let q = rng.vec(c.hq * n * d);
    let k = rng.vec(c.hk * t * d);
    let v = rng.vec(c.hk * t * d);
    let rows = n.max(t);
    let angles: Vec<f32> = (0..rows * d).map(|x| (x % 977) as f32 * 0.37).collect();
    let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    let scale = sharp / (d as f64).sqrt();
    let (want, e_max) = reference(&c, &q, &k, &v, &cos, &sin, scale);
    let v_max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let bf16 = precision == Precision::Bf16 && n >= BF16_MIN_QUERIES;
    let bound = if bf16 {
        1.1 * v_max * (e_max / 128.0 + 1.0 / 256.0) + 2e-5
    } else {
        2e-5
    };

    // q as columns 8.. of a [n, hq·d + 8] buffer.
    let width = c.hq * d + 8;
    let mut qbuf = vec![f32::NAN; n * width];
    for h in 0..c.hq {
        for i in 0..n {
            qbuf[i * width + 8 + h * d..][..d].copy_from_slice(&q[(h * n + i) * d..][..d]);
        }
    }
    // k, v in a [hk, cap, d] cache.
    let cap = t + 5;
    let mut kc = vec![f32::NAN; c.hk * cap * d];
    let mut vc = vec![f32::NAN; c.hk * cap * d];
    for g in 0..c.hk {
        kc[g * cap * d..][..t * d].copy_from_slice(&k[g * t * d..][..t * d]);
        vc[g * cap * d..][..t * d].copy_from_slice(&v[g * t * d..][..t * d]);
    }
    // The same keys transposed, as the engine's cache keeps them: [hk, d, cap] (cap ≥ t
    // rounded up to 16, the columns past t garbage).
    let capt = (t + 16).div_ceil(16) * 16;
    let mut kt = vec![f32::NAN; c.hk * d * capt];
    for g in 0..c.hk {
        for j in 0..t {
            for x in 0..d {
                kt[(g * d + x) * capt + j] = k[(g * t + j) * d + x];
            }
        }
    }
    let qv = View {
        data: &qbuf[8..],
        heads: c.hq,
        len: n,
        d,
        head_stride: d,
        row_stride: width,
    };
    let kv = View {
        data: &kc,
        heads: c.hk,
        len: t,
        d,
        head_stride: cap * d,
        row_stride: d,
    };
    let ktv = View {
        data: &kt,
        heads: c.hk,
        len: t,
        d,
        head_stride: d * capt,
        row_stride: capt,
    };
    let vv = View {
        data: &vc,
        heads: c.hk,
        len: t,
        d,
        head_stride: cap * d,
        row_stride: d,
    };
    let rope = (c.rope_q || c.rope_k).then(|| Rope {
        cos: &cos[..n * d],
        sin: &sin[..n * d],
        queries: c.rope_q,
        keys: c.rope_k,
    });
    let mask = match &c.mask {
        MaskKind::Full => Mask::Full,
        MaskKind::Causal => Mask::Causal { past: t - n },
        MaskKind::Segments(s) => Mask::Segments(s),
    };
    let layouts: Vec<(&str, Keys)> = if c.rope_k {
        vec![("rows", Keys::Rows(kv))]
    } else {
        vec![
            ("rows", Keys::Rows(kv)),
            ("transposed", Keys::Transposed(ktv)),
        ]
    };
    let mut backends = vec![("auto", Backend::Auto), ("scalar", Backend::Scalar)];
    if bf16 && has_avx512_bf16() {
        backends.push(("avx512", Backend::Avx512));
    }
    for &(name, backend) in &backends {
        for &(layout, keys) in &layouts {
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; n * c.hq * d];
                let ov = OutView {
                    data: &mut out,
                    head_stride: d,
                    row_stride: c.hq * d,
                };
                attention_with(
                    qv,
                    keys,
                    vv,
                    rope,
                    mask,
                    scale as f32,
                    ov,
                    threads,
                    precision,
                    backend,
                )
                .unwrap();
                let (mut worst, mut sum) = (0f64, 0f64);
                for h in 0..c.hq {
                    for i in 0..n {
                        for c2 in 0..d {
                            let got = out[i * c.hq * d + h * d + c2] as f64;
                            let exp = want[(h * n + i) * d + c2];
                            worst = worst.max((got - exp).abs());
                            sum += (got - exp).abs();
                        }
                    }
                }
                let mean = sum / (n * c.hq * d) as f64;
                eprintln!("{precision:?} {name} {layout} threads {threads} hq {} hk {} n {n} t {t} d {d}: max |Δ| {worst:.2e} mean {mean:.2e} (bound {bound:.2e})", c.hq, c.hk);
                assert!(worst <= bound, "{name} {layout}: max |Δ| {worst} > {bound}");
                // The bf16 path did run: its rounding shows, far above the f32 path's.
                assert!(
                    !bf16 || worst > 1e-4,
                    "{name} {layout}: max |Δ| {worst} looks like f32 products"
                );
            }
        }
    }
}

#[test]
fn vision_segments_rotated_q_and_k() {
    // Two images: 70 and 90 patches.
    let seg: Vec<i64> = (0..160).map(|i| (i >= 70) as i64).collect();
    check(
        Case {
            hq: 4,
            hk: 4,
            n: 160,
            t: 160,
            d: 72,
            rope_q: true,
            rope_k: true,
            mask: MaskKind::Segments(seg),
        },
        1,
    );
}

#[test]
fn segments_not_contiguous() {
    let seg: Vec<i64> = (0..50).map(|i| (i % 3 == 0) as i64).collect();
    check(
        Case {
            hq: 2,
            hk: 2,
            n: 50,
            t: 50,
            d: 16,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Segments(seg),
        },
        2,
    );
}

#[test]
fn prefill_causal_gqa_rotated_q() {
    check(
        Case {
            hq: 6,
            hk: 2,
            n: 150,
            t: 150,
            d: 128,
            rope_q: true,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        3,
    );
}

#[test]
fn decode_step_over_cache() {
    check(
        Case {
            hq: 12,
            hk: 2,
            n: 1,
            t: 301,
            d: 128,
            rope_q: true,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        4,
    );
    check(
        Case {
            hq: 4,
            hk: 1,
            n: 3,
            t: 40,
            d: 64,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        5,
    );
}

#[test]
fn full_mask_odd_sizes() {
    check(
        Case {
            hq: 3,
            hk: 3,
            n: 17,
            t: 17,
            d: 20,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Full,
        },
        6,
    );
}

#[test]
fn bf16_vision_segments_rotated_q_and_k() {
    // Three images of 70, 90 and 37 patches: segment edges off every tile boundary.
    let seg: Vec<i64> = (0..197)
        .map(|i| (i >= 70) as i64 + (i >= 160) as i64)
        .collect();
    check_bf16(
        Case {
            hq: 4,
            hk: 4,
            n: 197,
            t: 197,
            d: 72,
            rope_q: true,
            rope_k: true,
            mask: MaskKind::Segments(seg.clone()),
        },
        11,
        1.0,
    );
    check_bf16(
        Case {
            hq: 2,
            hk: 2,
            n: 197,
            t: 197,
            d: 72,
            rope_q: true,
            rope_k: true,
            mask: MaskKind::Segments(seg),
        },
        12,
        4.0,
    );
}

#[test]
fn bf16_segments_not_contiguous() {
    let seg: Vec<i64> = (0..50).map(|i| (i % 3 == 0) as i64).collect();
    check_bf16(
        Case {
            hq: 2,
            hk: 2,
            n: 50,
            t: 50,
            d: 16,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Segments(seg),
        },
        13,
        1.0,
    );
}

#[test]
fn bf16_prefill_causal_gqa() {
    check_bf16(
        Case {
            hq: 6,
            hk: 2,
            n: 150,
            t: 150,
            d: 128,
            rope_q: true,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        14,
        1.0,
    );
    check_bf16(
        Case {
            hq: 6,
            hk: 2,
            n: 150,
            t: 150,
            d: 128,
            rope_q: true,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        15,
        3.0,
    );
    // A second prefill chunk over a cache: 37 queries after 40 cached keys.
    check_bf16(
        Case {
            hq: 4,
            hk: 1,
            n: 37,
            t: 77,
            d: 64,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        16,
        1.0,
    );
}

#[test]
fn bf16_full_mask_odd_sizes() {
    check_bf16(
        Case {
            hq: 3,
            hk: 3,
            n: 17,
            t: 17,
            d: 20,
            rope_q: false,
            rope_k: false,
            mask: MaskKind::Full,
        },
        17,
        1.0,
    );
    check_bf16(
        Case {
            hq: 3,
            hk: 1,
            n: 33,
            t: 33,
            d: 50,
            rope_q: true,
            rope_k: true,
            mask: MaskKind::Full,
        },
        18,
        2.0,
    );
}

/// A decode step (one query) stays on the f32 path, bound and all.
#[test]
fn bf16_decode_step_runs_in_f32() {
    check_bf16(
        Case {
            hq: 12,
            hk: 2,
            n: 1,
            t: 301,
            d: 128,
            rope_q: true,
            rope_k: false,
            mask: MaskKind::Causal,
        },
        19,
        1.0,
    );
}

#[test]
fn fully_masked_row_is_nan_and_bad_shapes_are_errors() {
    let q = vec![0.5f32; 2 * 4];
    let kv = vec![0.25f32; 2 * 4];
    let nan_scores = vec![f32::NAN; 2 * 4];
    fn view(d: &[f32]) -> View<'_> {
        View::contiguous(d, 1, 2, 4)
    }
    let mut out = vec![0f32; 8];
    attention(
        view(&q),
        Keys::Rows(view(&nan_scores)),
        view(&kv),
        None,
        Mask::Full,
        1.0,
        OutView {
            data: &mut out,
            head_stride: 8,
            row_stride: 4,
        },
        1,
    )
    .unwrap();
    assert!(out.iter().all(|x| x.is_nan()));
    let err = attention(
        view(&q),
        Keys::Rows(View::contiguous(&kv, 1, 2, 2)),
        view(&kv),
        None,
        Mask::Full,
        1.0,
        OutView {
            data: &mut out,
            head_stride: 8,
            row_stride: 4,
        },
        1,
    )
    .unwrap_err();
    assert_eq!(err, "k [1, 2, 2] and v [1, 2, 4] must match q's head_dim 4");
    let err = attention(
        view(&q),
        Keys::Rows(view(&kv)),
        view(&kv),
        None,
        Mask::Full,
        1.0,
        OutView {
            data: &mut out[..4],
            head_stride: 8,
            row_stride: 4,
        },
        1,
    )
    .unwrap_err();
    assert_eq!(err, "output of [1, 2, 4] does not fit 4 elements");
    // A transposed cache must leave room for whole vectors of keys.
    let short = Keys::Transposed(View {
        data: &kv,
        heads: 1,
        len: 2,
        d: 4,
        head_stride: 8,
        row_stride: 2,
    });
    let err = attention(
        view(&q),
        short,
        view(&kv),
        None,
        Mask::Full,
        1.0,
        OutView {
            data: &mut out,
            head_stride: 8,
            row_stride: 4,
        },
        1,
    )
    .unwrap_err();
    assert_eq!(err, "k view [1, 2, 4] runs past its 8 elements");
}
