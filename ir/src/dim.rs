//! Symbolic dimensions: integer expressions over named symbols with `+`, `×` and floor-division.
//!
//! Every constructor returns a simplified expression, so two dims are equal exactly when their
//! canonical forms are equal. The canonical form is a polynomial: a sum of monomials, each a
//! coefficient times a sorted product of atoms, where an atom is a symbol or an irreducible
//! floor-division.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Add, Mul};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Const(i64),
    Sym(String),
    Add(Box<Dim>, Box<Dim>),
    Mul(Box<Dim>, Box<Dim>),
    /// Floor division; the divisor is positive wherever the expression is evaluated.
    FloorDiv(Box<Dim>, Box<Dim>),
}

/// Inclusive range a symbol may take; shapes are checked against it at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: i64,
    pub max: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DimEvalError {
    Unbound(String),
    DivByZero(String),
    Overflow(String),
}

impl fmt::Display for DimEvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimEvalError::Unbound(s) => write!(f, "symbol `{s}` has no value"),
            DimEvalError::DivByZero(e) => write!(f, "division by zero in `{e}`"),
            DimEvalError::Overflow(e) => write!(f, "integer overflow in `{e}`"),
        }
    }
}

impl std::error::Error for DimEvalError {}

impl Dim {
    pub fn sym(name: impl Into<String>) -> Dim {
        Dim::Sym(name.into())
    }

    pub fn as_const(&self) -> Option<i64> {
        match self {
            Dim::Const(c) => Some(*c),
            _ => None,
        }
    }

    pub fn floor_div(self, rhs: impl Into<Dim>) -> Dim {
        Dim::FloorDiv(Box::new(self), Box::new(rhs.into())).simplify()
    }

    /// Canonical form; idempotent.
    /// An expression whose coefficients would overflow i64 is returned as it is, so that
    /// evaluating it reports the overflow instead of a wrapped value.
    pub fn simplify(&self) -> Dim {
        let p = Poly::from_dim(self);
        if p.1 {
            self.clone()
        } else {
            p.to_dim()
        }
    }

    pub fn symbols(&self, out: &mut Vec<String>) {
        match self {
            Dim::Const(_) => {}
            Dim::Sym(s) => {
                if !out.contains(s) {
                    out.push(s.clone())
                }
            }
            Dim::Add(a, b) | Dim::Mul(a, b) | Dim::FloorDiv(a, b) => {
                a.symbols(out);
                b.symbols(out);
            }
        }
    }

    pub fn eval(&self, env: &HashMap<String, i64>) -> Result<i64, DimEvalError> {
        let overflow = || DimEvalError::Overflow(self.to_string());
        Ok(match self {
            Dim::Const(c) => *c,
            Dim::Sym(s) => *env.get(s).ok_or_else(|| DimEvalError::Unbound(s.clone()))?,
            Dim::Add(a, b) => a
                .eval(env)?
                .checked_add(b.eval(env)?)
                .ok_or_else(overflow)?,
            Dim::Mul(a, b) => a
                .eval(env)?
                .checked_mul(b.eval(env)?)
                .ok_or_else(overflow)?,
            Dim::FloorDiv(a, b) => {
                let d = b.eval(env)?;
                if d == 0 {
                    return Err(DimEvalError::DivByZero(self.to_string()));
                }
                a.eval(env)?.div_euclid(d)
                    - if d < 0 && a.eval(env)?.rem_euclid(d) != 0 {
                        1
                    } else {
                        0
                    }
            }
        })
    }

