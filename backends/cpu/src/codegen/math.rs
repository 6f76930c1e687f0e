//! Transcendental functions in CLIF, so kernels call nothing outside the object. Every function
//! works on `F32` or `F32X4` alike (constants are splatted for vectors), so the vector body and
//! the scalar tail of a kernel compute the same thing lane for lane.
//!
//! No `fma`: without the host's FMA feature Cranelift would turn it into a libcall (a relocation
//! to `fmaf`), and the generated CLIF would differ between hosts. Polynomials use `fmul`+`fadd`.
//! No `nearest`/`floor` either (libcalls without SSE4.1): rounding uses the 1.5·2²³ trick.
//!
//! Accuracy (measured by `backends/cpu/tests/codegen.rs` against f64 `exp`/`tanh` and the reference
//! executor's f64 `erf` over dense grids):
//! * [`exp`]: ≤ 2 ulp relative for results in the normal range; inputs below −104 give +0,
//!   above 89 give +inf, NaN stays NaN; results below 2⁻¹²⁶ are correctly scaled (subnormal).
//! * [`tanh`]: `1 − 2/(e^{2y} + 1)`, ≤ 2.5e-7 absolute (relative accuracy is lost near 0,
//!   which is harmless in GELU where `tanh` is added to 1).
//! * [`erf`]: Eigen/XLA's rational approximation on [−4, 4], ≤ ~5e-7 absolute (see tests).

use super::builder::{bits, f32c, i32c, int_of};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Horner evaluation `((c0·x + c1)·x + c2)…`, coefficients from the highest degree down.
fn horner(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let ty = b.func.dfg.value_type(x);
    let mut acc = f32c(b, ty, coeffs[0]);
    for &c in &coeffs[1..] {
        let m = b.ins().fmul(acc, x);
        let k = f32c(b, ty, c);
        acc = b.ins().fadd(m, k);
    }
    acc
}

/// `clamp(x, lo, hi)` with NaN propagating (Cranelift's `fmin`/`fmax` return NaN for NaN).
fn clamp(b: &mut FunctionBuilder, x: Value, lo: f32, hi: f32) -> Value {
    let ty = b.func.dfg.value_type(x);
    let l = f32c(b, ty, lo);
    let h = f32c(b, ty, hi);
    let x = b.ins().fmax(x, l);
    b.ins().fmin(x, h)
}

/// 2^k for integer `k` (I32 or I32X4) in [−126, 127], built from exponent bits.
fn pow2i(b: &mut FunctionBuilder, k: Value, fty: cranelift_codegen::ir::Type) -> Value {
    let ity = int_of(fty);
    let bias = i32c(b, ity, 127);
    let e = b.ins().iadd(k, bias);
    let sh = b.ins().iconst(cranelift_codegen::ir::types::I32, 23);
    let e = b.ins().ishl(e, sh);
    bits(b, fty, e)
}

/// `e^x`. Cody–Waite range reduction x = k·ln2 + r, |r| ≤ ln2/2, with ln2 split in a 9-bit head
/// (k·head is exact) and a tail; Cephes `expf`'s degree-7 polynomial for e^r; then the scaling by
/// 2^k done as 2^⌊k/2⌋·2^(k−⌊k/2⌋) so both factors stay normal and overflow/underflow round
/// correctly instead of wrapping the exponent field.
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer (ties to even) and leaves it in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let ty = b.func.dfg.value_type(x);
    let ity = int_of(ty);
    let x = clamp(b, x, -104.0, 89.0);
    let l2e = f32c(b, ty, LOG2E);
    let t = b.ins().fmul(x, l2e);
    let magic = f32c(b, ty, MAGIC);
    let t = b.ins().fadd(t, magic);
    let kf = b.ins().fsub(t, magic);
    let tb = bits(b, ity, t);
    let mb = i32c(b, ity, MAGIC.to_bits() as i32);
    let k = b.ins().isub(tb, mb);
    let hi = f32c(b, ty, LN2_HI);
    let lo = f32c(b, ty, LN2_LO);
    let khi = b.ins().fmul(kf, hi);
    let r = b.ins().fsub(x, khi);
    let klo = b.ins().fmul(kf, lo);
    let r = b.ins().fsub(r, klo);
    // Cephes expf: e^r ≈ 1 + r + r²·P(r).
    let p = horner(
        b,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1_f64 as f32,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let p = b.ins().fmul(p, r2);
    let p = b.ins().fadd(p, r);
    let one = f32c(b, ty, 1.0);
    let p = b.ins().fadd(p, one);
    let sh = b.ins().iconst(cranelift_codegen::ir::types::I32, 1);
    let k1 = b.ins().sshr(k, sh);
    let k2 = b.ins().isub(k, k1);
    let s1 = pow2i(b, k1, ty);
    let s2 = pow2i(b, k2, ty);
    let p = b.ins().fmul(p, s1);
    b.ins().fmul(p, s2)
}

