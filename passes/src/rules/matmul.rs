//! Matmul epilogues (bias, residual) fused into the producing matmul, and the merge of matmuls
//! that share their input (q/k/v, gate/up) into one matmul against the concatenated weights,
//! split after.

use super::{add_op, fused, pat, rule, ty, union_id, var, Rule};
use crate::analysis::{EGraph, TensorAnalysis};
use crate::lang::ENode;
use egg::{Applier, Id, MultiPattern, PatternAst, Subst, Symbol, Var};
use vl3c_ir::{Dim, Op};

const fn fmm(bias: bool, residual: bool) -> Option<Op> {
    Some(Op::FusedMatMul { bias, residual })
}

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        rule!("matmul-bias",          pat("(add (matmul ?a ?b) ?c)"),            fused(|_, _| fmm(true, false), "?a ?b ?c")),
        rule!("matmul-residual",      pat("(add ?r (matmul ?a ?b))"),            fused(|_, _| fmm(false, true), "?a ?b ?r")),
        rule!("matmul-residual-rhs",  pat("(add (matmul ?a ?b) ?r)"),            fused(|eg, s| (rank(eg, s, "?r") > 1).then_some(Op::FusedMatMul { bias: false, residual: true }), "?a ?b ?r")),
        rule!("matmul-bias-residual", pat("(add ?r (fused_matmul:b ?a ?b ?c))"), fused(|_, _| fmm(true, true), "?a ?b ?c ?r")),
        rule!("matmul-merge",         multi("?p = (matmul ?x ?w1), ?q = (matmul ?x ?w2)"), Merge { bias: false }),
        rule!("matmul-merge-bias",    multi("?p = (fused_matmul:b ?x ?w1 ?b1), ?q = (fused_matmul:b ?x ?w2 ?b2)"), Merge { bias: true }),
    ]
}

fn rank(eg: &EGraph, s: &Subst, v: &str) -> usize {
    ty(eg, s[var(v)]).map_or(0, |t| t.rank())
}

fn multi(s: &str) -> MultiPattern<ENode> {
    s.parse()
        .unwrap_or_else(|e| panic!("multi-pattern `{s}`: {e:?}"))
}

/// `x·w1` and `x·w2` with weight-only `w1 [k, n1]`, `w2 [k, n2]` ⇒ the two column slices of
/// `x·concat(w1, w2)`. Merges grow one weight at a time in class-id order (`w2` is an original
/// weight newer than every part of `w1`), so q/k/v give {q,k}, {q,v}, {k,v}, {q,k,v} and
/// nothing redundant: without the order the e-graph would fill with every permutation.
/// With `bias`, the same for bias-fused matmuls, their biases concatenated alike.
pub struct Merge {
    bias: bool,
}

impl Applier<ENode, TensorAnalysis> for Merge {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        _: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let v = |name: &str| eg.find(s[var(name)]);
        let (x, w1, w2, p, q) = (v("?x"), v("?w1"), v("?w2"), v("?p"), v("?q"));
        if w1 == w2 || !eg[w1].data.weight_only || !eg[w2].data.weight_only || is_concat(eg, w2) {
            return vec![];
        }
        let parts = parts(eg, w1);
        if parts.iter().any(|&c| c >= w2) {
            return vec![];
        }
        let (Some(t1), Some(t2)) = (ty(eg, w1), ty(eg, w2)) else {
            return vec![];
        };
        if t1.rank() != 2 || t2.rank() != 2 || t1.dtype != t2.dtype {
            return vec![];
        }
        let (Some(n1), Some(n2)) = (t1.shape[1].as_const(), t2.shape[1].as_const()) else {
            return vec![];
        };
        let Some(rank) = ty(eg, x).map(|t| t.rank()) else {
            return vec![];
        };
        let last = rank - 1;
        let biases = self.bias.then(|| (v("?b1"), v("?b2")));
        let build = |eg: &mut EGraph| -> Option<(Id, Id)> {
            let w = add_op(eg, Op::Concat { axis: 1 }, vec![w1, w2])?;
            let y = match biases {
                None => add_op(eg, Op::MatMul, vec![x, w])?,
                Some((b1, b2)) => {
                    let b = add_op(eg, Op::Concat { axis: 0 }, vec![b1, b2])?;
                    add_op(
                        eg,
                        Op::FusedMatMul {
                            bias: true,
                            residual: false,
                        },
                        vec![x, w, b],
                    )?
                }
            };
            let lo = add_op(
                eg,
                Op::Slice {
                    axis: last,
                    start: Dim::Const(0),
                    end: Dim::Const(n1),
                },
                vec![y],
            )?;
            let hi = add_op(
                eg,
                Op::Slice {
                    axis: last,
                    start: Dim::Const(n1),
                    end: Dim::Const(n1 + n2),
                },
                vec![y],
            )?;
            Some((lo, hi))
        };
        let Some((lo, hi)) = build(eg) else {
            return vec![];
        };
        let mut changed = union_id(eg, p, lo);
        changed.extend(union_id(eg, q, hi));
        changed
    }

    fn vars(&self) -> Vec<Var> {
        let mut vars = ["?x", "?w1", "?w2", "?p", "?q"].map(var).to_vec();
        if self.bias {
            vars.extend(["?b1", "?b2"].map(var));
        }
        vars
    }
}

fn is_concat(eg: &EGraph, c: Id) -> bool {
    eg[c]
        .nodes
        .iter()
        .any(|n| matches!(n.op(), Op::Concat { .. }))
}

/// The original weights a merged weight concatenates (itself when it is one).
fn parts(eg: &EGraph, c: Id) -> Vec<Id> {
    match eg[c]
        .nodes
        .iter()
        .find(|n| matches!(n.op(), Op::Concat { .. }))
    {
        Some(n) => n
            .children
            .iter()
            .flat_map(|k| parts(eg, eg.find(*k)))
            .collect(),
        None => vec![c],
    }
}
