//! Index arithmetic for the shape-driven templates: symbolic dims as KIR expressions, and an
//! element's position as a flat row-major index, a multi-index, or both, converted lazily so a
//! chain of same-shape elementwise ops never pays for div/mod.

use crate::kir::{BinOp, Expr, KernelBuilder, Lit};
use std::collections::BTreeMap;
use vl3c_ir::Dim;

/// The scalar parameter (I64) of each symbol a kernel's dims mention, by name.
pub(crate) type Symbols = BTreeMap<String, Expr>;

/// Every symbol the dims mention, in first-seen order.
pub(crate) fn symbols_of<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Vec<String> {
    let mut out = Vec::new();
    for d in dims {
        d.symbols(&mut out);
    }
    out
}

/// Declares one I64 scalar parameter per symbol, named like it, in sorted order.
pub(crate) fn declare_symbols(b: &mut KernelBuilder, names: &[String]) -> Symbols {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
        .into_iter()
        .map(|s| (s.clone(), b.scalar(s, crate::kir::Ty::I64)))
        .collect()
}

fn as_i64(e: &Expr) -> Option<i64> {
    match e {
        Expr::Lit(Lit::I64(v)) => Some(*v),
        _ => None,
    }
}

/// `a + b` on I64 with literal folding, so constant shapes bake into constants.
pub(crate) fn add(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) => Expr::i64(x.wrapping_add(y)),
        (Some(0), _) => b,
        (_, Some(0)) => a,
        _ => a + b,
    }
}

pub(crate) fn sub(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) => Expr::i64(x.wrapping_sub(y)),
        (_, Some(0)) => a,
        _ => a - b,
    }
}

pub(crate) fn mul(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) => Expr::i64(x.wrapping_mul(y)),
        (Some(0), _) | (_, Some(0)) => Expr::i64(0),
        (Some(1), _) => b,
        (_, Some(1)) => a,
        _ => a * b,
    }
}

/// Division of non-negative I64 values (dims and indices), where truncation is floor division.
pub(crate) fn div(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) if y != 0 => Expr::i64(x.div_euclid(y)),
        (Some(0), _) => Expr::i64(0),
        (_, Some(1)) => a,
        _ => a / b,
    }
}

pub(crate) fn rem(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) if y != 0 => Expr::i64(x.rem_euclid(y)),
        (_, Some(1)) => Expr::i64(0),
        _ => a % b,
    }
}

/// `a < b`, folded when both are literals.
pub(crate) fn lt(a: Expr, b: Expr) -> Expr {
    match (as_i64(&a), as_i64(&b)) {
        (Some(x), Some(y)) => Expr::bool(x < y),
        _ => Expr::bin(BinOp::Lt, a, b),
    }
}

/// A dim as an I64 expression over the symbols' parameters. Dims are non-negative, so C++'s
/// truncating division is the IR's floor division.
pub(crate) fn dim(d: &Dim, syms: &Symbols) -> Expr {
    match d {
        Dim::Const(c) => Expr::i64(*c),
        Dim::Sym(s) => syms
            .get(s)
            .unwrap_or_else(|| panic!("symbol `{s}` was not declared as a kernel parameter"))
            .clone(),
        Dim::Add(a, b) => add(dim(a, syms), dim(b, syms)),
        Dim::Mul(a, b) => mul(dim(a, syms), dim(b, syms)),
        Dim::FloorDiv(a, b) => div(dim(a, syms), dim(b, syms)),
    }
}

pub(crate) fn dims(shape: &[Dim], syms: &Symbols) -> Vec<Expr> {
    shape.iter().map(|d| dim(d, syms)).collect()
}

/// The number of elements of a shape.
pub(crate) fn numel(shape: &[Expr]) -> Expr {
    shape.iter().cloned().fold(Expr::i64(1), mul)
}

/// Where one element lies in a tensor of a known shape: its flat row-major index, its
/// multi-index, or both. Whichever is missing is computed on first use and kept in registers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Index {
    flat: Option<Expr>,
    multi: Option<Vec<Expr>>,
}

