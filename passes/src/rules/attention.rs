//! RoPE and attention. The frontend spells attention as
//! `matmul(softmax(select(allowed, matmul(q, kᵀ)·scale, -inf)), v)`; the applier reads the rest
//! off the matched classes:
//! * the mask: `eq(seg[n,1], seg[1,n])` is the encoder's block-diagonal `Segments` mask;
//!   `le(iota(t, 0)[1,t], iota(n, t-n)[n,1])` is the LLM's `Causal` mask (query i at absolute
//!   position t - n + i);
//! * GQA: k/v that are `reshape(broadcast(reshape(k0)))` repeats of `k0 [hk, t, d]` are replaced
//!   by `k0` (the fused op maps query head j to kv head j / g itself);
//! * RoPE: a rope in q's class is folded (`rope_q`), and one in k's class with the same tables
//!   too (`rope_k`). The LLM's keys are rotated before the cache, so only q's rope is there to fold.
//!
//! Every variant found is added; extraction keeps the cheapest (the most folded).

use super::{fused, konst, pat, rule, same_dim, ty, union_node, var, Rule};
use crate::analysis::{EGraph, TensorAnalysis};
use crate::lang::ENode;
use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use vl3c_ir::{AttentionMask, BinaryOp, Dim, Op};

/// `x·cos + concat(-x_hi, x_lo)·sin` on the last axis.
const ROPE: &str = "(add (mul ?x ?cos) (mul (concat:last (neg (slice:hi ?x)) (slice:lo ?x)) ?sin))";
const MASKED: &str =
    "(matmul (softmax (select ?mask (mul (matmul ?q (transpose:0,2,1 ?k)) ?scale) ?fill)) ?v)";
const UNMASKED: &str = "(matmul (softmax (mul (matmul ?q (transpose:0,2,1 ?k)) ?scale)) ?v)";

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        rule!("rope",             pat(ROPE),     fused(|_, _| Some(Op::Rope), "?x ?cos ?sin")),
        rule!("attention-masked", pat(MASKED),   Attend { masked: true }),
        rule!("attention-full",   pat(UNMASKED), Attend { masked: false }),
    ]
}

pub struct Attend {
    masked: bool,
}

impl Applier<ENode, TensorAnalysis> for Attend {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let Some(variants) = self.variants(eg, s) else {
            return vec![];
        };
        variants
            .into_iter()
            .flat_map(|node| union_node(eg, eclass, node))
            .collect()
    }

    fn vars(&self) -> Vec<Var> {
        let mut v = vec!["?q", "?k", "?v", "?scale"];
        if self.masked {
            v.extend(["?mask", "?fill"]);
        }
        v.into_iter().map(var).collect()
    }
}

impl Attend {
    fn variants(&self, eg: &EGraph, s: &Subst) -> Option<Vec<ENode>> {
        let get = |v: &str| eg.find(s[var(v)]);
        let (q, k, v) = (get("?q"), get("?k"), get("?v"));
        let scale = konst(eg, s, "?scale")?;
        let (qt, kt) = (ty(eg, q)?, ty(eg, k)?);
        if qt.rank() != 3 || kt.rank() != 3 {
            return None;
        }
        let (n, t) = (qt.shape[1].clone(), kt.shape[1].clone());
        let (mask, segments) = if self.masked {
            if konst(eg, s, "?fill") != Some(f64::NEG_INFINITY) {
                return None;
            }
            classify_mask(eg, get("?mask"), &n, &t)?
        } else {
            (AttentionMask::Full, None)
        };
        let (k0, v0) = match (unrepeat(eg, k), unrepeat(eg, v)) {
            (Some(k0), Some(v0)) => (k0, v0),
            _ => (k, v),
        };
        let node = |rope_q: bool, rope_k: bool, mut children: Vec<Id>| {
            children.extend(segments);
            ENode::new(
                Op::Attention {
                    scale,
                    mask,
                    rope_q,
                    rope_k,
                },
                children,
            )
        };
        let mut out = vec![node(false, false, vec![q, k0, v0])];
        for [x, cos, sin] in ropes(eg, q) {
            out.push(node(true, false, vec![x, k0, v0, cos, sin]));
            for [xk, cos_k, sin_k] in ropes(eg, k0) {
                if eg.find(cos_k) == eg.find(cos) && eg.find(sin_k) == eg.find(sin) {
                    out.push(node(true, true, vec![x, xk, v0, cos, sin]));
                }
            }
        }
        Some(out)
    }
}

/// `(x, cos, sin)` of every rope in the class.
fn ropes(eg: &EGraph, c: Id) -> Vec<[Id; 3]> {
    eg[c]
        .nodes
        .iter()
        .filter(|n| matches!(n.op(), Op::Rope))
        .map(|n| [n.children[0], n.children[1], n.children[2]])
        .collect()
}

