//! Plain-Rust references with the arithmetic of `ir/reference/src/fused.rs`, row by row, plus
//! the data generator and the error measure the tests share.

#[path = "../../../../ir/reference/src/erf.rs"]
mod erf_impl;
pub use erf_impl::erf;

/// xorshift64*: deterministic inputs without a dev-dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

/// Largest `|got − want| / max(|want|, 1)` (relative, absolute below 1); NaN must match NaN and
/// infinities must match exactly. Panics naming the first element that breaks `tol`.
pub fn max_err(what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || g.is_nan() || w.is_infinite() || g.is_infinite() {
            assert!(
                (w.is_nan() && g.is_nan()) || g == w,
                "{what}[{i}]: got {g}, want {w}"
            );
            continue;
        }
        let e = (g as f64 - w as f64).abs() / (w.abs() as f64).max(1.0);
        assert!(
            e <= tol,
            "{what}[{i}]: got {g}, want {w}, error {e:e} > {tol:e}"
        );
        worst = worst.max(e);
    }
    worst
}

fn sum_f64(v: impl Iterator<Item = f32>) -> f64 {
    v.fold(0f64, |a, x| a + x as f64)
}

fn mean(v: impl Iterator<Item = f32>, n: usize) -> f32 {
    (sum_f64(v) / n as f64) as f32
}

fn rsqrt(x: f32) -> f32 {
    (1.0 / (x as f64).sqrt()) as f32
}

pub fn softmax_row(r: &mut [f32]) {
    let max = r.iter().fold(f32::NEG_INFINITY, |a, &b| {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else {
            a.max(b)
        }
    });
    for x in r.iter_mut() {
        *x = ((*x - max) as f64).exp() as f32;
    }
    let sum = sum_f64(r.iter().copied()) as f32;
    for x in r.iter_mut() {
        *x /= sum;
    }
}

pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut v = x.to_vec();
    for r in v.chunks_mut(d) {
        let m = mean(r.iter().copied(), d);
        for x in r.iter_mut() {
            *x -= m;
        }
        let var = mean(r.iter().map(|&c| c * c), d);
        let inv = rsqrt(var + eps);
        for (j, x) in r.iter_mut().enumerate() {
            *x = *x * inv * w[j] + b[j];
        }
    }
    v
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut v = x.to_vec();
    for r in v.chunks_mut(d) {
        let inv = rsqrt(mean(r.iter().map(|&x| x * x), d) + eps);
        for (j, x) in r.iter_mut().enumerate() {
            *x = *x * inv * w[j];
        }
    }
    v
}

pub fn silu(x: f32) -> f32 {
    x / (((-x) as f64).exp() as f32 + 1.0)
}

pub fn gelu_tanh(x: f32) -> f32 {
    let cubic = x * x * x * 0.044715f64 as f32;
    let scaled = (x + cubic) * (2.0 / std::f64::consts::PI).sqrt() as f32;
    let t = (scaled as f64).tanh() as f32;
    x * 0.5 * (t + 1.0)
}

pub fn gelu_erf(x: f32) -> f32 {
    let e = erf((x * std::f64::consts::FRAC_1_SQRT_2 as f32) as f64) as f32;
    x * 0.5 * (e + 1.0)
}

/// RoPE of rows of `d`, row r using table row `r % table_rows`.
pub fn rope(x: &[f32], cos: &[f32], sin: &[f32], d: usize, table_rows: usize) -> Vec<f32> {
    let h = d / 2;
    let mut out = x.to_vec();
    for (r, row) in out.chunks_mut(d).enumerate() {
        let t = r % table_rows;
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        let rot: Vec<f32> = (0..d)
            .map(|j| if j < h { -row[j + h] } else { row[j - h] })
            .collect();
        for j in 0..d {
            row[j] = row[j] * c[j] + rot[j] * s[j];
        }
    }
    out
}

/// Mask kinds of the attention row kernel.
pub enum Mask<'a> {
    Full,
    Causal { offset: usize },
    Segments { q: &'a [i64], k: &'a [i64] },
}

/// `attention`'s per-row scale, mask, softmax on `rows × cols` scores.
pub fn attention_rows(s: &[f32], cols: usize, scale: f32, mask: &Mask) -> Vec<f32> {
    let mut v = s.to_vec();
    for (i, row) in v.chunks_mut(cols).enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            let allowed = match mask {
                Mask::Full => true,
                Mask::Causal { offset } => j <= offset + i,
                Mask::Segments { q, k } => q[i] == k[j],
            };
            *x = if allowed {
                *x * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        softmax_row(row);
    }
    v
}
