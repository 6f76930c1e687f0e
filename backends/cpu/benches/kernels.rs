//! Generated kernels against plain Rust loops with the reference executor's arithmetic, one
//! thread, GB/s of activations moved (read x + write out; RoPE also reads its two tables).
//! `cargo bench -p vl3c-cpu --bench kernels`

use std::hint::black_box;
use std::time::Instant;
use vl3c_cpu::codegen::{compile_kernels, KernelSpec, LoadedKernels};

fn time(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.05 || n < 3 {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    bytes as f64 / best / 1e9
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                * 6.0
                - 3.0
        })
        .collect()
}

fn sum_f64(v: impl Iterator<Item = f32>) -> f64 {
    v.fold(0f64, |a, x| a + x as f64)
}

fn rust_layer_norm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for (o, r) in out.chunks_mut(d).zip(x.chunks(d)) {
        let m = (sum_f64(r.iter().copied()) / d as f64) as f32;
        let var = (sum_f64(r.iter().map(|&c| (c - m) * (c - m))) / d as f64) as f32;
        let inv = (1.0 / ((var + eps) as f64).sqrt()) as f32;
        for j in 0..d {
            o[j] = (r[j] - m) * inv * w[j] + b[j];
        }
    }
}

fn rust_rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, r) in out.chunks_mut(d).zip(x.chunks(d)) {
        let ms = (sum_f64(r.iter().map(|&c| c * c)) / d as f64) as f32;
        let inv = (1.0 / ((ms + eps) as f64).sqrt()) as f32;
        for j in 0..d {
            o[j] = r[j] * inv * w[j];
        }
    }
}

fn rust_softmax(out: &mut [f32], x: &[f32], d: usize) {
    for (o, r) in out.chunks_mut(d).zip(x.chunks(d)) {
        let max = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for j in 0..d {
            o[j] = ((r[j] - max) as f64).exp() as f32;
        }
        let s = sum_f64(o.iter().copied()) as f32;
        o.iter_mut().for_each(|v| *v /= s);
    }
}

fn rust_rope(out: &mut [f32], x: &[f32], c: &[f32], s: &[f32], d: usize) {
    let h = d / 2;
    for ((o, r), (c, s)) in out
        .chunks_mut(d)
        .zip(x.chunks(d))
        .zip(c.chunks(d).zip(s.chunks(d)))
    {
        for j in 0..h {
            o[j] = r[j] * c[j] - r[j + h] * s[j];
            o[j + h] = r[j + h] * c[j + h] + r[j] * s[j + h];
        }
    }
}

fn rust_gelu_tanh(out: &mut [f32], x: &[f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let s = (x + x * x * x * 0.044715) * (2.0 / std::f64::consts::PI).sqrt() as f32;
        *o = x * 0.5 * ((s as f64).tanh() as f32 + 1.0);
    }
}

fn main() {
    for (rows, width) in [(1024usize, 1152usize), (300, 1536)] {
        let specs = [
            KernelSpec::LayerNorm { width, eps: 1e-6 },
            KernelSpec::RmsNorm { width, eps: 1e-6 },
            KernelSpec::Softmax { width },
            KernelSpec::Rope { d: 128 },
            KernelSpec::Gelu { tanh: true },
            KernelSpec::Gelu { tanh: false },
        ];
        let obj = compile_kernels(&specs).expect("compile");
        let k = LoadedKernels::load(&obj.bytes).expect("load");
        let n = rows * width;
        let (x, w, b) = (data(n, 1), data(width, 2), data(width, 3));
        let (c, s) = (data(n, 4), data(n, 5));
        let mut out = vec![0f32; n];
        let io = 2 * n * 4;
        let (ln, rms, sm, rope, gt, ge) = (
            k.layer_norm(0).unwrap(),
            k.rms_norm(1).unwrap(),
            k.softmax(2).unwrap(),
            k.rope(3).unwrap(),
            k.unary(4).unwrap(),
            k.unary(5).unwrap(),
        );
        let o = out.as_mut_ptr();
        println!("{rows}x{width} (GB/s, one thread)        generated     rust loop");
        let row = |name: &str, bytes: usize, gen: &mut dyn FnMut(), rust: &mut dyn FnMut()| {
            let (g, r) = (time(bytes, gen), time(bytes, rust));
            println!("  {name:<12} {g:>24.2} {r:>13.2}   ({:.1}x)", g / r);
        };
        // SAFETY (all calls): buffers hold rows × width floats, tables width / n floats.
        let rows_i = rows as i64;
        let mut out2 = vec![0f32; n];
        row(
            "layer_norm",
            io,
            &mut || unsafe { ln(o, x.as_ptr(), w.as_ptr(), b.as_ptr(), rows_i) },
            &mut || rust_layer_norm(black_box(&mut out2), &x, &w, &b, 1e-6),
        );
        row(
            "rms_norm",
            io,
            &mut || unsafe { rms(o, x.as_ptr(), w.as_ptr(), rows_i) },
            &mut || rust_rms_norm(black_box(&mut out2), &x, &w, 1e-6),
        );
        row(
            "softmax",
            io,
            &mut || unsafe { sm(o, x.as_ptr(), rows_i) },
            &mut || rust_softmax(black_box(&mut out2), &x, width),
        );
        let rrows = (n / 128) as i64;
        row(
            "rope d=128",
            4 * n * 4,
            &mut || unsafe { rope(o, x.as_ptr(), c.as_ptr(), s.as_ptr(), rrows, rrows) },
            &mut || rust_rope(black_box(&mut out2), &x, &c, &s, 128),
        );
        row(
            "gelu_tanh",
            io,
            &mut || unsafe { gt(o, x.as_ptr(), n as i64) },
            &mut || rust_gelu_tanh(black_box(&mut out2), &x),
        );
        // No f64 erf in std to compare against: the generated kernel alone.
        println!(
            "  {:<12} {:>24.2} {:>13}",
            "gelu_erf",
            time(io, || unsafe { ge(o, x.as_ptr(), n as i64) }),
            "-"
        );
        black_box(&out);
    }
}