impl Index {
    pub fn flat(flat: Expr) -> Index {
        Index {
            flat: Some(flat),
            multi: None,
        }
    }

    pub fn multi(multi: Vec<Expr>) -> Index {
        Index {
            flat: None,
            multi: Some(multi),
        }
    }

    /// The multi-index in `shape` (the tensor's dims), by div/mod of the flat index. The parts
    /// are expressions, not registers: a consumer that reads only some of them leaves no unused
    /// declarations, and CUDA's compiler shares the common divisions.
    pub fn get_multi(&mut self, shape: &[Expr]) -> Vec<Expr> {
        if let Some(m) = &self.multi {
            return m.clone();
        }
        let flat = self
            .flat
            .clone()
            .expect("an index has a flat or a multi form");
        let mut out = vec![Expr::i64(0); shape.len()];
        let mut stride = Expr::i64(1);
        for i in (0..shape.len()).rev() {
            if as_i64(&shape[i]) == Some(1) {
                continue;
            }
            let above = div(flat.clone(), stride.clone());
            out[i] = if i == 0 {
                above
            } else {
                rem(above, shape[i].clone())
            };
            stride = mul(stride, shape[i].clone());
        }
        self.multi = Some(out.clone());
        out
    }

    /// The flat row-major index in `shape`, by Horner's rule over the multi-index.
    pub fn get_flat(&mut self, b: &mut KernelBuilder, shape: &[Expr]) -> Expr {
        if let Some(f) = &self.flat {
            return f.clone();
        }
        let multi = self
            .multi
            .clone()
            .expect("an index has a flat or a multi form");
        let flat = multi.iter().zip(shape).fold(Expr::i64(0), |acc, (m, d)| {
            add(mul(acc, d.clone()), m.clone())
        });
        let flat = if matches!(flat, Expr::Lit(_) | Expr::Var(_)) {
            flat
        } else {
            b.let_("flat", flat)
        };
        self.flat = Some(flat.clone());
        flat
    }

    /// Forms this index already has, for memoising by position.
    pub fn key(&self) -> (Option<&Expr>, Option<&[Expr]>) {
        (self.flat.as_ref(), self.multi.as_deref())
    }
}

/// The multi-index of an operand of shape `from` that numpy broadcasting reads for the element
/// `multi` of shape `to` (missing leading dims dropped, size-1 dims pinned to 0).
pub(crate) fn broadcast_index(from: &[Dim], to: &[Dim], multi: &[Expr]) -> Vec<Expr> {
    let lead = to.len() - from.len();
    from.iter()
        .enumerate()
        .map(|(i, d)| {
            if *d == Dim::Const(1) && to[i + lead] != Dim::Const(1) {
                Expr::i64(0)
            } else {
                multi[i + lead].clone()
            }
        })
        .collect()
}

/// True when reading an operand of shape `from` for the result of shape `to` is the identity.
pub(crate) fn same_shape(from: &[Dim], to: &[Dim]) -> bool {
    from == to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_arithmetic_folds() {
        assert_eq!(mul(Expr::i64(3), Expr::i64(4)), Expr::i64(12));
        assert_eq!(add(Expr::i64(0), Expr::i64(5)), Expr::i64(5));
        assert_eq!(div(Expr::i64(7), Expr::i64(2)), Expr::i64(3));
        assert_eq!(rem(Expr::i64(7), Expr::i64(2)), Expr::i64(1));
        assert_eq!(lt(Expr::i64(1), Expr::i64(2)), Expr::bool(true));
    }

    #[test]
    fn broadcasting_pins_size_one_dims() {
        let from = vec![Dim::Const(1), Dim::sym("n")];
        let to = vec![Dim::Const(4), Dim::Const(3), Dim::sym("n")];
        let m = vec![Expr::i64(9), Expr::i64(2), Expr::i64(5)];
        assert_eq!(
            broadcast_index(&from, &to, &m),
            vec![Expr::i64(0), Expr::i64(5)]
        );
    }
}
