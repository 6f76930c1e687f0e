//! Pure per-thread expressions. Arithmetic operators are overloaded so templates read like the
//! CUDA they produce: `tid + bid * 256`.

use super::{Buf, Kernel, ParamId, Ty, VarId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    Bool(bool),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(#[serde(with = "f32_json")] f32),
}

/// JSON has no infinities or NaN (serde_json writes them as `null`, which does not read back),
/// and kernels use -inf as the max-reduction's start: those three are strings.
mod f32_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        match *x {
            x if x.is_finite() => x.serialize(s),
            x if x.is_nan() => "nan".serialize(s),
            x if x > 0.0 => "inf".serialize(s),
            _ => "-inf".serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f32),
        Word(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(x) => Ok(x),
            Repr::Word(w) => match w.as_str() {
                "nan" => Ok(f32::NAN),
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("`{other}` is not an f32"))),
            },
        }
    }
}

impl Lit {
    pub fn ty(self) -> Ty {
        match self {
            Lit::Bool(_) => Ty::Bool,
            Lit::I32(_) => Ty::I32,
            Lit::U32(_) => Ty::U32,
            Lit::I64(_) => Ty::I64,
            Lit::F32(_) => Ty::F32,
        }
    }
}

/// Built-in per-thread values, as CUDA names them; all `U32` except where noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Special {
    ThreadIdx(u8),
    BlockIdx(u8),
    BlockDim(u8),
    GridDim(u8),
    /// `threadIdx.x % 32` for one-dimensional blocks (templates keep warps in x).
    LaneId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnOp {
    Neg,
    /// Logical not (`Bool`) or bitwise not (integers).
    Not,
    Exp,
    Log,
    Sqrt,
    /// `rsqrtf`
    Rsqrt,
    Tanh,
    Erf,
    Abs,
    Sin,
    Cos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero, as C++.
    Div,
    Rem,
    Min,
    Max,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Lit(Lit),
    Var(VarId),
    /// A scalar parameter's value.
    Param(ParamId),
    Special(Special),
    Unary(UnOp, Box<Expr>),
    /// Both operands have the same type (comparisons give `Bool`).
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `fmaf(a, b, c)`, one rounding.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion: f32→bf16 rounds to nearest even; float→int truncates; ints widen by sign
    /// (`U32` by zero) and narrow by wrapping; bool→int is 0/1.
    Cast(Ty, Box<Expr>),
    /// `buf[index]` (index any integer type).
    Load(Buf, Box<Expr>),
    /// Two bf16 in one `U32`, `lo` in the low half: an mma operand register.
    PackBf16x2(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn f32(v: f32) -> Expr {
        Expr::Lit(Lit::F32(v))
    }
    pub fn i32(v: i32) -> Expr {
        Expr::Lit(Lit::I32(v))
    }
    pub fn u32(v: u32) -> Expr {
        Expr::Lit(Lit::U32(v))
    }
    pub fn i64(v: i64) -> Expr {
        Expr::Lit(Lit::I64(v))
    }
    pub fn bool(v: bool) -> Expr {
        Expr::Lit(Lit::Bool(v))
    }

    pub fn un(op: UnOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn cast(self, ty: Ty) -> Expr {
        Expr::Cast(ty, Box::new(self))
    }
    pub fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(cond), Box::new(a), Box::new(b))
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }
    pub fn load(buf: Buf, index: Expr) -> Expr {
        Expr::Load(buf, Box::new(index))
    }
    pub fn pack_bf16x2(lo: Expr, hi: Expr) -> Expr {
        Expr::PackBf16x2(Box::new(lo), Box::new(hi))
    }

    pub fn lt(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Lt, self, b)
    }
    pub fn le(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Le, self, b)
    }
    pub fn gt(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Gt, self, b)
    }
    pub fn ge(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Ge, self, b)
    }
    pub fn eq(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Eq, self, b)
    }
    pub fn ne(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Ne, self, b)
    }
    pub fn and(self, b: Expr) -> Expr {
        Expr::bin(BinOp::And, self, b)
    }
    pub fn or(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Or, self, b)
    }
    pub fn min(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Min, self, b)
    }
    pub fn max(self, b: Expr) -> Expr {
        Expr::bin(BinOp::Max, self, b)
    }
    pub fn exp(self) -> Expr {
        Expr::un(UnOp::Exp, self)
    }
    pub fn log(self) -> Expr {
        Expr::un(UnOp::Log, self)
    }
    pub fn sqrt(self) -> Expr {
        Expr::un(UnOp::Sqrt, self)
    }
    pub fn rsqrt(self) -> Expr {
        Expr::un(UnOp::Rsqrt, self)
    }
    pub fn tanh(self) -> Expr {
        Expr::un(UnOp::Tanh, self)
    }
    pub fn erf(self) -> Expr {
        Expr::un(UnOp::Erf, self)
    }
    pub fn abs(self) -> Expr {
        Expr::un(UnOp::Abs, self)
    }

    /// The expression's type, given the kernel it belongs to. Panics on an ill-typed
    /// expression: templates are Rust code, and a type error in one is a bug to fix there.
    pub fn ty(&self, k: &Kernel) -> Ty {
        match self {
            Expr::Lit(l) => l.ty(),
            Expr::Var(v) => k.var_ty(*v),
            Expr::Param(p) => match &k.params[p.0 as usize].kind {
                super::ParamKind::Scalar(t) => *t,
                super::ParamKind::Buffer { .. } => panic!(
                    "buffer param {} used as a value",
                    k.params[p.0 as usize].name
                ),
            },
            Expr::Special(_) => Ty::U32,
            Expr::Unary(UnOp::Not, a) | Expr::Unary(UnOp::Neg, a) | Expr::Unary(UnOp::Abs, a) => {
                a.ty(k)
            }
            Expr::Unary(_, _) => Ty::F32,
            Expr::Binary(op, a, _) if op.is_comparison() => {
                let _ = a;
                Ty::Bool
            }
            Expr::Binary(_, a, _) => a.ty(k),
            Expr::Fma(..) => Ty::F32,
            Expr::Select(_, a, _) => a.ty(k),
            Expr::Cast(t, _) => *t,
            Expr::Load(b, _) => k.buf_elem(*b),
            Expr::PackBf16x2(..) => Ty::U32,
        }
    }
}

