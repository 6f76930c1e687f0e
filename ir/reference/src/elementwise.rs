//! Elementwise ops, casts and literals. Float math runs in f32 (transcendentals in f64, rounded
//! once to f32) and the result is rounded into the operands' dtype; ints run in i64 and wrap.

use super::erf::erf;
use super::shape::{broadcast_shape, expand};
use super::tensor::{Tensor, TensorData};
use vl3c_ir::{BinaryOp, DType, Scalar, UnaryOp};

pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    let data = match &x.data {
        TensorData::I32(_) | TensorData::I64(_) => {
            let f: fn(i64) -> i64 = match op {
                UnaryOp::Neg => i64::wrapping_neg,
                UnaryOp::Abs => i64::wrapping_abs,
                _ => return Err(format!("{op} is not defined on {}", x.dtype())),
            };
            TensorData::from_i64(x.dtype(), x.to_i64_vec().into_iter().map(f).collect())
        }
        TensorData::Bool(_) => return Err(format!("{op} is not defined on bool")),
        _ => {
            let f = float_unary(op);
            TensorData::from_f32(x.dtype(), x.as_f32().iter().map(|&v| f(v)).collect())
        }
    };
    Ok(Tensor {
        shape: x.shape.clone(),
        data,
    })
}

fn float_unary(op: UnaryOp) -> fn(f32) -> f32 {
    match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Recip => |x| 1.0 / x,
        UnaryOp::Rsqrt => |x| (1.0 / (x as f64).sqrt()) as f32,
        UnaryOp::Exp => |x| (x as f64).exp() as f32,
        UnaryOp::Log => |x| (x as f64).ln() as f32,
        UnaryOp::Tanh => |x| (x as f64).tanh() as f32,
        UnaryOp::Erf => |x| erf(x as f64) as f32,
        UnaryOp::Sin => |x| (x as f64).sin() as f32,
        UnaryOp::Cos => |x| (x as f64).cos() as f32,
    }
}

/// NaN-propagating max/min, as torch.maximum/minimum.
fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

fn compare<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        _ => unreachable!("not a comparison"),
    }
}

