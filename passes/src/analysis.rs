//! What every e-class knows: its tensor type (rule conditions read shapes and dtypes), its
//! value when it is a scalar constant, and whether it depends only on weights and constants.

use crate::lang::{resolve, ENode};
use egg::{Analysis, DidMerge, Id};
use vl3c_ir::{infer_type, Op, Scalar, TensorType};

pub type EGraph = egg::EGraph<ENode, TensorAnalysis>;

#[derive(Default)]
pub struct TensorAnalysis;

#[derive(Clone, Debug)]
pub struct Data {
    /// `None` marks a class that only ill-typed nodes reached; extraction never picks them.
    pub ty: Option<TensorType>,
    /// The value of a scalar literal.
    pub konst: Option<f64>,
    /// Depends only on weights and literals: evaluable at compile time.
    pub weight_only: bool,
}

/// The type `node` would have, given its children's classes.
pub fn node_type(egraph: &EGraph, node: &ENode) -> Option<TensorType> {
    if let Some(ty) = &node.key.ty {
        return Some(ty.clone());
    }
    let tys: Option<Vec<&TensorType>> = node
        .children
        .iter()
        .map(|c| egraph[*c].data.ty.as_ref())
        .collect();
    let tys = tys?;
    infer_type(&resolve(node.op(), &tys), &tys).ok()
}

impl Analysis<ENode> for TensorAnalysis {
    type Data = Data;

    fn make(egraph: &mut EGraph, node: &ENode, _id: Id) -> Data {
        let ty = node_type(egraph, node);
        let konst = match node.op() {
            Op::Constant {
                value: Scalar::Float(x),
                ..
            } => Some(*x),
            Op::Constant {
                value: Scalar::Int(i),
                ..
            } => Some(*i as f64),
            _ => None,
        };
        let weight_only = match node.op() {
            Op::Weight { .. } | Op::Constant { .. } => true,
            Op::Input { .. } | Op::CacheRead { .. } => false,
            Op::Iota { len, start, .. } => len.as_const().is_some() && start.as_const().is_some(),
            _ => {
                !node.children.is_empty()
                    && node.children.iter().all(|c| egraph[*c].data.weight_only)
            }
        };
        Data {
            ty,
            konst,
            weight_only,
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        if !a.weight_only && b.weight_only {
            a.weight_only = true;
            changed_a = true;
        }
        let changed_b = (b.ty.is_none() && a.ty.is_some())
            || (b.konst.is_none() && a.konst.is_some())
            || (!b.weight_only && a.weight_only);
        DidMerge(changed_a, changed_b)
    }
}

/// Adds `node` only if it is well typed; rules build their results through this.
pub fn add_typed(egraph: &mut EGraph, node: ENode) -> Option<Id> {
    node_type(egraph, &node)?;
    Some(egraph.add(node))
}
