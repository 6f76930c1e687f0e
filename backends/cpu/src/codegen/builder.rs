//! CLIF building blocks shared by every kernel family: constants of scalar or vector type,
//! element addressing, counted loops with loop-carried values, the vector-body-plus-scalar-tail
//! pattern, and the horizontal reductions Cranelift has no single instruction for.

use cranelift_codegen::ir::{
    types, Block, BlockArg, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::FunctionBuilder;

/// f32 lanes in one 128-bit vector: Cranelift's x86-64 and aarch64 backends top out at 128 bits.
pub const LANES: i64 = 4;
pub const F32X4: Type = types::F32X4;
pub const F64X2: Type = types::F64X2;

/// Flags for kernel data accesses: never trapping by contract (the caller passes valid rows) but
/// *not* `aligned`: rows of odd widths start anywhere, and an `aligned` flag would let the x86
/// backend fold a load into an SSE operand that faults on an unaligned address.
pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for lane-reinterpreting bitcasts, which Cranelift wants with an explicit byte order.
fn lanes_le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// The integer type with the lane shape of the float type `ty` (F32 → I32, F32X4 → I32X4).
pub fn int_of(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

/// `v` as an f32 of type `ty`: a scalar constant, or that constant splatted to every lane.
pub fn f32c(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    let c = b.ins().f32const(v);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// `v` as an i32 with the lane shape of `ty` (an integer type).
pub fn i32c(b: &mut FunctionBuilder, ty: Type, v: i32) -> Value {
    let c = b.ins().iconst(types::I32, v as i64);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// Reinterprets the bits of `x` as type `to` (same total size).
pub fn bits(b: &mut FunctionBuilder, to: Type, x: Value) -> Value {
    let flags = if to.is_vector() {
        lanes_le()
    } else {
        MemFlagsData::new()
    };
    b.ins().bitcast(to, flags, x)
}

/// Address of f32 element `idx` (an i64 element index) of the array at `base`.
pub fn elem(b: &mut FunctionBuilder, base: Value, idx: Value) -> Value {
    let off = b.ins().ishl_imm_u(idx, 2);
    b.ins().iadd(base, off)
}

/// Address of i64 element `idx` of the array at `base`.
pub fn elem64(b: &mut FunctionBuilder, base: Value, idx: Value) -> Value {
    let off = b.ins().ishl_imm_u(idx, 3);
    b.ins().iadd(base, off)
}

/// Loads a value of type `ty` (F32 or F32X4) from element `idx` of `base`.
pub fn load(b: &mut FunctionBuilder, ty: Type, base: Value, idx: Value) -> Value {
    let p = elem(b, base, idx);
    b.ins().load(ty, mem(), p, 0)
}

/// Stores `v` (F32 or F32X4) at element `idx` of `base`.
pub fn store(b: &mut FunctionBuilder, v: Value, base: Value, idx: Value) {
    let p = elem(b, base, idx);
    b.ins().store(mem(), v, p, 0);
}

/// A loop length: baked into the code when the spec fixes it (the point of specialization: the
/// tail becomes straight-line code and bounds fold), or a runtime argument.
#[derive(Clone, Copy)]
pub enum Len {
    Const(i64),
    Dyn(Value),
}

impl Len {
    pub fn value(self, b: &mut FunctionBuilder) -> Value {
        match self {
            Len::Const(n) => b.ins().iconst(types::I64, n),
            Len::Dyn(v) => v,
        }
    }
}

fn args(vs: &[Value]) -> Vec<BlockArg> {
    vs.iter().map(|&v| BlockArg::Value(v)).collect()
}

fn block_with_params(b: &mut FunctionBuilder, tys: &[Type]) -> Block {
    let blk = b.create_block();
    for &t in tys {
        b.append_block_param(blk, t);
    }
    blk
}

/// Emits `i = start; while i + step <= end { carry = body(i, carry); i += step }` (signed
/// compare, so a negative `end` runs nothing) and returns the final `i` and carried values.
/// Loop-carried values travel as block parameters, so the body is plain SSA.
pub fn counted_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    carry: &[Value],
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> (Value, Vec<Value>) {
    let mut tys = vec![types::I64];
    tys.extend(carry.iter().map(|&v| b.func.dfg.value_type(v)));
    let header = block_with_params(b, &tys);
    let body_blk = b.create_block();
    let exit = block_with_params(b, &tys);

    let mut init = vec![start];
    init.extend_from_slice(carry);
    b.ins().jump(header, &args(&init));

    b.switch_to_block(header);
    let hp = b.block_params(header).to_vec();
    let next = b.ins().iadd_imm_s(hp[0], step);
    let go = b.ins().icmp(
        cranelift_codegen::ir::condcodes::IntCC::SignedLessThanOrEqual,
        next,
        end,
    );
    b.ins().brif(go, body_blk, &[], exit, &args(&hp));

    b.switch_to_block(body_blk);
    b.seal_block(body_blk);
    let out = body(b, hp[0], &hp[1..]);
    assert_eq!(
        out.len(),
        carry.len(),
        "loop body must return every carried value"
    );
    let mut back = vec![next];
    back.extend(out);
    b.ins().jump(header, &args(&back));
    b.seal_block(header);

    b.switch_to_block(exit);
    b.seal_block(exit);
    let ep = b.block_params(exit).to_vec();
    (ep[0], ep[1..].to_vec())
}

/// The vectorized part of a row pass: `body(i, carry)` for i = 0, 4, 8, … while i + 4 <= len.
/// Returns where the scalar tail starts and the carried values.
pub fn vec_loop(
    b: &mut FunctionBuilder,
    len: Len,
    carry: &[Value],
    body: impl FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> (Value, Vec<Value>) {
    if let Len::Const(n) = len {
        if n < LANES {
            // No full vector: skip the loop so the CLIF stays minimal.
            let zero = b.ins().iconst(types::I64, 0);
            return (zero, carry.to_vec());
        }
    }
    let zero = b.ins().iconst(types::I64, 0);
    let end = len.value(b);
    counted_loop(b, zero, end, LANES, carry, body)
}

/// The scalar tail of a row pass, from `start` (as returned by [`vec_loop`]) to `len`. With a
/// constant length the tail is `len % 4` straight-line copies of `body` at known indices.
pub fn tail(
    b: &mut FunctionBuilder,
    len: Len,
    start: Value,
    carry: &[Value],
    mut body: impl FnMut(&mut FunctionBuilder, Value, &[Value]) -> Vec<Value>,
) -> Vec<Value> {
    match len {
        Len::Const(n) => {
            let mut c = carry.to_vec();
            for i in (n - n % LANES)..n {
                let idx = b.ins().iconst(types::I64, i);
                c = body(b, idx, &c);
            }
            c
        }
        Len::Dyn(end) => counted_loop(b, start, end, 1, carry, body).1,
    }
}

/// Lanes 2 and 3 of an F32X4 moved to lanes 0 and 1 (so `fvpromote_low` can widen them).
fn high_half(b: &mut FunctionBuilder, v: Value) -> Value {
    let bytes = bits(b, types::I8X16, v);
    let mask: Vec<u8> = (8..16).chain(8..16).collect();
    let imm = b.func.dfg.immediates.push(ConstantData::from(mask));
    let sh = b.ins().shuffle(bytes, bytes, imm);
    bits(b, F32X4, sh)
}

/// Adds the four f32 lanes of `v`, widened to f64, into the accumulators `(lo, hi)` (F64X2 each):
/// sums accumulate in f64 as the reference executor's `reduce` does, so a row's sum is exact
/// to f64 rounding whatever the order.
pub fn acc_f64(b: &mut FunctionBuilder, acc: (Value, Value), v: Value) -> (Value, Value) {
    let lo = b.ins().fvpromote_low(v);
    let h = high_half(b, v);
    let hi = b.ins().fvpromote_low(h);
    (b.ins().fadd(acc.0, lo), b.ins().fadd(acc.1, hi))
}

/// Zeroed F64X2 accumulator.
pub fn zero_f64x2(b: &mut FunctionBuilder) -> Value {
    let z = b.ins().f64const(0.0);
    b.ins().splat(F64X2, z)
}

/// `lo + hi` folded to one f64.
pub fn hsum_f64(b: &mut FunctionBuilder, lo: Value, hi: Value) -> Value {
    let s = b.ins().fadd(lo, hi);
    let a = b.ins().extractlane(s, 0);
    let c = b.ins().extractlane(s, 1);
    b.ins().fadd(a, c)
}

/// The maximum of the four lanes of an F32X4, NaN-propagating like `fmax`.
pub fn hmax_f32(b: &mut FunctionBuilder, v: Value) -> Value {
    let l: Vec<Value> = (0..4u8).map(|i| b.ins().extractlane(v, i)).collect();
    let m01 = b.ins().fmax(l[0], l[1]);
    let m23 = b.ins().fmax(l[2], l[3]);
    b.ins().fmax(m01, m23)
}

/// `(1 / sqrt(x as f64)) as f32`: the reference executor's `rsqrt`, bit for bit.
pub fn rsqrt_f64(b: &mut FunctionBuilder, x: Value) -> Value {
    let d = b.ins().fpromote(types::F64, x);
    let s = b.ins().sqrt(d);
    let one = b.ins().f64const(1.0);
    let r = b.ins().fdiv(one, s);
    b.ins().fdemote(types::F32, r)
}

/// `(sum / n) as f32` with `n` a constant: the reference executor's `reduce_mean`.
pub fn mean_f32(b: &mut FunctionBuilder, sum: Value, n: i64) -> Value {
    let nf = b.ins().f64const(n as f64);
    let m = b.ins().fdiv(sum, nf);
    b.ins().fdemote(types::F32, m)
}

/// Row loop: `body(r)` for r in 0..rows.
pub fn row_loop(
    b: &mut FunctionBuilder,
    rows: Value,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) {
    let zero = b.ins().iconst(types::I64, 0);
    counted_loop(b, zero, rows, 1, &[], |b, r, _| {
        body(b, r);
        Vec::new()
    });
}

/// `base + r·width` elements: the start of row `r`.
pub fn row_ptr(b: &mut FunctionBuilder, base: Value, r: Value, width: Len) -> Value {
    let idx = match width {
        Len::Const(w) => b.ins().imul_imm_s(r, w),
        Len::Dyn(w) => b.ins().imul(r, w),
    };
    elem(b, base, idx)
}
