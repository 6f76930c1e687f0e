//! Layout: transpose/reshape cancellation, and sinking a transpose through RoPE so that the
//! rotation meets the attention that reads it (the encoder rotates q/k in `[n, heads, d]` and
//! transposes to `[heads, n, d]` after). Patterns cannot bind perms or shapes, so each rule scans
//! the classes holding its op and a Rust function below builds the equal forms.

use super::{add_op, rule, ty, unary_nodes, Local, Rule, Scan};
use crate::analysis::EGraph;
use egg::Id;
use vl3c_ir::{shapes_equal, Dim, Op};

fn is_transpose(op: &Op) -> bool {
    matches!(op, Op::Transpose { .. })
}
fn is_reshape(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. })
}
fn is_group_mean(op: &Op) -> bool {
    matches!(op, Op::Reduce { op: vl3c_ir::ReduceOp::Mean, axes, keep_dims: false } if axes.as_slice() == [1])
}

/// `reduce_mean(reshape(x [g·n, F], [n, g, F]), axis 1)` = `spatial_merge(x)` with g = m²: the
/// vision merge, whose rows arrive in merge-block-major order.
fn spatial_merge(eg: &mut EGraph, c: Id) -> Vec<Id> {
    let mut found = Vec::new();
    for (_, grouped) in unary_nodes(eg, c, is_group_mean) {
        for (op, x) in unary_nodes(eg, grouped, is_reshape) {
            let (Op::Reshape { shape }, Some(xt)) = (&op, ty(eg, x)) else {
                continue;
            };
            let group = shape.get(1).and_then(Dim::as_const).unwrap_or(0);
            let merge = (group as f64).sqrt() as usize;
            let fits = shape.len() == 3
                && xt.rank() == 2
                && merge * merge == group as usize
                && merge > 1
                && shapes_equal(&shape[2..], &xt.shape[1..]);
            if fits {
                found.push((merge, x));
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(merge, x)| add_op(eg, Op::SpatialMerge { merge }, vec![x]))
        .collect()
}

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        rule!("transpose-identity",  Scan(is_transpose), Local(transpose_identity)),
        rule!("transpose-transpose", Scan(is_transpose), Local(transpose_transpose)),
        rule!("reshape-identity",    Scan(is_reshape),   Local(reshape_identity)),
        rule!("reshape-reshape",     Scan(is_reshape),   Local(reshape_reshape)),
        rule!("transpose-rope",      Scan(is_transpose), Local(transpose_rope)),
        rule!("spatial-merge",       Scan(is_group_mean), Local(spatial_merge)),
    ]
}

/// `transpose(x, [0, 1, …])` = x.
fn transpose_identity(eg: &mut EGraph, c: Id) -> Vec<Id> {
    unary_nodes(eg, c, is_transpose)
        .into_iter()
        .filter_map(|(op, x)| match op {
            Op::Transpose { perm } if perm.iter().enumerate().all(|(i, p)| i == *p) => Some(x),
            _ => None,
        })
        .collect()
}

/// `transpose(transpose(x, p2), p1)` = `transpose(x, p2∘p1)`, or x when that is the identity.
fn transpose_transpose(eg: &mut EGraph, c: Id) -> Vec<Id> {
    let mut composed = Vec::new();
    for (outer, inner) in unary_nodes(eg, c, is_transpose) {
        for (op, x) in unary_nodes(eg, inner, is_transpose) {
            if let (Op::Transpose { perm: p1 }, Op::Transpose { perm: p2 }) = (&outer, &op) {
                // out[i] = inner[p1[i]] = x[p2[p1[i]]].
                composed.push((p1.iter().map(|&i| p2[i]).collect::<Vec<_>>(), x));
            }
        }
    }
    composed
        .into_iter()
        .filter_map(|(perm, x)| {
            if perm.iter().enumerate().all(|(i, p)| i == *p) {
                Some(x)
            } else {
                add_op(eg, Op::Transpose { perm }, vec![x])
            }
        })
        .collect()
}

/// `reshape(x, shape)` = x when x already has that shape.
fn reshape_identity(eg: &mut EGraph, c: Id) -> Vec<Id> {
    unary_nodes(eg, c, is_reshape)
        .into_iter()
        .filter_map(|(op, x)| match op {
            Op::Reshape { shape } if ty(eg, x).is_some_and(|t| shapes_equal(&t.shape, &shape)) => {
                Some(x)
            }
            _ => None,
        })
        .collect()
}

/// `reshape(reshape(x, s2), s1)` = `reshape(x, s1)`: row-major order is preserved by both.
fn reshape_reshape(eg: &mut EGraph, c: Id) -> Vec<Id> {
    let mut pairs = Vec::new();
    for (outer, inner) in unary_nodes(eg, c, is_reshape) {
        for (_, x) in unary_nodes(eg, inner, is_reshape) {
            pairs.push((outer.clone(), x));
        }
    }
    pairs
        .into_iter()
        .filter_map(|(op, x)| add_op(eg, op, vec![x]))
        .collect()
}

/// `transpose(rope(x, cos, sin), perm)` = `rope(transpose(x, perm), cos', sin')` when perm
/// keeps the last axis (the rotation's pairs stay in place). The tables broadcast against x
/// from the right, so they are first reshaped to x's rank with leading 1s, then transposed.
fn transpose_rope(eg: &mut EGraph, c: Id) -> Vec<Id> {
    let mut found = Vec::new();
    for (op, inner) in unary_nodes(eg, c, is_transpose) {
        let Op::Transpose { perm } = op else { continue };
        if perm.last() != Some(&(perm.len() - 1)) {
            continue;
        }
        for n in &eg[inner].nodes {
            if matches!(n.op(), Op::Rope) {
                found.push((perm.clone(), n.children.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (perm, ch) in found {
        let rank = perm.len();
        let mut moved = Vec::new();
        for (i, t) in ch.iter().enumerate() {
            let Some(shape) = ty(eg, *t).map(|t| t.shape.clone()) else {
                break;
            };
            let mut id = *t;
            if i > 0 && shape.len() < rank {
                let mut padded = vec![Dim::Const(1); rank - shape.len()];
                padded.extend(shape);
                match add_op(eg, Op::Reshape { shape: padded }, vec![id]) {
                    Some(r) => id = r,
                    None => break,
                }
            }
            match add_op(eg, Op::Transpose { perm: perm.clone() }, vec![id]) {
                Some(t) => moved.push(t),
                None => break,
            }
        }
        if moved.len() == 3 {
            out.extend(add_op(eg, Op::Rope, moved));
        }
    }
    out
}
