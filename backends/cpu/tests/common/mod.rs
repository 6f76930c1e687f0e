//! Shared by the kernel accuracy tests: a seeded generator, the f64 reference and the error
//! bound documented at the top of kernels.rs.
#![allow(dead_code)]

use half::bf16;

pub struct Rng(pub u64);
impl Rng {
    pub fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    pub fn weight(&mut self, n: usize, k: usize) -> Vec<bf16> {
        (0..n * k).map(|_| bf16::from_f32(self.f32())).collect()
    }
}

/// (reference, S) for every output of `a[m,k] · w[n,k]ᵀ`.
pub fn reference(a: &[f32], w: &[bf16], m: usize, n: usize, k: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0f64, 0f64);
            for kk in 0..k {
                let p = a[i * k + kk] as f64 * w[j * k + kk].to_f64();
                s += p;
                abs += p.abs();
            }
            out.push((s, abs));
        }
    }
    out
}

pub fn tolerance(exact: bool, k: usize, abs: f64) -> f64 {
    let accumulation = 1e-6 * abs * (k as f64).sqrt().max(4.0) / 4.0 + 1e-30;
    if exact {
        accumulation
    } else {
        abs / 256.0 + accumulation
    }
}