/// `tanh(y) = 1 − 2/(e^{2y} + 1)`: saturates to ±1 through exp's ±inf/0, NaN propagates.
pub fn tanh(b: &mut FunctionBuilder, y: Value) -> Value {
    let ty = b.func.dfg.value_type(y);
    let y2 = b.ins().fadd(y, y);
    let e = exp(b, y2);
    let one = f32c(b, ty, 1.0);
    let two = f32c(b, ty, 2.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    b.ins().fsub(one, q)
}

/// `erf(x)`: x·P(x²)/Q(x²) on x clamped to [−4, 4] (erf(±4) rounds to ±1 in f32), the
/// approximation Eigen and XLA use for f32, clamped to [−1, 1].
pub fn erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let x = clamp(b, x, -4.0, 4.0);
    let x2 = b.ins().fmul(x, x);
    let p = horner(
        b,
        x2,
        &[
            -2.726_142_3e-10,
            2.770_681_4e-8,
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ],
    );
    let p = b.ins().fmul(x, p);
    let q = horner(
        b,
        x2,
        &[
            -1.456_607_2e-5,
            -2.133_740_6e-4,
            -1.682_827e-3,
            -7.373_329e-3,
            -1.426_474e-2,
        ],
    );
    let r = b.ins().fdiv(p, q);
    let r = clamp(b, r, -1.0, 1.0);
    // Past |x| = 3.92 the true erf rounds to ±1 in f32; the rational function stops an ulp
    // short, which would turn gelu(−inf) into −inf·0.5·6e−8 = −inf instead of NaN.
    let ty = b.func.dfg.value_type(x);
    let ax = b.ins().fabs(x);
    let lim = f32c(b, ty, 3.92);
    let big = b.ins().fcmp(FloatCC::GreaterThanOrEqual, ax, lim);
    // ±1 with x's sign (x86 has no vector `fcopysign`): |x|·1024 ≥ 4000, clamped.
    let k = f32c(b, ty, 1024.0);
    let xk = b.ins().fmul(x, k);
    let sign1 = clamp(b, xk, -1.0, 1.0);
    select(b, big, sign1, r)
}

/// `cond ? a : b` lane-wise: `bitselect` on the all-ones/zero mask for vectors.
fn select(b: &mut FunctionBuilder, cond: Value, a: Value, c: Value) -> Value {
    let ty = b.func.dfg.value_type(a);
    if ty.is_vector() {
        let m = bits(b, ty, cond);
        b.ins().bitselect(m, a, c)
    } else {
        b.ins().select(cond, a, c)
    }
}

/// `x / (e^{−x} + 1)`: the reference's silu, operation for operation.
pub fn silu(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let nx = b.ins().fneg(x);
    let e = exp(b, nx);
    let one = f32c(b, ty, 1.0);
    let d = b.ins().fadd(e, one);
    b.ins().fdiv(x, d)
}

/// `x·0.5·(t + 1)`, the common GELU epilogue, in the reference's order.
fn gelu_tail(b: &mut FunctionBuilder, x: Value, t: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let half = f32c(b, ty, 0.5);
    let one = f32c(b, ty, 1.0);
    let xh = b.ins().fmul(x, half);
    let t1 = b.ins().fadd(t, one);
    b.ins().fmul(xh, t1)
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` with the reference's operation order.
pub fn gelu_tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let x2 = b.ins().fmul(x, x);
    let x3 = b.ins().fmul(x2, x);
    let c = f32c(b, ty, 0.044715f64 as f32);
    let cubic = b.ins().fmul(x3, c);
    let s = b.ins().fadd(x, cubic);
    let k = f32c(b, ty, (2.0 / std::f64::consts::PI).sqrt() as f32);
    let s = b.ins().fmul(s, k);
    let t = tanh(b, s);
    gelu_tail(b, x, t)
}

/// `0.5·x·(1 + erf(x/√2))` with the reference's operation order.
pub fn gelu_erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let k = f32c(b, ty, std::f64::consts::FRAC_1_SQRT_2 as f32);
    let s = b.ins().fmul(x, k);
    let e = erf(b, s);
    gelu_tail(b, x, e)
}