macro_rules! arith {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl std::ops::$trait for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr { Expr::bin(BinOp::$op, self, rhs) }
        }
        impl std::ops::$trait<&Expr> for &Expr {
            type Output = Expr;
            fn $method(self, rhs: &Expr) -> Expr { Expr::bin(BinOp::$op, self.clone(), rhs.clone()) }
        }
    )*};
}
arith!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div, Rem rem Rem, BitAnd bitand BitAnd, BitOr bitor BitOr, BitXor bitxor BitXor, Shl shl Shl, Shr shr Shr);

impl std::ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        Expr::un(UnOp::Neg, self)
    }
}

#[cfg(test)]
mod tests {
    /// An engine stores its kernels as JSON and the loader runs what it reads back: every
    /// template kernel (with their -inf and f32 constants) must survive the trip unchanged.
    #[test]
    fn every_template_kernel_round_trips_through_json() {
        let mut kernels = 0;
        for case in crate::templates::cases() {
            for k in case.template.kernels() {
                let text = serde_json::to_string(&k).expect("serializes");
                let back: crate::kir::Kernel = serde_json::from_str(&text).expect("reads back");
                // Compared as text: a NaN literal is not equal to itself.
                assert_eq!(
                    serde_json::to_string(&back).expect("serializes"),
                    text,
                    "{}",
                    k.name
                );
                kernels += 1;
            }
        }
        assert!(kernels > 300, "{kernels} kernels");
        let lit: super::Lit = serde_json::from_str(r#"{"F32":"-inf"}"#).expect("reads");
        assert_eq!(lit, super::Lit::F32(f32::NEG_INFINITY));
    }
}
