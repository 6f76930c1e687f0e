//! Elementwise kernels (activations, SwiGLU, residual add, bias add) and RoPE. Activations and
//! adds run over a flat element count `n` (a runtime argument), RoPE and bias add over rows of a
//! compile-time width. Each reads an element before writing the same index, so `out` may alias
//! an input (RoPE pairs j with j + d/2 and writes both only after reading both).

use super::builder::{counted_loop, load, row_loop, row_ptr, store, tail, vec_loop, Len, F32X4};
use super::math;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Which elementwise function of one input.
#[derive(Clone, Copy)]
pub enum Unary {
    GeluTanh,
    GeluErf,
    Silu,
}

fn apply_unary(b: &mut FunctionBuilder, f: Unary, x: Value) -> Value {
    match f {
        Unary::GeluTanh => math::gelu_tanh(b, x),
        Unary::GeluErf => math::gelu_erf(b, x),
        Unary::Silu => math::silu(b, x),
    }
}

/// Which elementwise function of two inputs.
#[derive(Clone, Copy)]
pub enum Binary {
    /// `silu(a)·b`
    SwiGlu,
    /// `a + b`
    Add,
}

fn apply_binary(b: &mut FunctionBuilder, f: Binary, x: Value, y: Value) -> Value {
    match f {
        Binary::SwiGlu => {
            let s = math::silu(b, x);
            b.ins().fmul(s, y)
        }
        Binary::Add => b.ins().fadd(x, y),
    }
}

/// Runs `f(ty, j)` for every element of [0, n): vectors of 4, then a scalar loop.
fn flat(b: &mut FunctionBuilder, n: Value, f: &dyn Fn(&mut FunctionBuilder, types::Type, Value)) {
    let len = Len::Dyn(n);
    let (i, _) = vec_loop(b, len, &[], |b, i, _| {
        f(b, F32X4, i);
        vec![]
    });
    tail(b, len, i, &[], |b, j, _| {
        f(b, types::F32, j);
        vec![]
    });
}

/// `extern "C" fn(out, x, n)`: `out[j] = f(x[j])`.
pub fn unary(b: &mut FunctionBuilder, params: &[Value], f: Unary) {
    let (out, x, n) = (params[0], params[1], params[2]);
    flat(b, n, &|b, ty, j| {
        let v = load(b, ty, x, j);
        let r = apply_unary(b, f, v);
        store(b, r, out, j);
    });
    b.ins().return_(&[]);
}

/// `extern "C" fn(out, a, b, n)`: `out[j] = f(a[j], b[j])`.
pub fn binary(b: &mut FunctionBuilder, params: &[Value], f: Binary) {
    let (out, x, y, n) = (params[0], params[1], params[2], params[3]);
    flat(b, n, &|b, ty, j| {
        let u = load(b, ty, x, j);
        let v = load(b, ty, y, j);
        let r = apply_binary(b, f, u, v);
        store(b, r, out, j);
    });
    b.ins().return_(&[]);
}

/// `extern "C" fn(out, x, bias, rows)`: `out[r][j] = x[r][j] + bias[j]`.
pub fn add_bias(b: &mut FunctionBuilder, params: &[Value], width: i64) {
    let (out, x, bias, rows) = (params[0], params[1], params[2], params[3]);
    let len = Len::Const(width);
    row_loop(b, rows, |b, r| {
        let xr = row_ptr(b, x, r, len);
        let or = row_ptr(b, out, r, len);
        let body = |b: &mut FunctionBuilder, ty: types::Type, j: Value| {
            let u = load(b, ty, xr, j);
            let v = load(b, ty, bias, j);
            let s = b.ins().fadd(u, v);
            store(b, s, or, j);
        };
        let (i, _) = vec_loop(b, len, &[], |b, i, _| {
            body(b, F32X4, i);
            vec![]
        });
        tail(b, len, i, &[], |b, j, _| {
            body(b, types::F32, j);
            vec![]
        });
    });
    b.ins().return_(&[]);
}

/// One RoPE step at pair index j (< d/2) of type `ty`: with h = d/2,
/// `out[j] = x[j]·c[j] − x[j+h]·s[j]` and `out[j+h] = x[j+h]·c[j+h] + x[j]·s[j+h]`, which is
/// the reference's `x·cos + rotate_half(x)·sin` exactly ((−a)·s = −(a·s), and u + (−v) = u − v).
fn rope_step(b: &mut FunctionBuilder, ty: types::Type, rows: [Value; 4], h: i64, j: Value) {
    let [out, x, cos, sin] = rows;
    let jh = b.ins().iadd_imm_s(j, h);
    let x1 = load(b, ty, x, j);
    let x2 = load(b, ty, x, jh);
    let c1 = load(b, ty, cos, j);
    let c2 = load(b, ty, cos, jh);
    let s1 = load(b, ty, sin, j);
    let s2 = load(b, ty, sin, jh);
    let a = b.ins().fmul(x1, c1);
    let r = b.ins().fmul(x2, s1);
    let lo = b.ins().fsub(a, r);
    let a = b.ins().fmul(x2, c2);
    let r = b.ins().fmul(x1, s2);
    let hi = b.ins().fadd(a, r);
    store(b, lo, out, j);
    store(b, hi, out, jh);
}

/// `extern "C" fn(out, x, cos, sin, rows, table_rows)`: rotates each row of `d`; row r uses
/// table row `r % table_rows` (so one call covers every head of `[heads, n, d]` with `[n, d]`
/// tables). `table_rows < 1` does nothing.
pub fn rope(b: &mut FunctionBuilder, params: &[Value], d: i64) {
    let (out, x, cos, sin, rows, trows) = (
        params[0], params[1], params[2], params[3], params[4], params[5],
    );
    let h = d / 2;
    let ok = b
        .ins()
        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, trows, 1);
    let work = b.create_block();
    let done = b.create_block();
    b.ins().brif(ok, work, &[], done, &[]);
    b.seal_block(work);
    b.switch_to_block(work);
    let zero = b.ins().iconst(types::I64, 0);
    // Row and table row advance together; the table row wraps instead of dividing every row.
    counted_loop(b, zero, rows, 1, &[zero], |b, r, c| {
        let t = c[0];
        let ptrs = [
            row_ptr(b, out, r, Len::Const(d)),
            row_ptr(b, x, r, Len::Const(d)),
            row_ptr(b, cos, t, Len::Const(d)),
            row_ptr(b, sin, t, Len::Const(d)),
        ];
        let len = Len::Const(h);
        let (i, _) = vec_loop(b, len, &[], |b, j, _| {
            rope_step(b, F32X4, ptrs, h, j);
            vec![]
        });
        tail(b, len, i, &[], |b, j, _| {
            rope_step(b, types::F32, ptrs, h, j);
            vec![]
        });
        let t1 = b.ins().iadd_imm_s(t, 1);
        let wrap = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, t1, trows);
        let z = b.ins().iconst(types::I64, 0);
        vec![b.ins().select(wrap, z, t1)]
    });
    b.ins().jump(done, &[]);
    b.seal_block(done);
    b.switch_to_block(done);
    b.ins().return_(&[]);
}
