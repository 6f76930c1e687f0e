//! A size in a GEMM call: a constant, or a formula over the graph's symbols (the token count
//! `seq_len`, `4*n_merged`). It mirrors `vl3c_ir::Dim` term for term so `describe` copies a
//! node's shape losslessly, and it serializes, which `Dim` does not; the engine evaluates it
//! with the same symbol values (`Sizes`) the kernel templates are launched with.

use crate::templates::Sizes;
use serde::{Deserialize, Serialize};
use std::fmt;
use vl3c_ir::Dim;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extent {
    Const(i64),
    Sym(String),
    Add(Box<Extent>, Box<Extent>),
    Mul(Box<Extent>, Box<Extent>),
    /// Floor division by a positive divisor.
    FloorDiv(Box<Extent>, Box<Extent>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtentError {
    #[error("symbol `{0}` has no value")]
    Unbound(String),
    #[error("`{0}` divides by zero or a negative number")]
    BadDivisor(String),
    #[error("`{0}` overflows i64")]
    Overflow(String),
}

impl Extent {
    pub fn sym(name: &str) -> Extent {
        Extent::Sym(name.into())
    }

    pub fn as_const(&self) -> Option<i64> {
        match self {
            Extent::Const(v) => Some(*v),
            _ => None,
        }
    }

    pub fn eval(&self, sizes: &Sizes) -> Result<i64, ExtentError> {
        let overflow = || ExtentError::Overflow(self.to_string());
        Ok(match self {
            Extent::Const(v) => *v,
            Extent::Sym(s) => *sizes
                .get(s)
                .ok_or_else(|| ExtentError::Unbound(s.clone()))?,
            Extent::Add(a, b) => a
                .eval(sizes)?
                .checked_add(b.eval(sizes)?)
                .ok_or_else(overflow)?,
            Extent::Mul(a, b) => a
                .eval(sizes)?
                .checked_mul(b.eval(sizes)?)
                .ok_or_else(overflow)?,
            Extent::FloorDiv(a, b) => {
                let d = b.eval(sizes)?;
                if d <= 0 {
                    return Err(ExtentError::BadDivisor(self.to_string()));
                }
                a.eval(sizes)?.div_euclid(d)
            }
        })
    }

    /// `self · c`, folded when both are constants.
    pub fn times(&self, c: &Extent) -> Extent {
        match (self, c) {
            (Extent::Const(a), Extent::Const(b)) => Extent::Const(a * b),
            (Extent::Const(1), other) | (other, Extent::Const(1)) => other.clone(),
            _ => Extent::Mul(Box::new(self.clone()), Box::new(c.clone())),
        }
    }
}

impl From<i64> for Extent {
    fn from(v: i64) -> Extent {
        Extent::Const(v)
    }
}

impl From<&Dim> for Extent {
    fn from(d: &Dim) -> Extent {
        match d {
            Dim::Const(v) => Extent::Const(*v),
            Dim::Sym(s) => Extent::Sym(s.clone()),
            Dim::Add(a, b) => Extent::Add(Box::new((&**a).into()), Box::new((&**b).into())),
            Dim::Mul(a, b) => Extent::Mul(Box::new((&**a).into()), Box::new((&**b).into())),
            Dim::FloorDiv(a, b) => {
                Extent::FloorDiv(Box::new((&**a).into()), Box::new((&**b).into()))
            }
        }
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extent::Const(v) => write!(f, "{v}"),
            Extent::Sym(s) => write!(f, "{s}"),
            Extent::Add(a, b) => write!(f, "({a} + {b})"),
            Extent::Mul(a, b) => write!(f, "{a}*{b}"),
            Extent::FloorDiv(a, b) => write!(f, "floor({a} / {b})"),
        }
    }
}
