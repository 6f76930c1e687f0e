//! Structural and type checks of a whole graph, and binding symbols from concrete input shapes.

use crate::infer::infer_type;
use crate::text::is_ident;
use crate::{Dim, Graph, IrError, NodeId, Op, TensorType};
use std::collections::HashMap;

fn graph_err(op: &str, message: String) -> IrError {
    IrError {
        node: None,
        op: op.to_string(),
        message,
    }
}

/// Every dim an op carries in its attributes.
fn op_dims(op: &Op) -> Vec<&Dim> {
    match op {
        Op::Iota { len, start, .. } => vec![len, start],
        Op::Reshape { shape } | Op::Broadcast { shape } => shape.iter().collect(),
        Op::Slice { start, end, .. } => vec![start, end],
        Op::MaskedSelect { len }
        | Op::VisionPositionIds { len }
        | Op::SegmentIds { len }
        | Op::DiffFramePrune { len, .. } => vec![len],
        _ => Vec::new(),
    }
}

/// Checks the graph: SSA order, arity, recorded types against the type rules, declared symbols,
/// unique input/cache/output names and cache appends that match a cache read.
pub fn verify(g: &Graph) -> Result<(), IrError> {
    for (i, s) in g.symbols.iter().enumerate() {
        if !is_ident(&s.name) {
            return Err(graph_err(
                "sym",
                format!("symbol name `{}` is not an identifier", s.name),
            ));
        }
        if g.symbols[..i].iter().any(|t| t.name == s.name) {
            return Err(graph_err(
                "sym",
                format!("symbol `{}` declared twice", s.name),
            ));
        }
        if s.bounds.min > s.bounds.max {
            return Err(graph_err(
                "sym",
                format!(
                    "symbol `{}` has empty range [{}, {}]",
                    s.name, s.bounds.min, s.bounds.max
                ),
            ));
        }
    }
    let bounds = |s: &str| g.symbol_bounds(s);
    let mut inputs: HashMap<&str, NodeId> = HashMap::new();
    let mut caches: HashMap<&str, NodeId> = HashMap::new();
    let mut weights: HashMap<&str, NodeId> = HashMap::new();
    let mut appends: HashMap<&str, NodeId> = HashMap::new();
    for id in g.node_ids() {
        let node = g.node(id);
        let err = |message: String| IrError {
            node: Some(id),
            op: node.op.mnemonic().to_string(),
            message,
        };
        if let Some(bad) = node.inputs.iter().find(|i| i.index() >= id.index()) {
            return Err(err(format!(
                "operand {bad} is not defined before this node"
            )));
        }
        let mut syms = Vec::new();
        node.ty
            .shape
            .iter()
            .chain(op_dims(&node.op))
            .for_each(|d| d.symbols(&mut syms));
        if let Some(s) = syms.iter().find(|s| g.symbol_bounds(s).is_none()) {
            return Err(err(format!("symbol `{s}` is not declared")));
        }
        for (axis, d) in node.ty.shape.iter().enumerate() {
            if d.bounds(&bounds).is_some_and(|b| b.max < 0) {
                return Err(err(format!(
                    "dim {axis} of {} is negative for every value of its symbols",
                    node.ty
                )));
            }
        }
        match &node.op {
            op if op.is_source() => {
                if !node.inputs.is_empty() {
                    return Err(err(format!(
                        "source ops take no operands, got {}",
                        node.inputs.len()
                    )));
                }
            }
            op => {
                let operand_types: Vec<&TensorType> =
                    node.inputs.iter().map(|i| g.ty(*i)).collect();
                let inferred = infer_type(op, &operand_types).map_err(err)?;
                if inferred.dtype != node.ty.dtype
                    || !crate::shapes_equal(&inferred.shape, &node.ty.shape)
                {
                    return Err(err(format!(
                        "recorded type {} differs from the inferred type {inferred}",
                        node.ty
                    )));
                }
            }
        }
        match &node.op {
            Op::Input { name } => {
                if let Some(first) = inputs.insert(name, id) {
                    return Err(err(format!("input `{name}` is also declared by {first}")));
                }
            }
            Op::CacheRead { name } => {
                if node.ty.rank() < 2 {
                    return Err(err(format!(
                        "cache `{name}` must have rank >= 2 (heads, positions, ..), got {}",
                        node.ty
                    )));
                }
                if let Some(first) = caches.insert(name, id) {
                    return Err(err(format!("cache `{name}` is also read by {first}")));
                }
            }
            Op::Weight { name } => {
                if let Some(&first) = weights.get(name.as_str()) {
                    if g.ty(first) != &node.ty {
                        return Err(err(format!(
                            "weight `{name}` is {} here but {} at {first}",
                            node.ty,
                            g.ty(first)
                        )));
                    }
                } else {
                    weights.insert(name, id);
                }
            }
            Op::CacheAppend { name, axis } => {
                let Some(read) = caches.get(name.as_str()) else {
                    return Err(err(format!(
                        "cache `{name}` is appended to but never read before"
                    )));
                };
                if let Some(first) = appends.insert(name, id) {
                    return Err(err(format!(
                        "cache `{name}` is also appended to by {first}"
                    )));
                }
                let state = g.ty(*read);
                let fits = state.dtype == node.ty.dtype
                    && state.rank() == node.ty.rank()
                    && (0..state.rank()).all(|i| {
                        i == *axis
                            || crate::shapes_equal(&state.shape[i..=i], &node.ty.shape[i..=i])
                    });
                if !fits {
                    return Err(err(format!(
                        "result {} does not fit cache `{name}` read as {state} at {read}",
                        node.ty
                    )));
                }
            }
            _ => {}
        }
    }
    for (i, (name, id)) in g.outputs.iter().enumerate() {
        if id.index() >= g.nodes.len() {
            return Err(graph_err(
                "output",
                format!(
                    "output `{name}` refers to {id}, but the graph has {} nodes",
                    g.nodes.len()
                ),
            ));
        }
        if g.outputs[..i].iter().any(|(n, _)| n == name) {
            return Err(graph_err(
                "output",
                format!("output `{name}` is declared twice"),
            ));
        }
    }
    Ok(())
}