/// The mask an `allowed [n, t]` class spells, with the segment ids for `Segments`.
fn classify_mask(eg: &EGraph, m: Id, n: &Dim, t: &Dim) -> Option<(AttentionMask, Option<Id>)> {
    for node in &eg[m].nodes {
        let ch = &node.children;
        match node.op() {
            Op::Binary(BinaryOp::Eq) if same_dim(n, t) => {
                let cols = reshaped(eg, ch[0], &[n.clone(), Dim::Const(1)]);
                let rows = reshaped(eg, ch[1], &[Dim::Const(1), n.clone()]);
                let seg = cols.iter().find(|c| rows.contains(c) && is_ids(eg, **c, n));
                if let Some(seg) = seg {
                    return Some((AttentionMask::Segments, Some(*seg)));
                }
            }
            Op::Binary(BinaryOp::Le) => {
                let keys = iotas(eg, ch[0], &[Dim::Const(1), t.clone()]);
                let queries = iotas(eg, ch[1], &[n.clone(), Dim::Const(1)]);
                let keys_ok = keys
                    .iter()
                    .any(|(len, start)| same_dim(len, t) && same_dim(start, &Dim::Const(0)));
                let queries_ok = queries.iter().any(|(len, start)| {
                    same_dim(len, n) && same_dim(&(start.clone() + n.clone()), t)
                });
                if keys_ok && queries_ok {
                    return Some((AttentionMask::Causal, None));
                }
            }
            _ => {}
        }
    }
    None
}

/// The 1-D classes `c` reshapes into `shape` (a row or a column of them).
fn reshaped(eg: &EGraph, c: Id, shape: &[Dim]) -> Vec<Id> {
    if !ty(eg, c).is_some_and(|t| vl3c_ir::shapes_equal(&t.shape, shape)) {
        return vec![];
    }
    eg[c]
        .nodes
        .iter()
        .filter(|n| {
            matches!(n.op(), Op::Reshape { .. })
                && ty(eg, n.children[0]).is_some_and(|t| t.rank() == 1)
        })
        .map(|n| eg.find(n.children[0]))
        .collect()
}

fn is_ids(eg: &EGraph, c: Id, n: &Dim) -> bool {
    ty(eg, c).is_some_and(|t| {
        t.dtype == vl3c_ir::DType::I64 && t.rank() == 1 && same_dim(&t.shape[0], n)
    })
}

/// `(len, start)` of the iotas `c` reshapes into `shape`.
fn iotas(eg: &EGraph, c: Id, shape: &[Dim]) -> Vec<(Dim, Dim)> {
    let mut out = Vec::new();
    for inner in reshaped(eg, c, shape) {
        for n in &eg[inner].nodes {
            if let Op::Iota { len, start, .. } = n.op() {
                out.push((len.clone(), start.clone()));
            }
        }
    }
    out
}

/// `k0 [hk, t, d]` when `c [g·hk, t, d]` is `reshape(broadcast(reshape(k0, [hk,1,t,d]), [hk,g,t,d]))`:
/// transformers' `repeat_kv`, head j reading kv head j / g.
fn unrepeat(eg: &EGraph, c: Id) -> Option<Id> {
    let ct = ty(eg, c)?;
    for n in eg[c]
        .nodes
        .iter()
        .filter(|n| matches!(n.op(), Op::Reshape { .. }))
    {
        let b = n.children[0];
        for bn in eg[b]
            .nodes
            .iter()
            .filter(|n| matches!(n.op(), Op::Broadcast { .. }))
        {
            let r = bn.children[0];
            for rn in eg[r]
                .nodes
                .iter()
                .filter(|n| matches!(n.op(), Op::Reshape { .. }))
            {
                let k0 = rn.children[0];
                let (bt, rt, kt) = (ty(eg, b)?, ty(eg, r)?, ty(eg, k0)?);
                let ok = kt.rank() == 3
                    && bt.rank() == 4
                    && rt.rank() == 4
                    && rt.shape[1] == Dim::Const(1)
                    && [0, 2, 3]
                        .iter()
                        .all(|&i| same_dim(&rt.shape[i], &bt.shape[i]))
                    && same_dim(&kt.shape[0], &bt.shape[0])
                    && same_dim(&kt.shape[1], &bt.shape[2])
                    && same_dim(&kt.shape[2], &bt.shape[3])
                    && same_dim(&(bt.shape[0].clone() * bt.shape[1].clone()), &ct.shape[0])
                    && same_dim(&kt.shape[1], &ct.shape[1]);
                if ok {
                    return Some(eg.find(k0));
                }
            }
        }
    }
    None
}
