//! Softmax, LayerNorm and RMSNorm from the primitive chains the frontend's `Builder` spells.
//! Reductions are on the last axis with kept dims (`reduce_*:last`), so the patterns are
//! rank-free; eps is read from the literal the chain adds, and must be a non-negative scalar.

use super::{fused, konst, pat, rule, Rule};
use crate::analysis::EGraph;
use egg::Subst;
use vl3c_ir::Op;

/// `exp(x - max) / Σ exp(x - max)`.
const SOFTMAX: &str = "(div (exp (sub ?x (reduce_max:last ?x))) (reduce_sum:last (exp (sub ?x (reduce_max:last ?x)))))";

/// `(x - mean)·rsqrt(mean((x - mean)²) + eps)·w + b`.
const LAYER_NORM: &str = "(add (mul (mul (sub ?x (reduce_mean:last ?x)) \
     (rsqrt (add (reduce_mean:last (mul (sub ?x (reduce_mean:last ?x)) (sub ?x (reduce_mean:last ?x)))) ?eps))) ?w) ?b)";

/// `x·rsqrt(mean(x²) + eps)·w`.
const RMS_NORM: &str = "(mul (mul ?x (rsqrt (add (reduce_mean:last (mul ?x ?x)) ?eps))) ?w)";

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        rule!("softmax",    pat(SOFTMAX),    fused(|_, _| Some(Op::Softmax), "?x")),
        rule!("layer-norm", pat(LAYER_NORM), fused(|eg, s| Some(Op::LayerNorm { eps: eps(eg, s)? }), "?x ?w ?b")),
        rule!("rms-norm",   pat(RMS_NORM),   fused(|eg, s| Some(Op::RmsNorm { eps: eps(eg, s)? }), "?x ?w")),
    ]
}

fn eps(eg: &EGraph, s: &Subst) -> Option<f64> {
    konst(eg, s, "?eps").filter(|e| *e >= 0.0 && e.is_finite())
}
