//! Activations from their primitive chains: tanh-GELU, erf-GELU, SiLU, and SiLU·up (SwiGLU).
//! The chains' literals are bound to variables and checked to equal the exact constants the
//! frontend writes (within 1e-12 relative): a chain with other literals is some other function.

use super::{fused, literals, pat, rule, Rule};
use vl3c_ir::{Activation, Op};

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, as `(x·½)·(tanh(…) + 1)`.
const GELU_TANH: &str =
    "(mul (mul ?x ?half) (add (tanh (mul (add ?x (mul (mul (mul ?x ?x) ?x) ?c)) ?s)) ?one))";
/// `0.5·x·(1 + erf(x/√2))`, as `(x·½)·(erf(x·(1/√2)) + 1)`.
const GELU_ERF: &str = "(mul (mul ?x ?half) (add (erf (mul ?x ?r)) ?one))";
/// `x / (1 + exp(-x))`.
const SILU: &str = "(div ?x (add (exp (neg ?x)) ?one))";

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        rule!("gelu-tanh", pat(GELU_TANH), fused(|eg, s| literals(eg, s, &[("?half", 0.5), ("?one", 1.0), ("?c", 0.044715), ("?s", SQRT_2_OVER_PI)]).then_some(Op::Activation(Activation::GeluTanh)), "?x")),
        rule!("gelu-erf",  pat(GELU_ERF),  fused(|eg, s| literals(eg, s, &[("?half", 0.5), ("?one", 1.0), ("?r", std::f64::consts::FRAC_1_SQRT_2)]).then_some(Op::Activation(Activation::GeluErf)), "?x")),
        rule!("silu",      pat(SILU),      fused(|eg, s| literals(eg, s, &[("?one", 1.0)]).then_some(Op::Activation(Activation::Silu)), "?x")),
        rule!("swiglu",    pat("(mul (silu ?gate) ?up)"), fused(|_, _| Some(Op::SwiGlu), "?gate ?up")),
    ]
}

/// √(2/π) computed in f64 exactly as the frontend does.
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;
