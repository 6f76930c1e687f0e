//! Symbol binding: solves the graph's symbols from concrete shapes (inputs and caches first,
//! then data-dependent results such as masked-select row counts) and checks their bounds.

use std::collections::HashMap;
use vl3c_ir::{Dim, Graph};

/// A binding that broke a symbol's declared bounds.
pub struct OutOfBounds {
    pub symbol: String,
    pub value: i64,
    pub min: i64,
    pub max: i64,
}

pub struct Binder<'g> {
    graph: &'g Graph,
    pub env: HashMap<String, i64>,
}

impl<'g> Binder<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        Binder {
            graph,
            env: HashMap::new(),
        }
    }

    fn unbound(&self, d: &Dim) -> Vec<String> {
        let mut syms = Vec::new();
        d.symbols(&mut syms);
        syms.retain(|s| !self.env.contains_key(s));
        syms
    }

    /// The value of `sym` that makes `d` equal `target`, when `d` is affine in it (`c·s + k`
    /// once the other symbols are substituted).
    fn solve(&self, d: &Dim, sym: &str, target: i64) -> Option<i64> {
        let at = |v: i64| {
            let mut env = self.env.clone();
            env.insert(sym.to_string(), v);
            d.eval(&env).ok()
        };
        let k = at(0)?;
        let c = at(1)?.checked_sub(k)?;
        if c == 0 || (target.checked_sub(k)?) % c != 0 {
            return None;
        }
        let s = (target - k) / c;
        (at(s)? == target).then_some(s)
    }

    /// Binds every symbol that a dim of `dims` alone leaves unknown; true if any was bound.
    /// A dim that cannot be solved is left for `matches` to report.
    pub fn bind_from(&mut self, dims: &[Dim], actual: &[usize]) -> Result<bool, OutOfBounds> {
        let mut progress = false;
        for (d, &a) in dims.iter().zip(actual) {
            let free = self.unbound(d);
            if let [sym] = free.as_slice() {
                if let Some(v) = self.solve(d, sym, a as i64) {
                    self.bind(sym, v)?;
                    progress = true;
                }
            }
        }
        Ok(progress)
    }

    pub fn bind(&mut self, sym: &str, value: i64) -> Result<(), OutOfBounds> {
        if let Some(b) = self.graph.symbol_bounds(sym) {
            if value < b.min || value > b.max {
                return Err(OutOfBounds {
                    symbol: sym.to_string(),
                    value,
                    min: b.min,
                    max: b.max,
                });
            }
        }
        self.env.insert(sym.to_string(), value);
        Ok(())
    }

    pub fn matches(&self, dims: &[Dim], actual: &[usize]) -> bool {
        dims.len() == actual.len()
            && dims
                .iter()
                .zip(actual)
                .all(|(d, &a)| d.eval(&self.env) == Ok(a as i64))
    }

    /// Evaluates dims, naming the first symbol that has no value.
    pub fn eval(&self, d: &Dim) -> Result<i64, String> {
        d.eval(&self.env)
            .map_err(|e| format!("cannot evaluate `{d}`: {e}"))
    }

    pub fn eval_shape(&self, dims: &[Dim]) -> Result<Vec<usize>, String> {
        dims.iter()
            .map(|d| {
                let v = self.eval(d)?;
                usize::try_from(v).map_err(|_| format!("dim `{d}` = {v} is negative"))
            })
            .collect()
    }

    /// `[4*n_merged = 8, 588]`: every symbolic dim with its value where known.
    pub fn describe(&self, dims: &[Dim]) -> String {
        let parts: Vec<String> = dims
            .iter()
            .map(|d| match (d.as_const(), d.eval(&self.env)) {
                (Some(c), _) => c.to_string(),
                (None, Ok(v)) => format!("{d} = {v}"),
                (None, Err(_)) => d.to_string(),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}