    /// Interval of values the expression can take when every symbol lies in its bounds.
    /// Symbols without bounds make the result `None`.
    pub fn bounds(&self, of: &dyn Fn(&str) -> Option<Bounds>) -> Option<Bounds> {
        Some(match self {
            Dim::Const(c) => Bounds { min: *c, max: *c },
            Dim::Sym(s) => of(s)?,
            Dim::Add(a, b) => {
                let (a, b) = (a.bounds(of)?, b.bounds(of)?);
                Bounds {
                    min: a.min.checked_add(b.min)?,
                    max: a.max.checked_add(b.max)?,
                }
            }
            Dim::Mul(a, b) => {
                let (a, b) = (a.bounds(of)?, b.bounds(of)?);
                let c = [
                    a.min.checked_mul(b.min)?,
                    a.min.checked_mul(b.max)?,
                    a.max.checked_mul(b.min)?,
                    a.max.checked_mul(b.max)?,
                ];
                Bounds {
                    min: *c.iter().min()?,
                    max: *c.iter().max()?,
                }
            }
            Dim::FloorDiv(a, b) => {
                let (a, b) = (a.bounds(of)?, b.bounds(of)?);
                if b.min <= 0 {
                    return None;
                }
                let c = [
                    a.min.div_euclid(b.min),
                    a.min.div_euclid(b.max),
                    a.max.div_euclid(b.min),
                    a.max.div_euclid(b.max),
                ];
                Bounds {
                    min: *c.iter().min()?,
                    max: *c.iter().max()?,
                }
            }
        })
    }
}

impl From<i64> for Dim {
    fn from(c: i64) -> Dim {
        Dim::Const(c)
    }
}

impl From<usize> for Dim {
    fn from(c: usize) -> Dim {
        Dim::Const(c as i64)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::Sym(s.to_string())
    }
}

impl<T: Into<Dim>> Add<T> for Dim {
    type Output = Dim;
    fn add(self, rhs: T) -> Dim {
        Dim::Add(Box::new(self), Box::new(rhs.into())).simplify()
    }
}

impl<T: Into<Dim>> Mul<T> for Dim {
    type Output = Dim;
    fn mul(self, rhs: T) -> Dim {
        Dim::Mul(Box::new(self), Box::new(rhs.into())).simplify()
    }
}

/// An atom of a monomial: a symbol or an irreducible floor-division of two canonical dims.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Atom {
    Sym(String),
    Div(Dim, Dim),
}

/// Sum of `coefficient × Π atoms`; the empty product is the constant term. No zero coefficients.
/// The flag records that a coefficient overflowed i64: such a polynomial is not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Poly(BTreeMap<Vec<Atom>, i64>, bool);

impl Poly {
    fn constant(c: i64) -> Poly {
        let mut p = Poly::default();
        p.add_term(Vec::new(), c);
        p
    }

    fn add_term(&mut self, atoms: Vec<Atom>, coef: i64) {
        if coef == 0 {
            return;
        }
        let entry = self.0.entry(atoms).or_insert(0);
        match entry.checked_add(coef) {
            Some(sum) => *entry = sum,
            None => self.1 = true,
        }
        if *entry == 0 {
            self.0.retain(|_, c| *c != 0);
        }
    }

