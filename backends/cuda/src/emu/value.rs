//! Values and the arithmetic on them, one lane vector at a time. A lane holds its value's bits
//! zero-extended to `u64`: `Bool` 0/1, `I32`/`U32`/`F32` their 32 bits, `Bf16` its 16, `I64` all 64.
//! Semantics follow CUDA C++ on sm_80+: f32 arithmetic rounds once per operation, bf16 conversion
//! rounds to nearest even as `__float2bfloat16_rn`, integer division truncates.

use crate::kir::{BinOp, Ty, UnOp};

/// What went wrong in one lane: the executor adds where.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fault {
    I32Overflow { op: &'static str, a: i64, b: i64 },
    Undefined(String),
}

/// `__float2bfloat16_rn`: round to nearest even; every NaN becomes the canonical `0x7fff`, as
/// `cvt.rn.bf16.f32` produces.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fff;
    }
    let lsb = (u >> 16) & 1;
    (u.wrapping_add(0x7fff + lsb) >> 16) as u16
}

pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[inline]
fn f(x: u64) -> f32 {
    f32::from_bits(x as u32)
}
#[inline]
fn fb(v: f32) -> u64 {
    v.to_bits() as u64
}
#[inline]
fn i32v(x: u64) -> i32 {
    x as u32 as i32
}
#[inline]
fn i32b(v: i32) -> u64 {
    v as u32 as u64
}

/// The value of lane bits of type `ty` as an i64, for integer and bool types (indices, counts).
#[inline]
pub(crate) fn as_i64(x: u64, ty: Ty) -> i64 {
    match ty {
        Ty::I32 => i32v(x) as i64,
        Ty::F32 => f(x) as i64,
        Ty::Bf16 => bf16_bits_to_f32(x as u16) as i64,
        Ty::Bool | Ty::U32 | Ty::I64 => x as i64,
    }
}

/// `Expr::Cast` of one value: f32→bf16 rounds to nearest even; float→int truncates (saturating,
/// NaN to 0, as `cvt.rzi`); ints widen by sign (`U32` by zero) and narrow by wrapping;
/// bool→int is 0/1 and anything→bool is `!= 0`.
#[inline]
pub(crate) fn cast(x: u64, from: Ty, to: Ty) -> u64 {
    if from == to {
        return x;
    }
    let is_float = |t| matches!(t, Ty::F32 | Ty::Bf16);
    if is_float(from) {
        let v = if from == Ty::F32 {
            f(x)
        } else {
            bf16_bits_to_f32(x as u16)
        };
        return match to {
            Ty::F32 => fb(v),
            Ty::Bf16 => f32_to_bf16_bits(v) as u64,
            Ty::Bool => (v != 0.0) as u64,
            Ty::I32 => i32b(v as i32),
            Ty::U32 => (v as u32) as u64,
            Ty::I64 => (v as i64) as u64,
        };
    }
    let v = as_i64(x, from);
    match to {
        Ty::Bool => (v != 0) as u64,
        Ty::I32 | Ty::U32 => v as u32 as u64,
        Ty::I64 => v as u64,
        // u32 and i64 values convert exactly as C++ does (one rounding to f32).
        Ty::F32 => fb(if from == Ty::U32 {
            x as u32 as f32
        } else {
            v as f32
        }),
        Ty::Bf16 => f32_to_bf16_bits(v as f32) as u64,
    }
}

pub(crate) fn cast_lanes(v: &mut [u64], from: Ty, to: Ty) {
    // The conversions every kernel runs get loops of their own; the rest go through `cast`.
    match (from, to) {
        _ if from == to => {}
        (Ty::Bf16, Ty::F32) => v.iter_mut().for_each(|x| *x <<= 16),
        (Ty::F32, Ty::Bf16) => v
            .iter_mut()
            .for_each(|x| *x = f32_to_bf16_bits(f(*x)) as u64),
        (Ty::I32, Ty::I64) => v.iter_mut().for_each(|x| *x = i32v(*x) as i64 as u64),
        (Ty::U32, Ty::I64) => {}
        (Ty::I64 | Ty::U32, Ty::I32) | (Ty::I64, Ty::U32) => {
            v.iter_mut().for_each(|x| *x &= 0xffff_ffff)
        }
        _ => v.iter_mut().for_each(|x| *x = cast(*x, from, to)),
    }
}

/// The type two operands meet at (C++'s usual arithmetic conversions, for the types KIR has).
pub(crate) fn promote(a: Ty, b: Ty) -> Ty {
    let rank = |t| match t {
        Ty::Bool => 0,
        Ty::I32 => 1,
        Ty::U32 => 2,
        Ty::I64 => 3,
        Ty::F32 | Ty::Bf16 => 4,
    };
    let t = if rank(a) >= rank(b) { a } else { b };
    match t {
        Ty::Bf16 => Ty::F32,
        t => t,
    }
}

