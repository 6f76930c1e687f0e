//! Which nodes the CPU engine computes itself. Shared by the compiler (which stores what the
//! claims read) and by the loader's checks, so the two cannot disagree.

use crate::exec::skipped;
use std::collections::HashMap;
use vl3c_backends::engine::KernelDesc;
use vl3c_ir::{Activation, DType, Graph, NodeId, Op};

/// Per node: `Some(true)` a matmul the engine runs on a pre-laid-out weight, `Some(false)` a
/// fold whose value is stored; and per node whether nothing unclaimed reads it.
pub(crate) fn claims_for(g: &Graph) -> (Vec<Option<bool>>, Vec<bool>) {
    let claims: Vec<Option<bool>> = (0..g.nodes.len())
        .map(|i| {
            if g.nodes[i].op == Op::Fold {
                Some(false)
            } else {
                matmul_claimable(g, i).then_some(true)
            }
        })
        .collect();
    let reads: Vec<Option<Vec<bool>>> = claims.iter().enumerate().map(|(i, c)| c.map(|m| reads(g, i, m))).collect();
    let skip = skipped(g, &reads);
    (claims, skip)
}

/// The operands a claim reads: none for a fold, all but the weight for a matmul.
pub(crate) fn reads(g: &Graph, node: usize, matmul: bool) -> Vec<bool> {
    (0..g.nodes[node].inputs.len()).map(|pos| matmul && pos != 1).collect()
}

/// An f32 matmul (plain or fused) whose rhs is a fold of constant shape `[k, n]`: the kernels'
/// `A[m, k] · W` with any batch dims of `A` folded into m.
pub(crate) fn matmul_claimable(g: &Graph, i: usize) -> bool {
    let node = &g.nodes[i];
    if !matches!(node.op, Op::MatMul | Op::FusedMatMul { .. }) || node.inputs.len() < 2 {
        return false;
    }
    let w = &g.nodes[node.inputs[1].index()];
    let a = &g.nodes[node.inputs[0].index()];
    w.op == Op::Fold
        && w.ty.rank() == 2
        && w.ty.shape.iter().all(|d| d.as_const().is_some())
        && a.ty.rank() >= 2
        && node.ty.dtype == DType::F32
        && node.inputs.iter().all(|x| g.nodes[x.index()].ty.dtype == DType::F32)
}

/// A structural key of a weight-only subgraph, equal for equal computations in any graph, so
/// a weight shared by prefill and decode is stored once.
pub(crate) fn fold_key(g: &Graph, id: NodeId) -> String {
    fn go(g: &Graph, id: NodeId, memo: &mut HashMap<usize, String>) -> String {
        if let Some(k) = memo.get(&id.index()) {
            return k.clone();
        }
        let n = &g.nodes[id.index()];
        let args: Vec<String> = n.inputs.iter().map(|&x| go(g, x, memo)).collect();
        let k = format!("{:?}:{}({})", n.op, n.ty, args.join(","));
        memo.insert(id.index(), k.clone());
        k
    }
    go(g, id, &mut HashMap::new())
}

/// The generated kernel that computes node `i`, if one does: f32 throughout, the row width a
/// constant (it is baked into the code), norm parameters exactly `[width]`, and no broadcasting.
pub(crate) fn kernel_desc(g: &Graph, i: usize) -> Option<KernelDesc> {
    let node = &g.nodes[i];
    let ins: Vec<_> = node.inputs.iter().map(|x| &g.nodes[x.index()].ty).collect();
    if node.ty.dtype != DType::F32 || ins.iter().any(|t| t.dtype != DType::F32) {
        return None;
    }
    let width = node.ty.shape.last().and_then(|d| d.as_const()).map(|w| w as usize);
    let param = |t: &vl3c_ir::TensorType| t.shape.len() == 1 && t.shape[0].as_const().map(|c| c as usize) == width;
    let same = || ins.iter().all(|t| t.shape == node.ty.shape);
    Some(match &node.op {
        Op::LayerNorm { eps } if same_rows(&ins) && param(ins[1]) && param(ins[2]) => KernelDesc::LayerNorm { width: width?, eps: *eps },
        Op::RmsNorm { eps } if same_rows(&ins) && param(ins[1]) => KernelDesc::RmsNorm { width: width?, eps: *eps },
        Op::Softmax => KernelDesc::Softmax { width: width? },
        Op::Activation(Activation::GeluTanh) if same() => KernelDesc::GeluTanh,
        Op::Activation(Activation::GeluErf) if same() => KernelDesc::GeluErf,
        Op::Activation(Activation::Silu) if same() => KernelDesc::Silu,
        Op::SwiGlu if same() => KernelDesc::SwiGlu,
        _ => return None,
    })
}

fn same_rows(ins: &[&vl3c_ir::TensorType]) -> bool {
    !ins.is_empty() && ins[0].rank() >= 1
}