/// Floor division, as Python's `//` on ints.
fn floor_div(a: i64, b: i64) -> i64 {
    let q = a.wrapping_div(b);
    if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

pub fn binary(op: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    if x.dtype() != y.dtype() {
        return Err(format!(
            "operand dtypes differ: {} and {}",
            x.dtype(),
            y.dtype()
        ));
    }
    let shape = broadcast_shape(&x.shape, &y.shape)?;
    let dtype = x.dtype();
    let data = if dtype.is_float() {
        let (a, b) = (x.as_f32(), y.as_f32());
        let (a, b) = (expand(&a, &x.shape, &shape)?, expand(&b, &y.shape, &shape)?);
        let pairs = a.iter().zip(b.iter()).map(|(&a, &b)| (a, b));
        if op.is_comparison() {
            TensorData::Bool(pairs.map(|(a, b)| compare(op, a, b)).collect())
        } else {
            let f: fn(f32, f32) -> f32 = match op {
                BinaryOp::Add => |a, b| a + b,
                BinaryOp::Sub => |a, b| a - b,
                BinaryOp::Mul => |a, b| a * b,
                BinaryOp::Div => |a, b| a / b,
                BinaryOp::Pow => |a, b| (a as f64).powf(b as f64) as f32,
                BinaryOp::Max => fmax,
                BinaryOp::Min => fmin,
                _ => return Err(format!("{op} is not defined on {dtype}")),
            };
            TensorData::from_f32(dtype, pairs.map(|(a, b)| f(a, b)).collect())
        }
    } else if dtype == DType::Bool {
        let (TensorData::Bool(a), TensorData::Bool(b)) = (&x.data, &y.data) else {
            unreachable!()
        };
        let (a, b) = (expand(a, &x.shape, &shape)?, expand(b, &y.shape, &shape)?);
        let pairs = a.iter().zip(b.iter()).map(|(&a, &b)| (a, b));
        TensorData::Bool(match op {
            BinaryOp::And => pairs.map(|(a, b)| a && b).collect(),
            BinaryOp::Or => pairs.map(|(a, b)| a || b).collect(),
            _ if op.is_comparison() => pairs.map(|(a, b)| compare(op, a, b)).collect(),
            _ => return Err(format!("{op} is not defined on bool")),
        })
    } else {
        let (a, b) = (x.to_i64_vec(), y.to_i64_vec());
        let (a, b) = (expand(&a, &x.shape, &shape)?, expand(&b, &y.shape, &shape)?);
        let pairs = a.iter().zip(b.iter()).map(|(&a, &b)| (a, b));
        if op.is_comparison() {
            TensorData::Bool(pairs.map(|(a, b)| compare(op, a, b)).collect())
        } else {
            let v: Vec<i64> = match op {
                BinaryOp::Add => pairs.map(|(a, b)| a.wrapping_add(b)).collect(),
                BinaryOp::Sub => pairs.map(|(a, b)| a.wrapping_sub(b)).collect(),
                BinaryOp::Mul => pairs.map(|(a, b)| a.wrapping_mul(b)).collect(),
                BinaryOp::Max => pairs.map(|(a, b)| a.max(b)).collect(),
                BinaryOp::Min => pairs.map(|(a, b)| a.min(b)).collect(),
                BinaryOp::Div => {
                    if b.contains(&0) {
                        return Err("integer division by zero".into());
                    }
                    pairs.map(|(a, b)| floor_div(a, b)).collect()
                }
                _ => return Err(format!("{op} is not defined on {dtype}")),
            };
            TensorData::from_i64(dtype, v)
        }
    };
    Ok(Tensor { shape, data })
}

fn select_vec<T: Copy>(c: &[bool], a: &[T], b: &[T]) -> Vec<T> {
    c.iter()
        .zip(a.iter().zip(b.iter()))
        .map(|(&c, (&a, &b))| if c { a } else { b })
        .collect()
}

pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let TensorData::Bool(c) = &cond.data else {
        return Err(format!("condition must be bool, got {}", cond.dtype()));
    };
    let shape = broadcast_shape(&broadcast_shape(&cond.shape, &a.shape)?, &b.shape)?;
    let c = expand(c, &cond.shape, &shape)?;
    macro_rules! pick {
        ($($var:ident),*) => {
            match (&a.data, &b.data) {
                $((TensorData::$var(x), TensorData::$var(y)) => TensorData::$var(select_vec(
                    &c,
                    &expand(x, &a.shape, &shape)?,
                    &expand(y, &b.shape, &shape)?,
                )),)*
                _ => return Err(format!("operand dtypes differ: {} and {}", a.dtype(), b.dtype())),
            }
        };
    }
    let data = pick!(F32, F16, BF16, I32, I64, Bool);
    Ok(Tensor { shape, data })
}

/// torch's `.to(dtype)`: floats round to nearest even, float→int truncates toward zero
/// (saturating; NaN → 0), int→int wraps, bool→number is 0/1, number→bool is `!= 0`.
pub fn cast(x: &Tensor, to: DType) -> Tensor {
    let data = if x.dtype() == to {
        x.data.clone()
    } else {
        match &x.data {
            TensorData::I32(_) | TensorData::I64(_) | TensorData::Bool(_) => {
                TensorData::from_i64(to, x.to_i64_vec())
            }
            _ => TensorData::from_f32(to, x.as_f32().into_owned()),
        }
    };
    Tensor {
        shape: x.shape.clone(),
        data,
    }
}

/// `cast` that hands back its operand untouched when the dtype already matches.
pub fn cast_owned(x: Tensor, to: DType) -> Tensor {
    if x.dtype() == to {
        x
    } else {
        cast(&x, to)
    }
}

pub fn constant(value: Scalar, dtype: DType) -> Tensor {
    let data = match value {
        Scalar::Float(f) => TensorData::from_f32(dtype, vec![f as f32]),
        Scalar::Int(i) => TensorData::from_i64(dtype, vec![i]),
        Scalar::Bool(b) => TensorData::from_i64(dtype, vec![b as i64]),
    };
    Tensor {
        shape: vec![],
        data,
    }
}

pub fn iota(len: i64, start: i64, dtype: DType) -> Result<Tensor, String> {
    let n = usize::try_from(len).map_err(|_| format!("iota length {len} is negative"))?;
    let v: Vec<i64> = (0..len).map(|i| start.wrapping_add(i)).collect();
    Ok(Tensor {
        shape: vec![n],
        data: TensorData::from_i64(dtype, v),
    })
}
