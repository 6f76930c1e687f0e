//! The AMX GEMM ([`GemmMode::Amx`]) against an f64 reference, with the `Bf16Dot` error bound
//! of `kernels.rs` (`|err| ≤ 2^-8·S + 1e-6·S·max(1, sqrt(k)/4)`, `S = Σ|w·x|`), on sizes with
//! M (32-row block), N (32-column panel) and K (32-feature chunk) tails. Skips with a `SKIPPED` note
//! where the CPU lacks AMX (the mode then runs as `Bf16Dot`, tested in `kernels.rs`), or fails
//! there when `VL3C_REQUIRE_AMX` is set.

mod common;

use common::{reference, tolerance, Rng};
use vl3c_cpu::{self as cpu, gemm_with, pack, Backend, Epilogue, GemmMode};

/// Whether to skip: the CPU (or OS) lacks AMX-BF16. A skip shows as a pass, so a machine that
/// must run these sets `VL3C_REQUIRE_AMX=1` and a missing AMX fails instead.
fn skip() -> bool {
    if cpu::has_amx() {
        return false;
    }
    assert!(
        std::env::var_os("VL3C_REQUIRE_AMX").is_none(),
        "VL3C_REQUIRE_AMX is set but this CPU (or OS) lacks AMX-BF16"
    );
    eprintln!("SKIPPED: CPU (or OS) lacks AMX-BF16 (set VL3C_REQUIRE_AMX=1 to fail instead)");
    true
}

/// Checks the AMX GEMM at `m × k × n` on 1–3 threads against the f64 reference and against
/// `Bf16Dot` (same rounding of A: only the summation order differs); returns the worst
/// |err| / S.
fn check(rng: &mut Rng, m: usize, k: usize, n: usize) -> f64 {
    let mut worst = 0f64;
    let w = rng.weight(n, k);
    let p = pack(&w, n, k);
    let a = rng.vec(m * k);
    let refs = reference(&a, &w, m, n, k);
    let mut bf = vec![f32::NAN; m * n];
    gemm_with(
        &a,
        &p,
        &mut bf,
        1,
        &Epilogue::default(),
        GemmMode::Bf16Dot,
        Backend::Auto,
    );
    for threads in [1, 2, 3] {
        let mut c = vec![f32::NAN; m * n];
        gemm_with(
            &a,
            &p,
            &mut c,
            threads,
            &Epilogue::default(),
            GemmMode::Amx,
            Backend::Auto,
        );
        for (j, (g, (r, abs))) in c.iter().zip(&refs).enumerate() {
            let err = (*g as f64 - r).abs();
            let tol = tolerance(false, k, *abs);
            assert!(
                err <= tol,
                "amx {m}x{k}x{n} t{threads}: output {j}: got {g}, want {r}, |err| {err:e} > {tol:e}"
            );
            worst = worst.max(err / abs.max(1e-30));
            let d = (*g as f64 - bf[j] as f64).abs();
            assert!(
                d <= 1e-6 * abs * (k as f64).sqrt().max(4.0) / 2.0 + 1e-30,
                "amx vs bf16dot {m}x{k}x{n} t{threads}: {j}: {g} vs {}",
                bf[j]
            );
        }
    }
    worst
}

#[test]
fn amx_gemm_matches_f64_reference() {
    if skip() {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut worst = 0f64;
    for &m in &[1usize, 5, 31, 33, 300] {
        for &n in &[1usize, 17, 33, 100] {
            for &k in &[1usize, 31, 33, 1000] {
                worst = worst.max(check(&mut rng, m, k, n));
            }
        }
    }
    eprintln!("amx gemm worst |err|/S: {worst:e}");
}

/// The blockings that only large operands reach: `k` cut into blocks (a panel group's `B`
/// over 1 MiB; with a partial last chunk and row blocks of 32, 8 and 18 rows) and the larger
/// panel group (all of `A` over 1 MiB).
#[test]
fn amx_gemm_k_blocked_and_large_a_match_f64_reference() {
    if skip() {
        return;
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (m, k, n) in [(40, 4200, 100), (50, 4200, 70), (600, 1000, 300)] {
        check(&mut rng, m, k, n);
    }
}

#[test]
fn amx_gemm_epilogue_bias_residual_accumulate() {
    if skip() {
        return;
    }
    let mut rng = Rng(7);
    let (m, k, n) = (45, 401, 70);
    let w = rng.weight(n, k);
    let p = pack(&w, n, k);
    let a = rng.vec(m * k);
    let bias = rng.vec(n);
    let res = rng.vec(m * n);
    let prior = rng.vec(m * n);
    let refs = reference(&a, &w, m, n, k);
    for (use_bias, use_res, accumulate) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        for threads in [1, 2] {
            let mut c = prior.clone();
            let epi = Epilogue {
                bias: use_bias.then_some(&bias[..]),
                residual: use_res.then_some(&res[..]),
                accumulate,
            };
            gemm_with(&a, &p, &mut c, threads, &epi, GemmMode::Amx, Backend::Auto);
            for i in 0..m {
                for j in 0..n {
                    let (r, abs) = refs[i * n + j];
                    let mut want = r;
                    if use_bias {
                        want += bias[j] as f64;
                    }
                    if use_res {
                        want += res[i * n + j] as f64;
                    }
                    if accumulate {
                        want += prior[i * n + j] as f64;
                    }
                    let err = (c[i * n + j] as f64 - want).abs();
                    let tol = tolerance(false, k, abs) + 1e-6 * want.abs();
                    assert!(
                        err <= tol,
                        "({use_bias},{use_res},{accumulate}) t{threads} ({i},{j}): {} vs {want}",
                        c[i * n + j]
                    );
                }
            }
        }
    }
}

#[test]
fn auto_selects_amx_when_available() {
    assert_eq!(
        GemmMode::Auto.resolve() == GemmMode::Amx,
        cpu::has_amx(),
        "Auto should pick AMX exactly when it is available"
    );
}
