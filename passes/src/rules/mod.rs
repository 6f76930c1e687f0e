//! The rewrite rules, one table per family. Each row: a name, a searcher (usually a pattern),
//! and an applier. Results that need attributes (eps, attention flags, layout perms) or
//! conditions on literals and shapes are built by the small appliers defined here, so that the
//! tables stay one line per rule, like egg's tests/math.rs.
//!
//! Every applier only unions a node whose inferred type equals the matched class's type: a
//! rewrite that changes a shape (a rope table that widens x, a bias that is not 1-D) is refused
//! rather than left in the e-graph as an ill-typed alternative.

pub mod activations;
pub mod attention;
pub mod layout;
pub mod matmul;
pub mod norms;

use crate::analysis::{node_type, EGraph, TensorAnalysis};
use crate::lang::{normalize, ENode};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use vl3c_ir::{shapes_equal, Dim, Op, TensorType};

pub type Rule = Rewrite<ENode, TensorAnalysis>;

/// Every family's table, in the order they are listed in the issue.
pub fn all() -> Vec<Rule> {
    let mut rules = attention::rules();
    rules.extend(norms::rules());
    rules.extend(activations::rules());
    rules.extend(matmul::rules());
    rules.extend(layout::rules());
    rules
}

/// The rules named in `names` (tests exercise one rule, or a rule and its prerequisites).
pub fn named(names: &[&str]) -> Vec<Rule> {
    let rules: Vec<Rule> = all()
        .into_iter()
        .filter(|r| names.contains(&r.name.as_str()))
        .collect();
    assert_eq!(rules.len(), names.len(), "unknown rule among {names:?}");
    rules
}

/// One table row: `rule!(name, searcher, applier)`.
macro_rules! rule {
    ($name:expr, $searcher:expr, $applier:expr) => {
        egg::Rewrite::new($name, $searcher, $applier)
            .unwrap_or_else(|e| panic!("rule {}: {e}", $name))
    };
}
pub(crate) use rule;

pub fn pat(s: &str) -> Pattern<ENode> {
    s.parse().unwrap_or_else(|e| panic!("pattern `{s}`: {e}"))
}

pub fn var(s: &str) -> Var {
    s.parse()
        .unwrap_or_else(|e| panic!("variable `{s}`: {e:?}"))
}

pub fn ty(eg: &EGraph, id: Id) -> Option<&TensorType> {
    eg[id].data.ty.as_ref()
}

/// The value of the scalar literal bound to `v`.
pub fn konst(eg: &EGraph, s: &Subst, v: &str) -> Option<f64> {
    eg[s[var(v)]].data.konst
}

/// Every `(var, value)` is bound to a literal equal to value within 1e-12 relative.
pub fn literals(eg: &EGraph, s: &Subst, want: &[(&str, f64)]) -> bool {
    want.iter()
        .all(|(v, x)| konst(eg, s, v).is_some_and(|k| (k - x).abs() <= 1e-12 * x.abs().max(1e-300)))
}

pub fn same_dim(a: &Dim, b: &Dim) -> bool {
    shapes_equal(std::slice::from_ref(a), std::slice::from_ref(b))
}

/// Unions `eclass` with `node` when the node is well typed with exactly the class's type.
pub fn union_node(eg: &mut EGraph, eclass: Id, node: ENode) -> Vec<Id> {
    let Some(t) = node_type(eg, &node) else {
        return vec![];
    };
    if !ty(eg, eclass).is_some_and(|c| c.dtype == t.dtype && shapes_equal(&c.shape, &t.shape)) {
        return vec![];
    }
    let id = eg.add(node);
    union_id(eg, eclass, id)
}

/// Unions two classes known to hold values of the same type.
pub fn union_id(eg: &mut EGraph, eclass: Id, id: Id) -> Vec<Id> {
    let same = match (ty(eg, eclass), ty(eg, id)) {
        (Some(a), Some(b)) => a.dtype == b.dtype && shapes_equal(&a.shape, &b.shape),
        _ => false,
    };
    if same && eg.union(eclass, id) {
        vec![id]
    } else {
        vec![]
    }
}

/// Adds a node given its concrete op (normalized here from the children's types); `None` when
/// it would be ill typed.
pub fn add_op(eg: &mut EGraph, op: Op, children: Vec<Id>) -> Option<Id> {
    let tys: Option<Vec<&TensorType>> = children.iter().map(|c| ty(eg, *c)).collect();
    let op = normalize(&op, &tys?);
    crate::analysis::add_typed(eg, ENode::new(op, children))
}

/// Applier: the op `make` computes (or `None`: the condition failed) over the bound `args`.
pub struct Fused {
    make: fn(&EGraph, &Subst) -> Option<Op>,
    args: Vec<Var>,
}

pub fn fused(make: fn(&EGraph, &Subst) -> Option<Op>, args: &str) -> Fused {
    Fused {
        make,
        args: args.split_whitespace().map(var).collect(),
    }
}

impl Applier<ENode, TensorAnalysis> for Fused {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let Some(op) = (self.make)(eg, s) else {
            return vec![];
        };
        let children = self.args.iter().map(|v| s[*v]).collect();
        union_node(eg, eclass, ENode::new(op, children))
    }

    fn vars(&self) -> Vec<Var> {
        self.args.clone()
    }
}

/// Searcher: every class holding a node whose op satisfies the predicate. Layout rules read
/// attributes (perms, shapes) that patterns cannot bind, so their appliers inspect the class.
pub struct Scan(pub fn(&Op) -> bool);

impl Searcher<ENode, TensorAnalysis> for Scan {
    fn search_eclass_with_limit(
        &self,
        eg: &EGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        (limit > 0 && eg[eclass].nodes.iter().any(|n| (self.0)(n.op()))).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// Applier: a Rust function from a class to classes equal to it (added by the function).
pub struct Local(pub fn(&mut EGraph, Id) -> Vec<Id>);

impl Applier<ENode, TensorAnalysis> for Local {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        (self.0)(eg, eclass)
            .into_iter()
            .flat_map(|id| union_id(eg, eclass, id))
            .collect()
    }
}

/// `(child, op)` of each node of `class` whose op satisfies `want`, for single-operand ops.
pub fn unary_nodes(eg: &EGraph, class: Id, want: impl Fn(&Op) -> bool) -> Vec<(Op, Id)> {
    eg[class]
        .nodes
        .iter()
        .filter(|n| n.children.len() == 1 && want(n.op()))
        .map(|n| (n.op().clone(), n.children[0]))
        .collect()
}