/// The type `op` computes in for operands of type `t` (already promoted), and its result type.
pub(crate) fn binary_types(op: BinOp, t: Ty) -> (Ty, Ty) {
    let arith = !matches!(
        op,
        BinOp::And
            | BinOp::Or
            | BinOp::BitAnd
            | BinOp::BitOr
            | BinOp::BitXor
            | BinOp::Eq
            | BinOp::Ne
    );
    let work = if t == Ty::Bool && arith { Ty::I32 } else { t };
    let result = if op.is_comparison() || matches!(op, BinOp::And | BinOp::Or) {
        Ty::Bool
    } else {
        work
    };
    (work, result)
}

macro_rules! zip2 {
    ($out:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        for ((o, &$x), &$y) in $out.iter_mut().zip($a.iter()).zip($b.iter()) {
            *o = $body;
        }
    };
}

fn op_symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Rem => "%",
        _ => "?",
    }
}

/// `out = a op b` lane-wise, both operands of type `t` (from [`binary_types`]). Faults are
/// reported only for active lanes; inactive lanes get unspecified values.
pub(crate) fn binary(
    op: BinOp,
    t: Ty,
    a: &[u64],
    b: &[u64],
    out: &mut [u64],
    mask: &[bool],
) -> Result<(), (usize, Fault)> {
    use BinOp::*;
    match t {
        Ty::F32 | Ty::Bf16 => {
            float_binary(op, a, b, out).map_err(|w| (first_active(mask), Fault::Undefined(w)))
        }
        Ty::Bool => {
            match op {
                And | BitAnd => zip2!(out, a, b, |x, y| x & y),
                Or | BitOr => zip2!(out, a, b, |x, y| x | y),
                BitXor | Ne => zip2!(out, a, b, |x, y| x ^ y),
                Eq => zip2!(out, a, b, |x, y| (x == y) as u64),
                _ => unreachable!("bool arithmetic is promoted to i32 by binary_types"),
            }
            Ok(())
        }
        Ty::I32 => match op {
            Add | Sub | Mul => {
                for (i, ((o, &x), &y)) in out.iter_mut().zip(a).zip(b).enumerate() {
                    let (x, y) = (i32v(x), i32v(y));
                    let r = match op {
                        Add => x.checked_add(y),
                        Sub => x.checked_sub(y),
                        _ => x.checked_mul(y),
                    };
                    *o = match r {
                        Some(v) => i32b(v),
                        None if mask[i] => {
                            return Err((
                                i,
                                Fault::I32Overflow {
                                    op: op_symbol(op),
                                    a: x as i64,
                                    b: y as i64,
                                },
                            ))
                        }
                        None => 0,
                    };
                }
                Ok(())
            }
            Div | Rem => int_div(op, Ty::I32, a, b, out, mask),
            Shl | Shr => shift(op, 32, a, b, out, mask, Ty::I32),
            _ => {
                int_common(op, a, b, out, |x| i32v(x) as i64, |v| i32b(v as i32));
                Ok(())
            }
        },
        Ty::U32 => {
            match op {
                Add => zip2!(out, a, b, |x, y| (x as u32).wrapping_add(y as u32) as u64),
                Sub => zip2!(out, a, b, |x, y| (x as u32).wrapping_sub(y as u32) as u64),
                Mul => zip2!(out, a, b, |x, y| (x as u32).wrapping_mul(y as u32) as u64),
                Div | Rem => return int_div(op, Ty::U32, a, b, out, mask),
                Shl | Shr => return shift(op, 32, a, b, out, mask, Ty::U32),
                _ => int_common(op, a, b, out, |x| x as i64, |v| v as u32 as u64),
            }
            Ok(())
        }
        Ty::I64 => {
            match op {
                Add => zip2!(out, a, b, |x, y| x.wrapping_add(y)),
                Sub => zip2!(out, a, b, |x, y| x.wrapping_sub(y)),
                Mul => zip2!(out, a, b, |x, y| (x as i64).wrapping_mul(y as i64) as u64),
                Div | Rem => return int_div(op, Ty::I64, a, b, out, mask),
                Shl | Shr => return shift(op, 64, a, b, out, mask, Ty::I64),
                _ => int_common(op, a, b, out, |x| x as i64, |v| v as u64),
            }
            Ok(())
        }
    }
}

fn first_active(mask: &[bool]) -> usize {
    mask.iter().position(|&m| m).unwrap_or(0)
}

