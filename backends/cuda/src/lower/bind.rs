//! Binding an instance's symbols at launch: a loader knows the shapes of the buffers a step's
//! inputs name, and the instance's reference graph (stored in the plan) says which dimension of
//! which input each symbol is. Plain symbols bind from the first input that has them; a dimension
//! linear in one unbound symbol (`4*n_merged`, `n+1`) is solved for it; every dimension is then
//! checked, so one that disagrees is an error, and every value must lie within its bounds.

use crate::templates::Sizes;
use std::collections::{BTreeMap, HashMap};
use vl3c_ir::{Dim, Graph, Op};

/// The instance's symbols bound from `shapes`: every input's actual shape, and the outputs'
/// where the caller knows them (the engine graph's type of the step's node, unless its length
/// depends on the data, like the rows a mask keeps). A KV cache is one buffer that the instance
/// reads and appends to under the same name: its shape here is the one read. Symbols nothing
/// determines are left out.
pub fn bind_symbols(
    reference: &Graph,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Sizes, String> {
    let mut inputs: Vec<(&str, &[Dim])> = reference
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Input { name } | Op::CacheRead { name } => {
                Some((name.as_str(), n.ty.shape.as_slice()))
            }
            _ => None,
        })
        .collect();
    for (name, id) in &reference.outputs {
        if shapes.contains_key(name) && !inputs.iter().any(|(n, _)| n == name) {
            inputs.push((name.as_str(), reference.ty(*id).shape.as_slice()));
        }
    }
    let mut env: HashMap<String, i64> = HashMap::new();
    for (name, dims) in &inputs {
        let actual = shapes
            .get(*name)
            .ok_or_else(|| format!("input `{name}` has no buffer"))?;
        if actual.len() != dims.len() {
            return Err(format!(
                "`{name}` is {actual:?}, the instance has rank {}",
                dims.len()
            ));
        }
        for (d, &a) in dims.iter().zip(actual) {
            if let Dim::Sym(s) = d {
                let a = i64::try_from(a)
                    .map_err(|_| format!("`{name}`: dimension {a} is too large"))?;
                if let Some(&old) = env.get(s) {
                    if old != a {
                        return Err(format!("`{s}` is {old} by one buffer and {a} by `{name}`"));
                    }
                }
                env.insert(s.clone(), a);
            }
        }
    }
    // Solve linear dimensions for their one unbound symbol until nothing changes.
    loop {
        let mut progress = false;
        for (name, dims) in &inputs {
            for (d, &a) in dims.iter().zip(&shapes[*name]) {
                if let Some((sym, v)) = solve_linear(d, a as i64, &env) {
                    env.insert(sym, v);
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    for (name, dims) in &inputs {
        let actual = &shapes[*name];
        for (d, &a) in dims.iter().zip(actual) {
            match d.eval(&env) {
                Ok(v) if v == a as i64 => {}
                Ok(v) => {
                    return Err(format!(
                        "`{name}`: dimension `{d}` = {v}, the buffer has {a}"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "`{name}`: dimension `{d}` cannot be bound from the shapes alone"
                    ))
                }
            }
        }
    }
    for decl in &reference.symbols {
        if let Some(&v) = env.get(&decl.name) {
            if v < decl.bounds.min || v > decl.bounds.max {
                return Err(format!(
                    "`{}` = {v} is outside [{}, {}]",
                    decl.name, decl.bounds.min, decl.bounds.max
                ));
            }
        }
    }
    Ok(env.into_iter().collect())
}

/// `(s, v)` when `d` has exactly one symbol `s` not in `env`, is linear in it (`a·s + b`, a ≠ 0)
/// and `a·v + b = actual` has an integer solution.
fn solve_linear(d: &Dim, actual: i64, env: &HashMap<String, i64>) -> Option<(String, i64)> {
    let mut syms = Vec::new();
    d.symbols(&mut syms);
    syms.sort();
    syms.dedup();
    let mut free = syms.into_iter().filter(|s| !env.contains_key(s));
    let s = free.next()?;
    if free.next().is_some() {
        return None;
    }
    let at = |x: i64| {
        let mut e = env.clone();
        e.insert(s.clone(), x);
        d.eval(&e).ok()
    };
    let (f0, f1, f2) = (at(0)?, at(1)?, at(2)?);
    let a = f1 - f0;
    if a == 0 || f2 - f1 != a || (actual - f0) % a != 0 {
        return None;
    }
    Some((s, (actual - f0) / a))
}
