//! Cost-based extraction. Classes are settled in increasing cost order (Knuth's generalization
//! of Dijkstra): a node becomes a candidate once all its children are settled, costing its op
//! plus its children. Op costs are strictly positive, so a settled class only depends on
//! classes settled before it and the choice is acyclic by construction.

use crate::analysis::EGraph;
use crate::lang::{resolve, ENode};
use egg::Id;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use vl3c_ir::TensorType;

#[derive(PartialEq)]
struct Candidate {
    cost: f64,
    class: Id,
    node: usize,
}

impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: invert; ties by class then node for determinism.
        other.cost.total_cmp(&self.cost).then_with(|| other.class.cmp(&self.class)).then_with(|| other.node.cmp(&self.node))
    }
}

/// The op's own cost in seconds; `None` for nodes that must not be chosen (ill-typed).
pub type NodeCost<'a> = dyn Fn(&ENode, &TensorType, &[&TensorType], bool) -> f64 + 'a;

/// Chooses one node per class reachable from `roots`, minimizing the summed cost of each
/// class's chosen subtree.
pub fn extract(egraph: &EGraph, roots: impl IntoIterator<Item = Id>, op_cost: &NodeCost) -> Result<HashMap<Id, ENode>, String> {
    let mut nodes: Vec<(Id, &ENode)> = Vec::new();
    for class in egraph.classes() {
        for n in &class.nodes {
            nodes.push((class.id, n));
        }
    }
    let mut parents: HashMap<Id, Vec<usize>> = HashMap::new();
    let mut pending: Vec<usize> = Vec::with_capacity(nodes.len());
    let mut heap = BinaryHeap::new();
    let mut best: HashMap<Id, (f64, usize)> = HashMap::new();
    let cost_of = |i: usize, best: &HashMap<Id, (f64, usize)>| -> Option<f64> {
        let (class, node) = nodes[i];
        let out = egraph[class].data.ty.as_ref()?;
        let tys: Option<Vec<&TensorType>> = node.children.iter().map(|c| egraph[*c].data.ty.as_ref()).collect();
        let tys = tys?;
        if node.key.ty.is_none() && vl3c_ir::infer_type(&resolve(node.op(), &tys), &tys).is_err() {
            return None;
        }
        let own = op_cost(node, out, &tys, egraph[class].data.weight_only);
        let mut children: Vec<Id> = node.children.iter().map(|c| egraph.find(*c)).collect();
        children.sort();
        children.dedup();
        Some(own + children.iter().map(|c| best[c].0).sum::<f64>())
    };
    for (i, (_, node)) in nodes.iter().enumerate() {
        let mut children: Vec<Id> = node.children.iter().map(|c| egraph.find(*c)).collect();
        children.sort();
        children.dedup();
        pending.push(children.len());
        for c in &children {
            parents.entry(*c).or_default().push(i);
        }
        if children.is_empty() {
            if let Some(cost) = cost_of(i, &best) {
                heap.push(Candidate { cost, class: nodes[i].0, node: i });
            }
        }
    }
    while let Some(Candidate { cost, class, node }) = heap.pop() {
        if best.contains_key(&class) {
            continue;
        }
        best.insert(class, (cost, node));
        for &p in parents.get(&class).map(Vec::as_slice).unwrap_or(&[]) {
            pending[p] -= 1;
            if pending[p] == 0 && !best.contains_key(&nodes[p].0) {
                if let Some(cost) = cost_of(p, &best) {
                    heap.push(Candidate { cost, class: nodes[p].0, node: p });
                }
            }
        }
    }
    let mut choice = HashMap::new();
    let mut stack: Vec<Id> = roots.into_iter().map(|r| egraph.find(r)).collect();
    while let Some(class) = stack.pop() {
        if choice.contains_key(&class) {
            continue;
        }
        let (_, i) = best.get(&class).ok_or_else(|| format!("e-class {class} has no well-typed node"))?;
        let node = nodes[*i].1.clone();
        stack.extend(node.children.iter().map(|c| egraph.find(*c)));
        choice.insert(class, node);
    }
    Ok(choice)
}
