//! The rewrite rules, one table per family. Each row: a name, a pattern, its replacement, and
//! (where shapes or literals matter) a condition.

use crate::analysis::TensorAnalysis;
use crate::lang::ENode;
use egg::{rewrite, Rewrite};

pub type Rule = Rewrite<ENode, TensorAnalysis>;

pub fn all() -> Vec<Rule> {
    vec![rewrite!("softmax";
        "(div (exp (sub ?x (reduce_max:last ?x))) (reduce_sum:last (exp (sub ?x (reduce_max:last ?x)))))"
        => "(softmax ?x)")]
}
