//! IR graph → e-graph, and a chosen e-node per class → IR graph (which must verify).

use crate::analysis::{EGraph, TensorAnalysis};
use crate::lang::{normalize, resolve, ENode, Key};
use egg::Id;
use std::collections::HashMap;
use vl3c_ir::{Graph, IrError, NodeId, Op, TensorType};

/// What extraction must keep: the graph's outputs and its cache appends (whose effect is the
/// cache state the next step reads, not a value anyone uses).
#[derive(Clone, Debug)]
pub struct Roots {
    pub outputs: Vec<(String, Id)>,
    pub effects: Vec<Id>,
}

impl Roots {
    pub fn all(&self) -> impl Iterator<Item = Id> + '_ {
        self.outputs
            .iter()
            .map(|(_, id)| *id)
            .chain(self.effects.iter().copied())
    }
}

pub fn to_egraph(g: &Graph) -> (EGraph, Roots, Vec<Id>) {
    let mut egraph = EGraph::new(TensorAnalysis);
    let mut class_of: Vec<Id> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let tys: Vec<&TensorType> = node.inputs.iter().map(|i| g.ty(*i)).collect();
        let key = Key::new(
            normalize(&node.op, &tys),
            node.op.is_source().then(|| node.ty.clone()),
        );
        let children = node.inputs.iter().map(|i| class_of[i.index()]).collect();
        class_of.push(egraph.add(ENode { key, children }));
    }
    egraph.rebuild();
    let find = |id: NodeId| egraph.find(class_of[id.index()]);
    let roots = Roots {
        outputs: g
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), find(*id)))
            .collect(),
        effects: g
            .node_ids()
            .filter(|id| matches!(g.node(*id).op, Op::CacheAppend { .. }))
            .map(find)
            .collect(),
    };
    (egraph, roots, class_of)
}

/// Rebuilds an IR graph from one chosen node per reachable class. `template` lends the name and
/// symbols; every node's type is re-inferred by `Graph::add`, and the result is verified.
pub fn from_egraph(
    template: &Graph,
    egraph: &EGraph,
    choice: &HashMap<Id, ENode>,
    roots: &Roots,
) -> Result<Graph, IrError> {
    let mut g = Graph::new(template.name.clone());
    g.symbols = template.symbols.clone();
    let mut emitted: HashMap<Id, NodeId> = HashMap::new();
    for root in roots.all() {
        emit(&mut g, egraph, choice, root, &mut emitted)?;
    }
    for (name, id) in &roots.outputs {
        g.set_output(name.clone(), emitted[&egraph.find(*id)]);
    }
    let g = mark_folds(&g)?;
    g.verify()?;
    Ok(g)
}

/// Wraps every maximal weight-only value (computed from weights and literals alone, such as a
/// transposed or concatenated weight, or the RoPE inverse frequencies) in `fold` where a
/// runtime-dependent node reads it: the mark tells backends to evaluate it once at compile time.
/// Bare weights and literals need no mark.
pub fn mark_folds(g: &Graph) -> Result<Graph, IrError> {
    let mut out = Graph::new(g.name.clone());
    out.symbols = g.symbols.clone();
    let mut weight_only = Vec::with_capacity(g.nodes.len());
    let mut new_id: Vec<NodeId> = Vec::with_capacity(g.nodes.len());
    let mut folded: HashMap<NodeId, NodeId> = HashMap::new();
    for node in &g.nodes {
        let wo = match &node.op {
            Op::Weight { .. } | Op::Constant { .. } => true,
            Op::Input { .. } | Op::CacheRead { .. } => false,
            Op::Iota { len, start, .. } => len.as_const().is_some() && start.as_const().is_some(),
            _ => !node.inputs.is_empty() && node.inputs.iter().all(|i| weight_only[i.index()]),
        };
        let id = if node.op.is_source() {
            out.add_source(node.op.clone(), node.ty.clone())?
        } else {
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for i in &node.inputs {
                let computed = weight_only[i.index()]
                    && !matches!(
                        g.node(*i).op,
                        Op::Weight { .. } | Op::Constant { .. } | Op::Iota { .. } | Op::Fold
                    );
                inputs.push(if !wo && computed {
                    match folded.get(i) {
                        Some(f) => *f,
                        None => {
                            let f = out.add(Op::Fold, &[new_id[i.index()]])?;
                            folded.insert(*i, f);
                            f
                        }
                    }
                } else {
                    new_id[i.index()]
                });
            }
            out.add(node.op.clone(), &inputs)?
        };
        weight_only.push(wo);
        new_id.push(id);
    }
    for (name, id) in &g.outputs {
        out.set_output(name.clone(), new_id[id.index()]);
    }
    Ok(out)
}

fn emit(
    g: &mut Graph,
    egraph: &EGraph,
    choice: &HashMap<Id, ENode>,
    root: Id,
    emitted: &mut HashMap<Id, NodeId>,
) -> Result<NodeId, IrError> {
    // Iterative post-order: real graphs are thousands of nodes deep.
    let mut stack = vec![(egraph.find(root), false)];
    let mut open = std::collections::HashSet::new();
    while let Some((class, expanded)) = stack.pop() {
        if emitted.contains_key(&class) {
            continue;
        }
        let node = choice.get(&class).ok_or_else(|| missing(class))?;
        if !expanded {
            if !open.insert(class) {
                return Err(IrError {
                    node: None,
                    op: "extract".into(),
                    message: format!("the choice for e-class {class} is cyclic"),
                });
            }
            stack.push((class, true));
            for c in node.children.iter().rev() {
                let c = egraph.find(*c);
                if !emitted.contains_key(&c) {
                    stack.push((c, false));
                }
            }
            continue;
        }
        open.remove(&class);
        let inputs: Vec<NodeId> = node
            .children
            .iter()
            .map(|c| emitted[&egraph.find(*c)])
            .collect();
        let id = match &node.key.ty {
            Some(ty) => g.add_source(node.op().clone(), ty.clone())?,
            None => {
                let tys: Vec<&TensorType> = inputs.iter().map(|i| g.ty(*i)).collect();
                let op = resolve(node.op(), &tys);
                g.add(op, &inputs)?
            }
        };
        emitted.insert(class, id);
    }
    Ok(emitted[&egraph.find(root)])
}

fn missing(class: Id) -> IrError {
    IrError {
        node: None,
        op: "extract".into(),
        message: format!("e-class {class} has no chosen node"),
    }
}
