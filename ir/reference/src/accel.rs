//! The executor's backend hook: a compiled engine claims the nodes it computes itself and the
//! executor keeps binding, shape checks and memory management for every node.

use super::{ExecError, Tensor};
use std::borrow::Cow;
use vl3c_ir::{Graph, NodeId, Op};

/// Values a claimed node reads, materialized on request (the reference decoding, transposes
/// and all), so a claim pays only for what it reads.
pub trait Operands {
    /// Operand `pos` of the claimed node.
    fn get(&self, pos: usize) -> Result<Cow<'_, Tensor>, ExecError>;
    /// Any node the claim listed in its reads (an operand, or an earlier node it reads past a
    /// chain of layout ops, through strides).
    fn node(&self, id: NodeId) -> Result<Cow<'_, Tensor>, ExecError>;
}

/// A claimed node's result.
pub enum Computed {
    /// Its value, checked against the node's type like any other.
    Value(Tensor),
    /// The backend keeps the value itself (a KV cache appended in place); the executor knows
    /// only its shape (checked, and binding symbols) and no unclaimed node may read it.
    Held(Vec<usize>),
}

/// A backend's hook into the executor: it may compute some nodes itself. Binding, shape checks
/// and memory management stay the executor's, so a backend only supplies kernels.
pub trait Accelerate {
    /// `Some(reads)` claims node `node` of `graph`, reading the values of the nodes in `reads`
    /// (operands, or earlier nodes). A node nobody reads is never computed, nor is anything
    /// only it reads (so a claimed matmul with a pre-packed weight never evaluates the weight's
    /// fold, and a claim reading past slices and transposes skips them).
    fn claim(&self, graph: &Graph, node: usize) -> Option<Vec<NodeId>>;
    /// The value of a claimed node.
    fn compute(
        &self,
        graph: &Graph,
        node: usize,
        values: &dyn Operands,
    ) -> Result<Computed, String>;
    /// What computes a claimed node, for profiles (`VL3C_PROFILE`).
    fn label(&self, _node: usize) -> &'static str {
        "claimed"
    }
}

/// Claims nothing: [`execute`].
pub struct Reference;

impl Accelerate for Reference {
    fn claim(&self, _: &Graph, _: usize) -> Option<Vec<NodeId>> {
        None
    }
    fn compute(&self, _: &Graph, _: usize, _: &dyn Operands) -> Result<Computed, String> {
        unreachable!("Reference claims nothing")
    }
}

/// Per node, whether it is skipped: nothing unclaimed reads it. Outputs, cache appends and
/// nodes nobody reads are always kept, so with no claims nothing is skipped.
pub fn skipped(graph: &Graph, claims: &[Option<Vec<NodeId>>]) -> Vec<bool> {
    skipped_for(graph, claims, &graph.outputs)
}

/// [`skipped`] when only `outputs` (some of the graph's) are computed: the graph's other
/// outputs, and whatever only they read, are skipped too. Cache appends are always kept.
pub fn skipped_for(
    graph: &Graph,
    claims: &[Option<Vec<NodeId>>],
    outputs: &[(String, NodeId)],
) -> Vec<bool> {
    let n = graph.nodes.len();
    let mut keep = vec![true; n];
    for node in &graph.nodes {
        for inp in &node.inputs {
            if let Some(k) = keep.get_mut(inp.index()) {
                *k = false;
            }
        }
    }
    // Unwanted first, so that one node under a wanted and an unwanted name is kept.
    for (id, wanted) in graph
        .outputs
        .iter()
        .map(|(_, id)| (id, false))
        .chain(outputs.iter().map(|(_, id)| (id, true)))
    {
        if let Some(k) = keep.get_mut(id.index()) {
            *k = wanted;
        }
    }
    for i in (0..n).rev() {
        let node = &graph.nodes[i];
        keep[i] |= matches!(node.op, Op::CacheAppend { .. });
        if !keep[i] {
            continue;
        }
        let reads = match claims.get(i).and_then(|c| c.as_ref()) {
            Some(r) => r.as_slice(),
            None => node.inputs.as_slice(),
        };
        for inp in reads {
            if inp.index() < i {
                keep[inp.index()] = true;
            }
        }
    }
    keep.iter().map(|k| !k).collect()
}