fn float_binary(op: BinOp, a: &[u64], b: &[u64], out: &mut [u64]) -> Result<(), String> {
    use BinOp::*;
    match op {
        Add => zip2!(out, a, b, |x, y| fb(f(x) + f(y))),
        Sub => zip2!(out, a, b, |x, y| fb(f(x) - f(y))),
        Mul => zip2!(out, a, b, |x, y| fb(f(x) * f(y))),
        Div => zip2!(out, a, b, |x, y| fb(f(x) / f(y))),
        Rem => zip2!(out, a, b, |x, y| fb(f(x) % f(y))),
        // fminf/fmaxf: a NaN operand yields the other one, as Rust's min/max.
        Min => zip2!(out, a, b, |x, y| fb(f(x).min(f(y)))),
        Max => zip2!(out, a, b, |x, y| fb(f(x).max(f(y)))),
        Lt => zip2!(out, a, b, |x, y| (f(x) < f(y)) as u64),
        Le => zip2!(out, a, b, |x, y| (f(x) <= f(y)) as u64),
        Gt => zip2!(out, a, b, |x, y| (f(x) > f(y)) as u64),
        Ge => zip2!(out, a, b, |x, y| (f(x) >= f(y)) as u64),
        Eq => zip2!(out, a, b, |x, y| (f(x) == f(y)) as u64),
        Ne => zip2!(out, a, b, |x, y| (f(x) != f(y)) as u64),
        And => zip2!(out, a, b, |x, y| (f(x) != 0.0 && f(y) != 0.0) as u64),
        Or => zip2!(out, a, b, |x, y| (f(x) != 0.0 || f(y) != 0.0) as u64),
        BitAnd | BitOr | BitXor | Shl | Shr => return Err(format!("bitwise {op:?} on f32")),
    }
    Ok(())
}

/// The integer ops whose meaning does not depend on width beyond the value's sign.
fn int_common(
    op: BinOp,
    a: &[u64],
    b: &[u64],
    out: &mut [u64],
    val: impl Fn(u64) -> i64,
    bits: impl Fn(i64) -> u64,
) {
    use BinOp::*;
    match op {
        Min => zip2!(out, a, b, |x, y| bits(val(x).min(val(y)))),
        Max => zip2!(out, a, b, |x, y| bits(val(x).max(val(y)))),
        Lt => zip2!(out, a, b, |x, y| (val(x) < val(y)) as u64),
        Le => zip2!(out, a, b, |x, y| (val(x) <= val(y)) as u64),
        Gt => zip2!(out, a, b, |x, y| (val(x) > val(y)) as u64),
        Ge => zip2!(out, a, b, |x, y| (val(x) >= val(y)) as u64),
        Eq => zip2!(out, a, b, |x, y| (x == y) as u64),
        Ne => zip2!(out, a, b, |x, y| (x != y) as u64),
        And => zip2!(out, a, b, |x, y| (x != 0 && y != 0) as u64),
        Or => zip2!(out, a, b, |x, y| (x != 0 || y != 0) as u64),
        BitAnd => zip2!(out, a, b, |x, y| x & y),
        BitOr => zip2!(out, a, b, |x, y| x | y),
        BitXor => zip2!(out, a, b, |x, y| x ^ y),
        Add | Sub | Mul | Div | Rem | Shl | Shr => {
            unreachable!("width-dependent ops are handled by the caller")
        }
    }
}

/// Truncating division and remainder of integers of type `t`.
fn int_div(
    op: BinOp,
    t: Ty,
    a: &[u64],
    b: &[u64],
    out: &mut [u64],
    mask: &[bool],
) -> Result<(), (usize, Fault)> {
    // The signed minimum, whose division by -1 overflows.
    let min = match t {
        Ty::I32 => Some(i32::MIN as i64),
        Ty::I64 => Some(i64::MIN),
        _ => None,
    };
    for (i, ((o, &x), &y)) in out.iter_mut().zip(a).zip(b).enumerate() {
        let (x, y) = (as_i64(x, t), as_i64(y, t));
        if y == 0 || (Some(x) == min && y == -1) {
            if mask[i] {
                let what = if y == 0 {
                    "integer division by zero".to_string()
                } else {
                    format!("{x} {} -1 overflows", op_symbol(op))
                };
                return Err((i, Fault::Undefined(what)));
            }
            *o = 0;
            continue;
        }
        let v = if op == BinOp::Div { x / y } else { x % y };
        *o = if t == Ty::I64 {
            v as u64
        } else {
            v as u32 as u64
        };
    }
    Ok(())
}

fn shift(
    op: BinOp,
    width: u32,
    a: &[u64],
    b: &[u64],
    out: &mut [u64],
    mask: &[bool],
    t: Ty,
) -> Result<(), (usize, Fault)> {
    for (i, ((o, &x), &y)) in out.iter_mut().zip(a).zip(b).enumerate() {
        let n = as_i64(y, t);
        if !(0..width as i64).contains(&n) {
            if mask[i] {
                return Err((
                    i,
                    Fault::Undefined(format!("shift by {n} of a {width}-bit value")),
                ));
            }
            *o = 0;
            continue;
        }
        let n = n as u32;
        *o = match (op, t) {
            (BinOp::Shl, Ty::I64) => x << n,
            (BinOp::Shl, _) => ((x as u32) << n) as u64,
            (_, Ty::I32) => i32b(i32v(x) >> n),
            (_, Ty::I64) => ((x as i64) >> n) as u64,
            _ => ((x as u32) >> n) as u64,
        };
    }
    Ok(())
}