fn flatten<'a>(d: &'a Dim, add: bool, out: &mut Vec<&'a Dim>) {
    match d {
        Dim::Add(a, b) if add => {
            flatten(a, add, out);
            flatten(b, add, out);
        }
        Dim::Mul(a, b) if !add => {
            flatten(a, add, out);
            flatten(b, add, out);
        }
        _ => out.push(d),
    }
}

fn mentions(d: &Dim, s: &str) -> bool {
    let mut syms = Vec::new();
    d.symbols(&mut syms);
    syms.iter().any(|x| x == s)
}

/// `d` as `coef*s + rest` with neither part mentioning `s`, when `d` is linear in `s`.
fn split_linear(d: &Dim, s: &str) -> Option<(Dim, Dim)> {
    let d = d.simplify();
    let mut terms = Vec::new();
    flatten(&d, true, &mut terms);
    let (mut coef, mut rest) = (Dim::Const(0), Dim::Const(0));
    for t in terms {
        let mut factors = Vec::new();
        flatten(t, false, &mut factors);
        let is_s = |f: &Dim| matches!(f, Dim::Sym(x) if x == s);
        if factors.iter().filter(|f| is_s(f)).count() > 1
            || factors.iter().any(|f| !is_s(f) && mentions(f, s))
        {
            return None;
        }
        if factors.iter().any(|f| is_s(f)) {
            coef = coef
                + factors
                    .iter()
                    .filter(|f| !is_s(f))
                    .fold(Dim::Const(1), |acc, f| acc * (*f).clone());
        } else {
            rest = rest + t.clone();
        }
    }
    Some((coef, rest))
}

impl Graph {
    pub fn verify(&self) -> Result<(), IrError> {
        verify(self)
    }

