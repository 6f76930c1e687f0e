//! Row softmax (`Softmax { width }`, compile-time width) and the attention score row kernel
//! (`AttentionSoftmax`, runtime width): scale, mask, softmax, in place, called between the two
//! GEMMs of one head. Both follow `softmax_row` of the reference executor: NaN-propagating max,
//! `exp(x − max)` rounded to f32, the sum accumulated in f64 and rounded to f32, then a division
//! (not a multiply by the reciprocal: it keeps the result within exp's error of the reference).
//! A row with no finite entry is NaN, as torch gives.

use super::builder::{
    acc_f64, bits, counted_loop, elem64, f32c, hmax_f32, hsum_f64, load, row_loop, row_ptr, store,
    tail, vec_loop, zero_f64x2, Len, F32X4, LANES,
};
use super::math::exp;
use super::MaskKind;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, ConstantData, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

fn splat_like(b: &mut FunctionBuilder, v: Value, s: Value) -> Value {
    let ty = b.func.dfg.value_type(v);
    if ty.is_vector() {
        b.ins().splat(ty, s)
    } else {
        s
    }
}

/// max over x[0..len), NaN-propagating, starting from −inf.
fn row_max(b: &mut FunctionBuilder, x: Value, len: Len) -> Value {
    let ninf = f32c(b, F32X4, f32::NEG_INFINITY);
    let (i, acc) = vec_loop(b, len, &[ninf], |b, i, c| {
        let v = load(b, F32X4, x, i);
        vec![b.ins().fmax(c[0], v)]
    });
    let m = hmax_f32(b, acc[0]);
    tail(b, len, i, &[m], |b, j, c| {
        let v = load(b, types::F32, x, j);
        vec![b.ins().fmax(c[0], v)]
    })[0]
}

/// `out[j] = exp(x[j] − max)`, then `out[j] /= Σ out` (f64 sum rounded to f32). Returns the sum.
fn exp_normalize(b: &mut FunctionBuilder, out: Value, x: Value, len: Len, max: Value) -> Value {
    let z = zero_f64x2(b);
    let (i, acc) = vec_loop(b, len, &[z, z], |b, i, c| {
        let v = load(b, F32X4, x, i);
        let m = splat_like(b, v, max);
        let d = b.ins().fsub(v, m);
        let e = exp(b, d);
        store(b, e, out, i);
        let (lo, hi) = acc_f64(b, (c[0], c[1]), e);
        vec![lo, hi]
    });
    let s = hsum_f64(b, acc[0], acc[1]);
    let s = tail(b, len, i, &[s], |b, j, c| {
        let v = load(b, types::F32, x, j);
        let d = b.ins().fsub(v, max);
        let e = exp(b, d);
        store(b, e, out, j);
        let e64 = b.ins().fpromote(types::F64, e);
        vec![b.ins().fadd(c[0], e64)]
    })[0];
    let sum = b.ins().fdemote(types::F32, s);
    let (i, _) = vec_loop(b, len, &[], |b, i, _| {
        let v = load(b, F32X4, out, i);
        let sv = b.ins().splat(F32X4, sum);
        let r = b.ins().fdiv(v, sv);
        store(b, r, out, i);
        vec![]
    });
    tail(b, len, i, &[], |b, j, _| {
        let v = load(b, types::F32, out, j);
        let r = b.ins().fdiv(v, sum);
        store(b, r, out, j);
        vec![]
    });
    sum
}

/// `extern "C" fn(out, x, rows)`: softmax of each row of `width`; `out == x` is allowed.
pub fn softmax(b: &mut FunctionBuilder, params: &[Value], width: i64) {
    let (out, x, rows) = (params[0], params[1], params[2]);
    row_loop(b, rows, |b, r| {
        let xr = row_ptr(b, x, r, Len::Const(width));
        let or = row_ptr(b, out, r, Len::Const(width));
        let m = row_max(b, xr, Len::Const(width));
        exp_normalize(b, or, xr, Len::Const(width), m);
    });
    b.ins().return_(&[]);
}

/// `s[j] *= scale` over [0, len) in place, returning the row max.
fn scale_max(b: &mut FunctionBuilder, s: Value, len: Len, scale: f32) -> Value {
    let ninf = f32c(b, F32X4, f32::NEG_INFINITY);
    let (i, acc) = vec_loop(b, len, &[ninf], |b, i, c| {
        let v = load(b, F32X4, s, i);
        let k = f32c(b, F32X4, scale);
        let v = b.ins().fmul(v, k);
        store(b, v, s, i);
        vec![b.ins().fmax(c[0], v)]
    });
    let m = hmax_f32(b, acc[0]);
    tail(b, len, i, &[m], |b, j, c| {
        let v = load(b, types::F32, s, j);
        let k = f32c(b, types::F32, scale);
        let v = b.ins().fmul(v, k);
        store(b, v, s, j);
        vec![b.ins().fmax(c[0], v)]
    })[0]
}

