//! The scalar meaning of the elementwise ops, as KIR expressions, matching the reference
//! executor's rules (`runtime/src/exec/elementwise.rs`).
//!
//! Values live in registers of one type per dtype class: floats as `F32` (bf16 rounded to its
//! precision after every op, as the reference rounds each node's result into its dtype), ints as
//! `I64` (i32 wrapped after every op; the reference computes ints in i64 and wraps), bools as
//! `Bool`. Memory holds each dtype's own type.

use crate::kir::{Expr, Ty};
use half::bf16;
use vl3c_ir::{BinaryOp, DType, Scalar, UnaryOp};

/// The buffer element type of a dtype, or why it has none.
pub(crate) fn mem_ty(dtype: DType) -> Result<Ty, String> {
    Ok(match dtype {
        DType::F32 => Ty::F32,
        DType::BF16 => Ty::Bf16,
        DType::I32 => Ty::I32,
        DType::I64 => Ty::I64,
        DType::Bool => Ty::Bool,
        DType::F16 => return Err("f16 tensors have no CUDA kernels (no graph uses them)".into()),
    })
}

/// The register type a dtype computes in.
pub(crate) fn reg_ty(dtype: DType) -> Ty {
    if dtype.is_float() {
        Ty::F32
    } else if dtype.is_int() {
        Ty::I64
    } else {
        Ty::Bool
    }
}

/// A value loaded from memory of `dtype`, into its register type.
pub(crate) fn from_memory(v: Expr, dtype: DType) -> Expr {
    match dtype {
        DType::BF16 | DType::F16 => v.cast(Ty::F32),
        DType::I32 => v.cast(Ty::I64),
        _ => v,
    }
}

/// A register value into the memory type of `dtype` (bf16 rounds to nearest even, i32 wraps).
pub(crate) fn to_memory(v: Expr, dtype: DType) -> Expr {
    match dtype {
        DType::BF16 => v.cast(Ty::Bf16),
        DType::I32 => v.cast(Ty::I32),
        _ => v,
    }
}

/// A freshly computed register value rounded into `dtype`, as the reference stores every
/// node's result in its dtype.
pub(crate) fn round_to(v: Expr, dtype: DType) -> Expr {
    match dtype {
        DType::BF16 => v.cast(Ty::Bf16).cast(Ty::F32),
        DType::I32 => v.cast(Ty::I32).cast(Ty::I64),
        _ => v,
    }
}

fn nan() -> Expr {
    Expr::f32(f32::NAN)
}

fn is_nan(x: &Expr) -> Expr {
    x.clone().ne(x.clone())
}

/// The zero of a register type: the initial value of a register assigned later.
pub(crate) fn zero(ty: Ty) -> Expr {
    match ty {
        Ty::F32 => Expr::f32(0.0),
        Ty::I64 => Expr::i64(0),
        Ty::I32 => Expr::i32(0),
        Ty::U32 => Expr::u32(0),
        Ty::Bool => Expr::bool(false),
        Ty::Bf16 => panic!("bf16 is not a register type here"),
    }
}

/// A literal of `dtype`, as the reference's `constant` rounds it.
pub(crate) fn constant(value: Scalar, dtype: DType) -> Expr {
    let as_float = |f: f32| {
        Expr::f32(if dtype == DType::BF16 {
            bf16::from_f32(f).to_f32()
        } else {
            f
        })
    };
    let from_int = |i: i64| match dtype {
        DType::I64 => Expr::i64(i),
        DType::I32 => Expr::i64(i as i32 as i64),
        DType::Bool => Expr::bool(i != 0),
        _ => as_float(i as f32),
    };
    match value {
        Scalar::Float(f) => match dtype {
            DType::I64 => Expr::i64(f as f32 as i64),
            DType::I32 => Expr::i64(f as f32 as i32 as i64),
            DType::Bool => Expr::bool(f as f32 != 0.0),
            _ => as_float(f as f32),
        },
        Scalar::Int(i) => from_int(i),
        Scalar::Bool(b) => from_int(b as i64),
    }
}

pub(crate) fn unary(op: UnaryOp, x: Expr, dtype: DType) -> Expr {
    if !dtype.is_float() {
        // Only neg and abs are defined on ints (the verifier rejects the rest).
        let v = match op {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            _ => panic!("{op} on {dtype} passed type inference"),
        };
        return round_to(v, dtype);
    }
    let v = match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.log(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => x.rsqrt(),
        UnaryOp::Recip => Expr::f32(1.0) / x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => x.erf(),
        UnaryOp::Sin => Expr::un(crate::kir::UnOp::Sin, x),
        UnaryOp::Cos => Expr::un(crate::kir::UnOp::Cos, x),
    };
    round_to(v, dtype)
}

