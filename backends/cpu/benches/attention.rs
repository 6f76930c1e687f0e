//! The attention kernel on VideoLLaMA3-2B shapes: the vision encoder's (16 heads, 1024
//! patches, d 72, q and k rotated, one segment), a 300-token prefill (12 query heads over 2 kv
//! heads, d 128, causal) and a decode step at a 300-token context, with f32 and bf16 products
//! (the bf16 ones on AMX where the CPU has it; a decode step stays f32).
//! `cargo bench -p vl3c-cpu --bench attention` (add a thread count, default 2, and words
//! that the cases' names must contain, e.g. `-- 1 vision Bf16`)

use std::time::Instant;
use vl3c_cpu::attention::{attention_with, Keys, Mask, OutView, Precision, Rope, View};
use vl3c_cpu::Backend;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                * 2.0
                - 1.0
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn bench(
    name: &str,
    hq: usize,
    hk: usize,
    n: usize,
    t: usize,
    d: usize,
    rope_k: bool,
    causal: bool,
    threads: usize,
    precision: Precision,
) {
    let (q, k, v) = (
        data(hq * n * d, 1),
        data(hk * t * d, 2),
        data(hk * t * d, 3),
    );
    let (cos, sin) = (data(n * d, 4), data(n * d, 5));
    let seg = vec![0i64; n];
    let mut out = vec![0f32; hq * n * d];
    let mask = if causal {
        Mask::Causal { past: t - n }
    } else {
        Mask::Segments(&seg)
    };
    let mut run = || {
        let ov = OutView {
            data: &mut out,
            head_stride: n * d,
            row_stride: d,
        };
        let rope = Some(Rope {
            cos: &cos,
            sin: &sin,
            queries: true,
            keys: rope_k,
        });
        let (qv, kv, vv) = (
            View::contiguous(&q, hq, n, d),
            Keys::Rows(View::contiguous(&k, hk, t, d)),
            View::contiguous(&v, hk, t, d),
        );
        attention_with(
            qv,
            kv,
            vv,
            rope,
            mask,
            0.1,
            ov,
            threads,
            precision,
            Backend::Auto,
        )
        .unwrap();
    };
    run();
    let mut times = Vec::new();
    for _ in 0..9 {
        let s = Instant::now();
        run();
        times.push(s.elapsed().as_secs_f64());
    }
    // Best of the runs: on a shared host noise only ever slows a run down.
    times.sort_by(f64::total_cmp);
    let flops = 4.0 * (hq * n * t * d) as f64 * if causal && n > 1 { 0.5 } else { 1.0 };
    let name = format!("{name} {precision:?}");
    println!(
        "{name:<34} {threads} threads {:>9.3} ms {:>7.1} GFLOP/s",
        times[0] * 1e3,
        flops / times[0] / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let threads = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2);
    let words: Vec<&String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .collect();
    let bench = |name: &str, hq, hk, n, t, d, rope_k, causal, threads, precision: Precision| {
        if words
            .iter()
            .all(|w| format!("{name} {precision:?}").contains(w.as_str()))
        {
            bench(name, hq, hk, n, t, d, rope_k, causal, threads, precision);
        }
    };
    for precision in [Precision::F32, Precision::Bf16] {
        bench(
            "vision 16×1024², d 72",
            16,
            16,
            1024,
            1024,
            72,
            true,
            false,
            threads,
            precision,
        );
        bench(
            "prefill 12/2×300², d 128",
            12,
            2,
            300,
            300,
            128,
            false,
            true,
            threads,
            precision,
        );
    }
    bench(
        "decode 12/2×1×301, d 128",
        12,
        2,
        1,
        301,
        128,
        false,
        true,
        threads,
        Precision::F32,
    );
}
