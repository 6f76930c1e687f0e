//! LayerNorm and RMSNorm over rows of a compile-time width. Three (LayerNorm) or two (RMSNorm)
//! passes over the row, each vectorized by 4 with a straight-line tail. The reductions are
//! accumulated in f64 and the final scale computed as the reference executor does
//! (`ir/reference/src/fused.rs`), so results match it to within an ulp or two.
//! Every element is read before it is written at the same index: `out == x` is allowed.

use super::builder::{
    acc_f64, counted_loop, f32c, hsum_f64, load, mean_f32, row_loop, row_ptr, rsqrt_f64, store,
    tail, vec_loop, zero_f64x2, Len, F32X4, LANES,
};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Σ f(x[j]) over the row in f64, with `f` applied in f32 lane-wise (identity, square, …).
fn row_sum(
    b: &mut FunctionBuilder,
    x: Value,
    w: i64,
    f: &dyn Fn(&mut FunctionBuilder, Value) -> Value,
) -> Value {
    let len = Len::Const(w);
    let z = zero_f64x2(b);
    // Two vectors per step into four accumulators, so the f64 add chains overlap. (On the dev
    // host this measured no faster than one vector per step: the norms are bound elsewhere, see
    // the bench; kept because it costs nothing and helps cores with slower f64 adds.)
    let zero = b.ins().iconst(types::I64, 0);
    let end = b.ins().iconst(types::I64, w);
    let (i8, acc) = counted_loop(b, zero, end, 2 * LANES, &[z, z, z, z], |b, i, c| {
        let v = load(b, F32X4, x, i);
        let v = f(b, v);
        let (a0, a1) = acc_f64(b, (c[0], c[1]), v);
        let i4 = b.ins().iadd_imm_s(i, LANES);
        let v = load(b, F32X4, x, i4);
        let v = f(b, v);
        let (a2, a3) = acc_f64(b, (c[2], c[3]), v);
        vec![a0, a1, a2, a3]
    });
    let lo = b.ins().fadd(acc[0], acc[2]);
    let hi = b.ins().fadd(acc[1], acc[3]);
    // At most one more full vector (w % 8 >= 4), then the straight-line tail.
    let (i, acc) = if w % (2 * LANES) >= LANES {
        let v = load(b, F32X4, x, i8);
        let v = f(b, v);
        let (lo, hi) = acc_f64(b, (lo, hi), v);
        let i = b.ins().iadd_imm_s(i8, LANES);
        (i, vec![lo, hi])
    } else {
        (i8, vec![lo, hi])
    };
    let s = hsum_f64(b, acc[0], acc[1]);
    tail(b, len, i, &[s], |b, j, c| {
        let v = load(b, types::F32, x, j);
        let v = f(b, v);
        let d = b.ins().fpromote(types::F64, v);
        vec![b.ins().fadd(c[0], d)]
    })[0]
}

/// Applies `f(j, x[j]) → out[j]` over the row, vector body plus scalar tail.
fn row_map(
    b: &mut FunctionBuilder,
    out: Value,
    x: Value,
    w: i64,
    f: &dyn Fn(&mut FunctionBuilder, Value, Value) -> Value,
) {
    let len = Len::Const(w);
    let (i, _) = vec_loop(b, len, &[], |b, i, _| {
        let v = load(b, F32X4, x, i);
        let r = f(b, i, v);
        store(b, r, out, i);
        vec![]
    });
    tail(b, len, i, &[], |b, j, _| {
        let v = load(b, types::F32, x, j);
        let r = f(b, j, v);
        store(b, r, out, j);
        vec![]
    });
}

/// `splat(s)` when `like` is a vector, `s` otherwise.
fn like(b: &mut FunctionBuilder, like: Value, s: Value) -> Value {
    let ty = b.func.dfg.value_type(like);
    if ty.is_vector() {
        b.ins().splat(ty, s)
    } else {
        s
    }
}

/// `extern "C" fn(out, x, w, b, rows)`: `out[r] = (x[r] − mean)·rsqrt(var + eps)·w + b`.
pub fn layer_norm(b: &mut FunctionBuilder, params: &[Value], width: i64, eps: f32) {
    let (out, x, wt, bias, rows) = (params[0], params[1], params[2], params[3], params[4]);
    row_loop(b, rows, |b, r| {
        let xr = row_ptr(b, x, r, Len::Const(width));
        let or = row_ptr(b, out, r, Len::Const(width));
        let s = row_sum(b, xr, width, &|_, v| v);
        let m = mean_f32(b, s, width);
        // Var of the centred row: (x − m)² in f32, summed in f64, as the reference does.
        let s2 = row_sum(b, xr, width, &|b, v| {
            let mv = like(b, v, m);
            let c = b.ins().fsub(v, mv);
            b.ins().fmul(c, c)
        });
        let var = mean_f32(b, s2, width);
        let e = f32c(b, types::F32, eps);
        let ve = b.ins().fadd(var, e);
        let inv = rsqrt_f64(b, ve);
        row_map(b, or, xr, width, &|b, j, v| {
            let ty = b.func.dfg.value_type(v);
            let mv = like(b, v, m);
            let iv = like(b, v, inv);
            let c = b.ins().fsub(v, mv);
            let c = b.ins().fmul(c, iv);
            let wj = load(b, ty, wt, j);
            let c = b.ins().fmul(c, wj);
            let bj = load(b, ty, bias, j);
            b.ins().fadd(c, bj)
        });
    });
    b.ins().return_(&[]);
}

/// `extern "C" fn(out, x, w, rows)`: `out[r] = x[r]·rsqrt(mean(x[r]²) + eps)·w`.
pub fn rms_norm(b: &mut FunctionBuilder, params: &[Value], width: i64, eps: f32) {
    let (out, x, wt, rows) = (params[0], params[1], params[2], params[3]);
    row_loop(b, rows, |b, r| {
        let xr = row_ptr(b, x, r, Len::Const(width));
        let or = row_ptr(b, out, r, Len::Const(width));
        let s = row_sum(b, xr, width, &|b, v| b.ins().fmul(v, v));
        let ms = mean_f32(b, s, width);
        let e = f32c(b, types::F32, eps);
        let me = b.ins().fadd(ms, e);
        let inv = rsqrt_f64(b, me);
        row_map(b, or, xr, width, &|b, j, v| {
            let ty = b.func.dfg.value_type(v);
            let iv = like(b, v, inv);
            let c = b.ins().fmul(v, iv);
            let wj = load(b, ty, wt, j);
            b.ins().fmul(c, wj)
        });
    });
    b.ins().return_(&[]);
}