    fn as_const(&self) -> Option<i64> {
        match self.0.len() {
            0 => Some(0),
            1 => self.0.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    fn plus(mut self, other: &Poly) -> Poly {
        self.1 |= other.1;
        for (atoms, c) in &other.0 {
            self.add_term(atoms.clone(), *c);
        }
        self
    }

    fn times(&self, other: &Poly) -> Poly {
        let mut out = Poly(BTreeMap::new(), self.1 || other.1);
        for (a, ca) in &self.0 {
            for (b, cb) in &other.0 {
                let mut atoms: Vec<Atom> = a.iter().chain(b.iter()).cloned().collect();
                atoms.sort();
                match ca.checked_mul(*cb) {
                    Some(c) => out.add_term(atoms, c),
                    None => out.1 = true,
                }
            }
        }
        out
    }

    fn div(&self, den: &Poly) -> Poly {
        if self.1 || den.1 {
            return Poly(BTreeMap::new(), true);
        }
        if let Some(d) = den.as_const() {
            if d == 1 {
                return self.clone();
            }
            if d > 0 {
                if let Some(n) = self.as_const() {
                    return Poly::constant(n.div_euclid(d));
                }
                if self.0.values().all(|c| c % d == 0) {
                    return Poly(
                        self.0.iter().map(|(a, c)| (a.clone(), c / d)).collect(),
                        self.1,
                    );
                }
                // (d·q + r) / d = q  when every non-constant coefficient divides by d and 0 <= r < d
                let constant = self.0.get(&Vec::new()).copied().unwrap_or(0);
                if (0..d).contains(&constant)
                    && self.0.iter().all(|(a, c)| a.is_empty() || c % d == 0)
                {
                    return Poly(
                        self.0
                            .iter()
                            .filter(|(a, _)| !a.is_empty())
                            .map(|(a, c)| (a.clone(), c / d))
                            .collect(),
                        self.1,
                    );
                }
                // (a / b) / c = a / (b·c) for positive constants
                if self.0.len() == 1 {
                    if let Some((atoms, 1)) = self.0.iter().next().map(|(a, c)| (a, *c)) {
                        if let [Atom::Div(n, Dim::Const(b))] = atoms.as_slice() {
                            if let Some(bd) = b.checked_mul(d) {
                                return Poly::from_dim(n).div(&Poly::constant(bd));
                            }
                        }
                    }
                }
            }
        }
        if self == den && den.as_const() != Some(0) {
            return Poly::constant(1);
        }
        // exact division by a monomial: x·y / y = x
        if den.0.len() == 1 {
            let (den_atoms, den_coef) = den.0.iter().next().expect("one term");
            if *den_coef > 0 && !den_atoms.is_empty() {
                let mut q = Poly::default();
                let mut exact = true;
                for (atoms, c) in &self.0 {
                    let mut rest = atoms.clone();
                    for a in den_atoms {
                        match rest.iter().position(|x| x == a) {
                            Some(i) => {
                                rest.remove(i);
                            }
                            None => exact = false,
                        }
                    }
                    if !exact || c % den_coef != 0 {
                        exact = false;
                        break;
                    }
                    q.add_term(rest, c / den_coef);
                }
                if exact {
                    return q;
                }
            }
        }
        let mut p = Poly::default();
        p.add_term(vec![Atom::Div(self.to_dim(), den.to_dim())], 1);
        p
    }

    fn from_dim(d: &Dim) -> Poly {
        match d {
            Dim::Const(c) => Poly::constant(*c),
            Dim::Sym(s) => {
                let mut p = Poly::default();
                p.add_term(vec![Atom::Sym(s.clone())], 1);
                p
            }
            Dim::Add(a, b) => Poly::from_dim(a).plus(&Poly::from_dim(b)),
            Dim::Mul(a, b) => Poly::from_dim(a).times(&Poly::from_dim(b)),
            Dim::FloorDiv(a, b) => Poly::from_dim(a).div(&Poly::from_dim(b)),
        }
    }

    fn to_dim(&self) -> Dim {
        let mut terms = self.0.iter().rev().map(|(atoms, coef)| {
            let mut factors = atoms.iter().map(|a| match a {
                Atom::Sym(s) => Dim::Sym(s.clone()),
                Atom::Div(n, d) => Dim::FloorDiv(Box::new(n.clone()), Box::new(d.clone())),
            });
            let first = if *coef == 1 {
                factors.next()
            } else {
                Some(Dim::Const(*coef))
            };
            match first {
                None => Dim::Const(*coef),
                Some(f) => factors.fold(f, |acc, x| Dim::Mul(Box::new(acc), Box::new(x))),
            }
        });
        match terms.next() {
            None => Dim::Const(0),
            Some(first) => terms.fold(first, |acc, t| Dim::Add(Box::new(acc), Box::new(t))),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn prec(d: &Dim) -> u8 {
            match d {
                Dim::Add(..) => 1,
                Dim::Mul(..) | Dim::FloorDiv(..) => 2,
                Dim::Const(c) if *c < 0 => 2,
                _ => 3,
            }
        }
        fn child(f: &mut fmt::Formatter<'_>, d: &Dim, min: u8) -> fmt::Result {
            if prec(d) < min {
                write!(f, "({d})")
            } else {
                write!(f, "{d}")
            }
        }
        match self {
            Dim::Const(c) => write!(f, "{c}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Add(a, b) => {
                child(f, a, 1)?;
                f.write_str(" + ")?;
                child(f, b, 2)
            }
            Dim::Mul(a, b) => {
                child(f, a, 2)?;
                f.write_str("*")?;
                child(f, b, 3)
            }
            Dim::FloorDiv(a, b) => {
                child(f, a, 2)?;
                f.write_str("/")?;
                child(f, b, 3)
            }
        }
    }
}