/// An I32X4-shaped lane mask from four i64 segment comparisons: two I64X2 `icmp` results
/// (all-ones or zero per 64-bit lane) with the low 32-bit half of each lane gathered by a
/// two-vector byte shuffle.
fn seg_mask4(b: &mut FunctionBuilder, sk: Value, j: Value, sq2: Value) -> Value {
    let p = elem64(b, sk, j);
    let flags = MemFlagsData::new().with_notrap();
    let k01 = b.ins().load(types::I64X2, flags, p, 0);
    let k23 = b.ins().load(types::I64X2, flags, p, 16);
    let m01 = b.ins().icmp(IntCC::Equal, k01, sq2);
    let m23 = b.ins().icmp(IntCC::Equal, k23, sq2);
    let a = bits(b, types::I8X16, m01);
    let c = bits(b, types::I8X16, m23);
    let mask: Vec<u8> = [0u8, 8, 16, 24].iter().flat_map(|&s| s..s + 4).collect();
    let imm = b.func.dfg.immediates.push(ConstantData::from(mask));
    let m = b.ins().shuffle(a, c, imm);
    bits(b, F32X4, m)
}

/// Segment mask pass: `s[j] = seg_q == seg_k[j] ? s[j]·scale : −inf`, returning the row max.
fn segment_mask_max(
    b: &mut FunctionBuilder,
    s: Value,
    sk: Value,
    sq: Value,
    cols: Value,
    scale: f32,
) -> Value {
    let len = Len::Dyn(cols);
    let ninf = f32c(b, F32X4, f32::NEG_INFINITY);
    let sq2 = b.ins().splat(types::I64X2, sq);
    let (i, acc) = vec_loop(b, len, &[ninf], |b, i, c| {
        let v = load(b, F32X4, s, i);
        let k = f32c(b, F32X4, scale);
        let v = b.ins().fmul(v, k);
        let m = seg_mask4(b, sk, i, sq2);
        let ni = f32c(b, F32X4, f32::NEG_INFINITY);
        let v = b.ins().bitselect(m, v, ni);
        store(b, v, s, i);
        vec![b.ins().fmax(c[0], v)]
    });
    let m = hmax_f32(b, acc[0]);
    tail(b, len, i, &[m], |b, j, c| {
        let v = load(b, types::F32, s, j);
        let k = f32c(b, types::F32, scale);
        let v = b.ins().fmul(v, k);
        let p = elem64(b, sk, j);
        let kj = b
            .ins()
            .load(types::I64, MemFlagsData::new().with_notrap(), p, 0);
        let eq = b.ins().icmp(IntCC::Equal, kj, sq);
        let ni = f32c(b, types::F32, f32::NEG_INFINITY);
        let v = b.ins().select(eq, v, ni);
        store(b, v, s, j);
        vec![b.ins().fmax(c[0], v)]
    })[0]
}

/// Writes `v` to s[start..end).
fn fill(b: &mut FunctionBuilder, s: Value, start: Value, end: Value, v: Value) {
    let (i, _) = counted_loop(b, start, end, LANES, &[], |b, i, _| {
        let sv = b.ins().splat(F32X4, v);
        store(b, sv, s, i);
        vec![]
    });
    counted_loop(b, i, end, 1, &[], |b, j, _| {
        store(b, v, s, j);
        vec![]
    });
}

/// `extern "C" fn(s, seg_q, seg_k, rows, cols, offset)`: per row i of `s` (`rows × cols`,
/// row stride `cols`), scale by the baked `scale`, mask, softmax, in place.
pub fn attention_softmax(b: &mut FunctionBuilder, params: &[Value], scale: f32, mask: MaskKind) {
    let (s, seg_q, seg_k, rows, cols, offset) = (
        params[0], params[1], params[2], params[3], params[4], params[5],
    );
    row_loop(b, rows, |b, i| {
        let row = row_ptr(b, s, i, Len::Dyn(cols));
        match mask {
            MaskKind::Full => {
                let m = scale_max(b, row, Len::Dyn(cols), scale);
                exp_normalize(b, row, row, Len::Dyn(cols), m);
            }
            MaskKind::Causal => {
                // Query i sees keys j ≤ offset + i: a prefix. The masked suffix is −inf, whose
                // softmax value exp(−inf − max)/sum is 0 (or NaN when the row has no finite
                // entry or a NaN): computed once as a scalar and stored, skipping its exps.
                let lim = b.ins().iadd(offset, i);
                let lim = b.ins().iadd_imm_s(lim, 1);
                let zero = b.ins().iconst(types::I64, 0);
                let lim = b.ins().smax(lim, zero);
                let lim = b.ins().smin(lim, cols);
                let m = scale_max(b, row, Len::Dyn(lim), scale);
                let sum = exp_normalize(b, row, row, Len::Dyn(lim), m);
                let ninf = f32c(b, types::F32, f32::NEG_INFINITY);
                let d = b.ins().fsub(ninf, m);
                let e = exp(b, d);
                let v = b.ins().fdiv(e, sum);
                fill(b, row, lim, cols, v);
            }
            MaskKind::Segments => {
                let pq = elem64(b, seg_q, i);
                let sq = b
                    .ins()
                    .load(types::I64, MemFlagsData::new().with_notrap(), pq, 0);
                let m = segment_mask_max(b, row, seg_k, sq, cols, scale);
                exp_normalize(b, row, row, Len::Dyn(cols), m);
            }
        }
    });
    b.ins().return_(&[]);
}
