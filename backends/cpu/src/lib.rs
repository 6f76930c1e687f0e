//! The CPU target: its kernels, what runs each node (`select`, compile time), the engine
//! section it writes (`plan`), and the [`vl3c_engine::Target`] the driver calls (`target`).
//!
//! Kernels: CPU matmul kernels for bf16 weights with f32 activations and f32 accumulation,
//! attention, and Cranelift code generation of the fused row ops (`codegen`).
//!
//! Weights stay bf16 in memory, re-laid-out once by [`pack`] into [`PackedBf16`] (panels of 32
//! output rows, bf16 pairs along k: see [`pack`](mod@pack) for the exact layout). Two products:
//!
//! * [`gemv`] — decode, `y = W·x`; memory-bound, streams the weight once, exact f32 arithmetic
//!   (bf16 widened to f32, FMA) by default.
//! * [`gemm`] / [`gemm_with`] — prefill and the vision encoder, `C = A·Wᵀ`; compute-bound,
//!   register-blocked 12×32 micro-kernel with an optional bias / residual [`Epilogue`], in one
//!   of two arithmetics ([`GemmMode`]): `A` rounded to bf16 and `vdpbf16ps` (AVX512_BF16), or
//!   weights widened to f32 in registers and f32 FMA (exact); f32 accumulation either way.
//!   Where the CPU has AMX-BF16, [`GemmMode::Amx`] (chosen by `Auto`) runs the `vdpbf16ps`
//!   arithmetic on AMX tiles straight from the same packed panels ([`amx`]).
//!
//! Every entry point takes an explicit thread count. The AVX-512 paths are chosen at run time
//! (`avx512f`, `avx512bw`, `avx512vl`, `avx512bf16`); without them the same arithmetic runs in
//! portable scalar code. [`Backend`] forces one or the other (tests compare the two).

pub mod amx;
pub mod attention;
pub mod codegen;
pub mod elementwise;
pub mod gemm;
pub mod gemv;
pub mod pack;
pub mod peak;
pub mod threads;
pub mod vmath;

pub mod plan;
pub mod select;
pub mod target;

pub use target::{CpuReport, CpuTarget};

use std::mem::MaybeUninit;

pub use gemm::{Epilogue, GemmMode, KC, KC_EXACT, MR};
pub use gemv::GemvMode;
pub use pack::{checked_packed_len, pack, packed_len, LayoutError, PackedBf16, NR};

/// Which implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AVX-512 (+BF16) when the CPU has it, scalar otherwise.
    Auto,
    /// Portable scalar loops (same arithmetic, any CPU).
    Scalar,
    /// AVX-512 + AVX512_BF16; panics if the CPU lacks it.
    Avx512,
}

/// Whether this CPU has AMX-BF16 and the OS granted the tile state ([`GemmMode::Amx`]).
pub fn has_amx() -> bool {
    amx::available()
}

/// Whether this CPU has everything the SIMD kernels use.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn use_simd(backend: Backend) -> bool {
    match backend {
        Backend::Auto => has_avx512_bf16(),
        Backend::Scalar => false,
        Backend::Avx512 => {
            assert!(
                has_avx512_bf16(),
                "Backend::Avx512 requested but the CPU lacks AVX512_BF16"
            );
            true
        }
    }
}

/// `y[n] = W · x` with exact f32 arithmetic on the bf16 weights; `threads` ≥ 1.
pub fn gemv(w: &PackedBf16, x: &[f32], y: &mut [f32], threads: usize) {
    gemv::gemv_impl(w, x, y, threads, GemvMode::Exact, has_avx512_bf16());
}

/// [`gemv`] with an explicit arithmetic and implementation.
pub fn gemv_with(
    w: &PackedBf16,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
    mode: GemvMode,
    backend: Backend,
) {
    gemv::gemv_impl(w, x, y, threads, mode, use_simd(backend));
}

/// `C[m, n] = A[m, k] · Wᵀ` (`A`, `C` row-major; `m = a.len() / k`), f32 accumulation, in the
/// faster arithmetic for this CPU ([`GemmMode::Auto`]); `threads` ≥ 1.
pub fn gemm(a: &[f32], w: &PackedBf16, c: &mut [f32], threads: usize) {
    gemm::gemm_impl(
        a,
        w,
        as_uninit(c),
        threads,
        &Epilogue::default(),
        GemmMode::Auto,
        has_avx512_bf16(),
    );
}

/// [`gemm`] with an [`Epilogue`], an explicit arithmetic and an explicit implementation.
pub fn gemm_with(
    a: &[f32],
    w: &PackedBf16,
    c: &mut [f32],
    threads: usize,
    epilogue: &Epilogue,
    mode: GemmMode,
    backend: Backend,
) {
    gemm::gemm_impl(
        a,
        w,
        as_uninit(c),
        threads,
        epilogue,
        mode,
        use_simd(backend),
    );
}

/// [`gemm_with`] into memory that need not be initialized (`Vec::spare_capacity_mut`): every
/// element is written. Zeroing a 20–180 MB product the GEMM overwrites anyway cost a tenth of
/// a prefill. Panics if the epilogue accumulates (that reads `c`).
pub fn gemm_uninit(
    a: &[f32],
    w: &PackedBf16,
    c: &mut [MaybeUninit<f32>],
    threads: usize,
    epilogue: &Epilogue,
    mode: GemmMode,
    backend: Backend,
) {
    assert!(
        !epilogue.accumulate,
        "gemm_uninit: an accumulating epilogue reads c"
    );
    gemm::gemm_impl(a, w, c, threads, epilogue, mode, use_simd(backend));
}

fn as_uninit(c: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the kernels store only initialized f32s.
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut MaybeUninit<f32>, c.len()) }
}