/// `a ** b` as `powf`: `exp(b·ln|a|)` with the sign and the special cases a zero, negative or
/// NaN base takes (KIR has no pow; the reference computes it in f64).
fn pow(a: Expr, b: Expr) -> Expr {
    let magnitude = (b.clone() * a.clone().abs().log()).exp();
    let b_int = saturate_to_i64(b.clone());
    let integral = b_int.clone().cast(Ty::F32).eq(b.clone());
    let odd = (b_int & Expr::i64(1)).eq(Expr::i64(1));
    let negative_base = Expr::select(
        integral,
        Expr::select(odd, -magnitude.clone(), magnitude.clone()),
        nan(),
    );
    let zero_base = Expr::select(
        b.clone().gt(Expr::f32(0.0)),
        Expr::f32(0.0),
        Expr::f32(f32::INFINITY),
    );
    let by_base = Expr::select(
        a.clone().gt(Expr::f32(0.0)),
        magnitude,
        Expr::select(
            a.clone().eq(Expr::f32(0.0)),
            zero_base,
            Expr::select(is_nan(&a), nan(), negative_base),
        ),
    );
    Expr::select(b.eq(Expr::f32(0.0)), Expr::f32(1.0), by_base)
}

/// Floor division of I64 values, as Python's `//`; a zero divisor (which the reference
/// rejects) divides by one rather than trapping.
fn floor_div(a: Expr, b: Expr) -> Expr {
    let b = Expr::select(b.clone().eq(Expr::i64(0)), Expr::i64(1), b);
    let q = a.clone() / b.clone();
    let r = a % b.clone();
    let adjust = r
        .clone()
        .ne(Expr::i64(0))
        .and(r.lt(Expr::i64(0)).ne(b.lt(Expr::i64(0))));
    q - Expr::select(adjust, Expr::i64(1), Expr::i64(0))
}

/// A binary op on operands of `dtype` (in registers); comparisons give `Bool`.
pub(crate) fn binary(op: BinaryOp, a: Expr, b: Expr, dtype: DType) -> Expr {
    use BinaryOp::*;
    if dtype == DType::Bool {
        return match op {
            And => a.and(b),
            Or => a.or(b),
            // Compared as 0/1, so `false < true` as in the reference.
            _ => compare(op, a.cast(Ty::I32), b.cast(Ty::I32)),
        };
    }
    if op.is_comparison() {
        return compare(op, a, b);
    }
    let v = if dtype.is_float() {
        match op {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Pow => pow(a, b),
            // NaN-propagating, as torch.maximum/minimum.
            Max => Expr::select(is_nan(&a).or(is_nan(&b)), nan(), a.max(b)),
            Min => Expr::select(is_nan(&a).or(is_nan(&b)), nan(), a.min(b)),
            _ => panic!("{op} on {dtype} passed type inference"),
        }
    } else {
        match op {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => floor_div(a, b),
            Max => a.max(b),
            Min => a.min(b),
            _ => panic!("{op} on {dtype} passed type inference"),
        }
    };
    round_to(v, dtype)
}

fn compare(op: BinaryOp, a: Expr, b: Expr) -> Expr {
    match op {
        BinaryOp::Eq => a.eq(b),
        BinaryOp::Ne => a.ne(b),
        BinaryOp::Lt => a.lt(b),
        BinaryOp::Le => a.le(b),
        BinaryOp::Gt => a.gt(b),
        BinaryOp::Ge => a.ge(b),
        _ => unreachable!("not a comparison"),
    }
}

/// torch's `.to(dtype)` on a register value: floats round to nearest even, float→int truncates
/// toward zero saturating (NaN → 0), int→int wraps, bool→number is 0/1, number→bool is `!= 0`.
pub(crate) fn cast(x: Expr, from: DType, to: DType) -> Expr {
    if from == to {
        return x;
    }
    if from == DType::Bool {
        let as_int = x.cast(Ty::I64);
        return if to.is_float() {
            round_to(as_int.cast(Ty::F32), to)
        } else {
            as_int
        };
    }
    if from.is_int() {
        return match to {
            DType::Bool => x.ne(Expr::i64(0)),
            DType::I32 | DType::I64 => round_to(x, to),
            _ => round_to(x.cast(Ty::F32), to),
        };
    }
    match to {
        DType::Bool => x.ne(Expr::f32(0.0)),
        DType::I64 => saturate_to_i64(x),
        DType::I32 => saturate_to_i64(x)
            .max(Expr::i64(i32::MIN as i64))
            .min(Expr::i64(i32::MAX as i64)),
        _ => round_to(x, to),
    }
}

/// Rust's saturating `f32 as i64`: out-of-range values clamp, NaN is 0. The value is clamped
/// into range before the conversion, because a C++ cast of an out-of-range float is undefined.
fn saturate_to_i64(x: Expr) -> Expr {
    const TWO_POW_63: f32 = 9.223_372e18;
    let below_two_pow_63 = f32::from_bits(TWO_POW_63.to_bits() - 1);
    let clamped = Expr::select(is_nan(&x), Expr::f32(0.0), x.clone())
        .max(Expr::f32(-TWO_POW_63))
        .min(Expr::f32(below_two_pow_63));
    Expr::select(
        x.ge(Expr::f32(TWO_POW_63)),
        Expr::i64(i64::MAX),
        clamped.cast(Ty::I64),
    )
}