/// The type a unary op computes in and returns for an operand of type `t`.
pub(crate) fn unary_type(op: UnOp, t: Ty) -> Ty {
    match op {
        UnOp::Neg | UnOp::Not | UnOp::Abs if t != Ty::Bf16 => t,
        _ => Ty::F32,
    }
}

/// `v = op v` in place; `t` is the operand type after conversion to [`unary_type`].
pub(crate) fn unary(op: UnOp, t: Ty, v: &mut [u64], mask: &[bool]) -> Result<(), (usize, Fault)> {
    let float = |v: &mut [u64], g: fn(f64) -> f64| {
        v.iter_mut().for_each(|x| *x = fb(g(f(*x) as f64) as f32))
    };
    match (op, t) {
        (UnOp::Neg, Ty::F32) => v.iter_mut().for_each(|x| *x ^= 0x8000_0000),
        (UnOp::Abs, Ty::F32) => v.iter_mut().for_each(|x| *x &= 0x7fff_ffff),
        (UnOp::Not, Ty::Bool) => v.iter_mut().for_each(|x| *x ^= 1),
        (UnOp::Not, Ty::I32 | Ty::U32) => v.iter_mut().for_each(|x| *x = !*x & 0xffff_ffff),
        (UnOp::Not, Ty::I64) => v.iter_mut().for_each(|x| *x = !*x),
        (UnOp::Neg | UnOp::Abs, Ty::I32) => {
            for (i, x) in v.iter_mut().enumerate() {
                let y = i32v(*x);
                if y == i32::MIN && mask[i] {
                    return Err((
                        i,
                        Fault::I32Overflow {
                            op: if op == UnOp::Neg { "neg" } else { "abs" },
                            a: y as i64,
                            b: 0,
                        },
                    ));
                }
                *x = i32b(if op == UnOp::Neg {
                    y.wrapping_neg()
                } else {
                    y.wrapping_abs()
                });
            }
        }
        (UnOp::Neg, Ty::U32) => v
            .iter_mut()
            .for_each(|x| *x = (*x as u32).wrapping_neg() as u64),
        (UnOp::Neg, Ty::I64) => v
            .iter_mut()
            .for_each(|x| *x = (*x as i64).wrapping_neg() as u64),
        (UnOp::Abs, Ty::I64) => v
            .iter_mut()
            .for_each(|x| *x = (*x as i64).wrapping_abs() as u64),
        (UnOp::Neg | UnOp::Abs, Ty::U32 | Ty::Bool) => {}
        (UnOp::Sqrt, _) => v.iter_mut().for_each(|x| *x = fb(f(*x).sqrt())),
        (UnOp::Rsqrt, _) => v.iter_mut().for_each(|x| *x = fb(1.0 / f(*x).sqrt())),
        // Transcendentals: computed in f64 and rounded once, so within an ulp of CUDA's.
        (UnOp::Exp, _) => float(v, f64::exp),
        (UnOp::Log, _) => float(v, f64::ln),
        (UnOp::Tanh, _) => float(v, f64::tanh),
        (UnOp::Erf, _) => float(v, libm::erf),
        (UnOp::Sin, _) => float(v, f64::sin),
        (UnOp::Cos, _) => float(v, f64::cos),
        (op, t) => {
            return Err((
                first_active(mask),
                Fault::Undefined(format!("{op:?} on {t:?}")),
            ))
        }
    }
    Ok(())
}

/// `fmaf(a, b, c)` lane-wise, in place in `a`, one rounding.
pub(crate) fn fma(a: &mut [u64], b: &[u64], c: &[u64]) {
    for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
        *x = fb(f(*x).mul_add(f(y), f(z)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even is 1.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3·2^-8 is a tie between 1 + 2^-7 and 1 + 2^-6: even is the upper.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16_bits(f32::NEG_INFINITY), 0xff80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xffc0_0001)), 0x7fff);
    }

    #[test]
    fn bf16_agrees_with_half_on_every_non_nan() {
        // `half` also rounds to nearest even; only its NaN (quieted, sign kept) differs.
        for hi in 0..=u16::MAX {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                let x = f32::from_bits(((hi as u32) << 16) | lo);
                if !x.is_nan() {
                    assert_eq!(
                        f32_to_bf16_bits(x),
                        half::bf16::from_f32(x).to_bits(),
                        "{x:e}"
                    );
                }
            }
        }
    }
}
