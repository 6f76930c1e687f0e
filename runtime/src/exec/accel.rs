//! The executor's backend hook: a compiled engine claims the nodes it computes itself and the
//! executor keeps binding, shape checks and memory management for every node.

use super::{ExecError, Tensor};
use std::borrow::Cow;
use vl3c_ir::{Graph, Op};

/// Operands of a node a backend claimed, materialized on request (the reference decoding,
/// transposes and all), so a claim pays only for the operands it reads.
pub trait Operands {
    fn get(&self, pos: usize) -> Result<Cow<'_, Tensor>, ExecError>;
}

/// A backend's hook into the executor: it may compute some nodes itself. Binding, shape checks
/// and memory management stay the executor's, so a backend only supplies kernels.
pub trait Accelerate {
    /// `Some(reads)` claims node `node` of `graph`; `reads[pos]` says whether the backend reads
    /// operand `pos`. An operand nobody reads is never computed, nor is anything only it reads
    /// (so a claimed matmul with a pre-packed weight never evaluates the weight's fold).
    fn claim(&self, graph: &Graph, node: usize) -> Option<Vec<bool>>;
    /// The value of a claimed node; it is checked against the node's type like any other.
    fn compute(&self, graph: &Graph, node: usize, operands: &dyn Operands) -> Result<Tensor, String>;
}

/// Claims nothing: [`execute`].
pub struct Reference;

impl Accelerate for Reference {
    fn claim(&self, _: &Graph, _: usize) -> Option<Vec<bool>> {
        None
    }
    fn compute(&self, _: &Graph, _: usize, _: &dyn Operands) -> Result<Tensor, String> {
        unreachable!("Reference claims nothing")
    }
}

/// Per node, whether it is skipped: nothing unclaimed reads it. Outputs, cache appends and
/// nodes nobody reads are always kept, so with no claims nothing is skipped.
pub fn skipped(graph: &Graph, claims: &[Option<Vec<bool>>]) -> Vec<bool> {
    let n = graph.nodes.len();
    let mut keep = vec![true; n];
    for node in &graph.nodes {
        for inp in &node.inputs {
            if let Some(k) = keep.get_mut(inp.index()) {
                *k = false;
            }
        }
    }
    for (_, id) in &graph.outputs {
        if let Some(k) = keep.get_mut(id.index()) {
            *k = true;
        }
    }
    for i in (0..n).rev() {
        let node = &graph.nodes[i];
        keep[i] |= matches!(node.op, Op::CacheAppend { .. });
        if !keep[i] {
            continue;
        }
        for (pos, inp) in node.inputs.iter().enumerate() {
            let read = claims.get(i).and_then(|c| c.as_ref()).is_none_or(|c| c.get(pos).copied().unwrap_or(true));
            if read && inp.index() < n {
                keep[inp.index()] = true;
            }
        }
    }
    keep.iter().map(|k| !k).collect()
}