    /// Binds symbols from the concrete shapes of inputs and cache reads (named as in the graph):
    /// every dim linear in one unbound symbol is solved for it, then every given shape is checked
    /// against the bound values. Every graph input must be given; cache reads may be left out.
    pub fn symbol_values(
        &self,
        inputs: &[(&str, &[usize])],
    ) -> Result<HashMap<String, i64>, IrError> {
        let mut given: Vec<(NodeId, &str, &TensorType, Vec<i64>)> = Vec::new();
        for (name, shape) in inputs {
            let found = self
                .node_ids()
                .find(|id| matches!(&self.node(*id).op, Op::Input { name: n } if n == name))
                .or_else(|| {
                    self.node_ids().find(
                        |id| matches!(&self.node(*id).op, Op::CacheRead { name: n } if n == name),
                    )
                });
            let Some(id) = found else {
                return Err(graph_err(
                    "input",
                    format!("the graph has no input or cache named `{name}`"),
                ));
            };
            if given.iter().any(|(g, ..)| *g == id) {
                return Err(graph_err("input", format!("`{name}` is given twice")));
            }
            let ty = self.ty(id);
            let err = |message: String| IrError {
                node: Some(id),
                op: self.node(id).op.mnemonic().into(),
                message,
            };
            let kind = if matches!(self.node(id).op, Op::Input { .. }) {
                "input"
            } else {
                "cache"
            };
            if shape.len() != ty.rank() {
                return Err(err(format!(
                    "{kind} `{name}` has shape {shape:?} but the graph expects {ty}"
                )));
            }
            let shape = shape.iter().map(|&v| {
                i64::try_from(v).map_err(|_| err(format!("{kind} `{name}` dim {v} is too large")))
            });
            given.push((id, kind, ty, shape.collect::<Result<_, _>>()?));
        }
        if let Some((id, name, _)) = self
            .inputs()
            .find(|(id, ..)| !given.iter().any(|(g, ..)| g == id))
        {
            return Err(IrError {
                node: Some(id),
                op: "input".into(),
                message: format!("input `{name}` was not given"),
            });
        }
        let name_of = |id: NodeId| match &self.node(id).op {
            Op::Input { name } | Op::CacheRead { name } => name.as_str(),
            _ => unreachable!("only inputs and cache reads are given"),
        };
        let mut env: HashMap<String, i64> = HashMap::new();
        let mut progress = true;
        while progress {
            progress = false;
            for (id, kind, ty, shape) in &given {
                let err = |message: String| IrError {
                    node: Some(*id),
                    op: self.node(*id).op.mnemonic().into(),
                    message,
                };
                for (axis, (d, &v)) in ty.shape.iter().zip(shape).enumerate() {
                    let mut syms = Vec::new();
                    d.symbols(&mut syms);
                    syms.retain(|s| !env.contains_key(s));
                    let [s] = syms.as_slice() else { continue };
                    let Some((coef, rest)) = split_linear(d, s) else {
                        continue;
                    };
                    let (Ok(c), Ok(k)) = (coef.eval(&env), rest.eval(&env)) else {
                        continue;
                    };
                    if c == 0 {
                        continue;
                    }
                    let name = name_of(*id);
                    if (v - k) % c != 0 {
                        return Err(err(format!(
                            "{kind} `{name}` dim {axis} is {v} but must be {d}"
                        )));
                    }
                    let x = (v - k) / c;
                    if let Some(b) = self.symbol_bounds(s) {
                        if x < b.min || x > b.max {
                            return Err(err(format!(
                                "{kind} `{name}` dim {axis} is {v}, so `{s}` = {x}, outside its range [{}, {}]",
                                b.min, b.max
                            )));
                        }
                    }
                    env.insert(s.clone(), x);
                    progress = true;
                }
            }
        }
        for (id, kind, ty, shape) in &given {
            let err = |message: String| IrError {
                node: Some(*id),
                op: self.node(*id).op.mnemonic().into(),
                message,
            };
            let name = name_of(*id);
            for (axis, (d, &v)) in ty.shape.iter().zip(shape).enumerate() {
                match d.eval(&env) {
                    Ok(e) if e == v => {}
                    Ok(e) if matches!(d, Dim::Const(_)) => {
                        return Err(err(format!(
                            "{kind} `{name}` dim {axis} is {v} but must be {e}"
                        )));
                    }
                    Ok(e) => {
                        return Err(err(format!(
                            "{kind} `{name}` dim {axis} is {v} but must be {d} = {e}"
                        )))
                    }
                    Err(crate::DimEvalError::Unbound(s)) => {
                        return Err(err(format!(
                            "{kind} `{name}` dim {axis} ({d}) does not determine symbol `{s}`"
                        )));
                    }
                    Err(e) => return Err(err(format!("{kind} `{name}` dim {axis} ({d}): {e}"))),
                }
            }
        }
        Ok(env)
    }
}
