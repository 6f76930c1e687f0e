//! Cost-based extraction in two steps.
//!
//! 1. Tree cost: classes are settled in increasing cost order (Knuth's generalization of
//!    Dijkstra): a node becomes a candidate once all its children are settled, costing its op
//!    plus its children. Op costs are strictly positive, so a settled class only depends on
//!    classes settled before it and this choice is acyclic by construction.
//! 2. DAG cost: tree cost counts a shared value once per use, so it never picks a merged matmul
//!    that three slices read. Group moves fix that: switching a class to a node with a newly
//!    reached child also switches every other chosen class that can read that child; a move is
//!    kept when the summed cost of the distinct chosen nodes drops and the choice stays acyclic.

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
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.class.cmp(&self.class))
            .then_with(|| other.node.cmp(&self.node))
    }
}

/// The op's own cost in seconds; `None` for nodes that must not be chosen (ill-typed).
pub type NodeCost<'a> = dyn Fn(&ENode, &TensorType, &[&TensorType], bool) -> f64 + 'a;

/// Chooses one node per class reachable from `roots`, minimizing the summed cost of each
/// class's chosen subtree.
pub fn extract(
    egraph: &EGraph,
    roots: impl IntoIterator<Item = Id>,
    op_cost: &NodeCost,
) -> Result<HashMap<Id, ENode>, String> {
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
        let tys: Option<Vec<&TensorType>> = node
            .children
            .iter()
            .map(|c| egraph[*c].data.ty.as_ref())
            .collect();
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
                heap.push(Candidate {
                    cost,
                    class: nodes[i].0,
                    node: i,
                });
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
                    heap.push(Candidate {
                        cost,
                        class: nodes[p].0,
                        node: p,
                    });
                }
            }
        }
    }
    let roots: Vec<Id> = roots.into_iter().map(|r| egraph.find(r)).collect();
    let tree: HashMap<Id, usize> = best.iter().map(|(c, (_, i))| (*c, *i)).collect();
    let own: Vec<Option<f64>> = (0..nodes.len())
        .map(|i| {
            let (class, node) = nodes[i];
            let out = egraph[class].data.ty.as_ref()?;
            let tys: Option<Vec<&TensorType>> = node
                .children
                .iter()
                .map(|c| egraph[*c].data.ty.as_ref())
                .collect();
            Some(op_cost(node, out, &tys?, egraph[class].data.weight_only))
        })
        .collect();
    let dag = Dag {
        egraph,
        nodes: &nodes,
        own: &own,
        tree: &tree,
        roots: &roots,
    };
    let mut choice = dag
        .complete(HashMap::new())
        .ok_or_else(|| "a root has no well-typed node".to_string())?;
    dag.improve(&mut choice);
    Ok(choice
        .into_iter()
        .map(|(c, i)| (c, nodes[i].1.clone()))
        .collect())
}

struct Dag<'a> {
    egraph: &'a EGraph,
    nodes: &'a [(Id, &'a ENode)],
    own: &'a [Option<f64>],
    tree: &'a HashMap<Id, usize>,
    roots: &'a [Id],
}

impl Dag<'_> {
    fn children(&self, i: usize) -> impl Iterator<Item = Id> + '_ {
        self.nodes[i]
            .1
            .children
            .iter()
            .map(|c| self.egraph.find(*c))
    }

    /// Keeps the choices reachable from the roots, filling unchosen classes with their tree-best
    /// node; `None` when a class has no usable node or the choice is cyclic.
    fn complete(&self, mut choice: HashMap<Id, usize>) -> Option<HashMap<Id, usize>> {
        let mut out = HashMap::new();
        let mut open = std::collections::HashSet::new();
        let mut stack: Vec<(Id, bool)> = self.roots.iter().map(|r| (*r, false)).collect();
        while let Some((class, done)) = stack.pop() {
            if done {
                open.remove(&class);
                continue;
            }
            if out.contains_key(&class) {
                continue;
            }
            if !open.insert(class) {
                return None;
            }
            let i = choice
                .remove(&class)
                .or_else(|| self.tree.get(&class).copied())?;
            self.own[i]?;
            out.insert(class, i);
            stack.push((class, true));
            for c in self.children(i) {
                if open.contains(&c) {
                    return None;
                }
                stack.push((c, false));
            }
        }
        Some(out)
    }

    fn cost(&self, choice: &HashMap<Id, usize>) -> f64 {
        choice
            .values()
            .map(|&i| self.own[i].unwrap_or(f64::INFINITY))
            .sum()
    }

    fn improve(&self, choice: &mut HashMap<Id, usize>) {
        let mut readers: HashMap<Id, Vec<usize>> = HashMap::new();
        let mut members: HashMap<Id, Vec<usize>> = HashMap::new();
        for i in 0..self.nodes.len() {
            members.entry(self.nodes[i].0).or_default().push(i);
            for c in self.children(i) {
                readers.entry(c).or_default().push(i);
            }
        }
        let mut current = self.cost(choice);
        for _round in 0..4 {
            let mut improved = false;
            let mut classes: Vec<Id> = choice.keys().copied().collect();
            classes.sort();
            for class in classes {
                let Some(&chosen) = choice.get(&class) else {
                    continue;
                };
                let alternatives: Vec<usize> = members[&class]
                    .iter()
                    .copied()
                    .filter(|&i| i != chosen && self.own[i].is_some())
                    .collect();
                for alt in alternatives {
                    let mut trial = choice.clone();
                    trial.insert(class, alt);
                    for new in self.children(alt).filter(|c| !choice.contains_key(c)) {
                        for &r in readers.get(&new).map(Vec::as_slice).unwrap_or(&[]) {
                            let reader_class = self.nodes[r].0;
                            if reader_class != class
                                && choice.contains_key(&reader_class)
                                && self.own[r].is_some()
                            {
                                trial.insert(reader_class, r);
                            }
                        }
                    }
                    let Some(trial) = self.complete(trial) else {
                        continue;
                    };
                    let cost = self.cost(&trial);
                    if cost < current * (1.0 - 1e-9) {
                        (*choice, current, improved) = (trial, cost, true);
                        break;
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }
}
