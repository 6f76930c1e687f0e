//! What the CPU engine runs each node with, decided at compile time from the optimized graph.
//! The answers go into the plan ([`crate::plan::Claim`]); the loader never runs these matchers.

pub mod attention;

use crate::plan::{AppendRows, Claim, KernelDesc};
use attention::{AttnPlan, Readers};
use vl3c_ir::{Activation, DType, Graph, NodeId, Op};
use vl3c_reference::skipped;

/// What the engine does with a node, before weights are stored and kernels numbered.
#[derive(Clone, Debug, PartialEq)]
pub enum Want {
    /// A fold whose value is stored.
    Fold,
    /// A matmul on a pre-laid-out weight.
    Matmul,
    /// A gather of rows of a weight, read in place.
    Gather,
    /// An attention on the engine's kernel.
    Attention(AttnPlan),
    /// A cache append into the engine's own KV cache.
    CacheAppend(AppendRows),
    /// A SwiGLU over two column ranges of one matrix.
    SwiGluColumns {
        matrix: usize,
        gate: usize,
        up: usize,
    },
    /// A fused op on a generated kernel.
    Kernel(KernelDesc),
}

/// Per node what the engine claims (`None`: the reference executor's code runs it), and per
/// node whether nothing that runs reads it. `held`: the engine keeps the KV caches (every
/// `cache_append` and the attentions over them claimed).
pub fn select(g: &Graph, held: bool) -> (Vec<Option<Want>>, Vec<bool>) {
    let r = Readers::of(g);
    let mut wants: Vec<Option<Want>> = (0..g.nodes.len())
        .map(|i| {
            if g.nodes[i].op == Op::Fold {
                Some(Want::Fold)
            } else if matmul_claimable(g, i) {
                Some(Want::Matmul)
            } else if gather_claimable(g, i) {
                Some(Want::Gather)
            } else if held && matches!(g.nodes[i].op, Op::CacheAppend { .. }) {
                Some(Want::CacheAppend(attention::append_source(g, i).0))
            } else if let Some((matrix, gate, up)) = attention::swiglu_columns(g, i) {
                Some(Want::SwiGluColumns {
                    matrix: matrix.index(),
                    gate,
                    up,
                })
            } else {
                kernel_desc(g, i).map(Want::Kernel)
            }
        })
        .collect();
    for a in (0..g.nodes.len()).filter(|&a| matches!(g.nodes[a].op, Op::Attention { .. })) {
        let c = attention::claim_node(g, &r, a);
        if let Some(p) = attention::plan(g, &r, c, held) {
            wants[c] = Some(Want::Attention(p));
        }
    }
    let reads: Vec<Option<Vec<NodeId>>> = wants
        .iter()
        .enumerate()
        .map(|(i, w)| w.as_ref().map(|w| reads(g, i, w)))
        .collect();
    let skip = skipped(g, &reads);
    (wants, skip)
}

/// The nodes a claim reads: none for a fold, the operands but the weight for a matmul, the
/// indices for a gather, the new rows for a cache append, the matrix for SwiGLU columns, the
/// plan's for an attention, every operand for a kernel.
fn reads(g: &Graph, node: usize, want: &Want) -> Vec<NodeId> {
    let ins = &g.nodes[node].inputs;
    match want {
        Want::Fold => Vec::new(),
        Want::Matmul => ins
            .iter()
            .enumerate()
            .filter(|&(pos, _)| pos != 1)
            .map(|(_, &x)| x)
            .collect(),
        Want::Gather => ins.get(1).copied().into_iter().collect(),
        Want::CacheAppend(_) => attention::append_source(g, node).1,
        Want::Attention(p) => p.reads.clone(),
        Want::SwiGluColumns { matrix, .. } => vec![NodeId(*matrix as u32)],
        Want::Kernel(_) => ins.clone(),
    }
}

/// The claim of an attention plan.
pub fn attention_claim(node: usize, p: &AttnPlan) -> Claim {
    Claim::Attention {
        node,
        attention: p.attn,
        rows_out: p.rows_out,
        q: p.q.clone(),
        k: p.k.clone(),
        v: p.v.clone(),
    }
}

/// Whether the engine can keep every KV cache of `g` itself: each `cache_append` is holdable
/// and every attention over one runs on the kernel.
pub fn holds_caches(g: &Graph) -> bool {
    if !attention::all_caches_holdable(g) {
        return false;
    }
    let r = Readers::of(g);
    (0..g.nodes.len())
        .filter(|&a| matches!(g.nodes[a].op, Op::Attention { .. }))
        .all(|a| {
            let reads_cache = g.nodes[a]
                .inputs
                .iter()
                .any(|x| matches!(g.nodes[x.index()].op, Op::CacheAppend { .. }));
            !reads_cache || attention::plan(g, &r, attention::claim_node(g, &r, a), true).is_some()
        })
}

/// A gather along axis 0 of a 2-D weight of constant shape (the token embedding lookup).
pub fn gather_claimable(g: &Graph, i: usize) -> bool {
    let node = &g.nodes[i];
    let (Op::Gather { axis: 0 }, [table, _]) = (&node.op, node.inputs.as_slice()) else {
        return false;
    };
    let t = &g.nodes[table.index()];
    matches!(t.op, Op::Weight { .. })
        && t.ty.rank() == 2
        && t.ty.shape.iter().all(|d| d.as_const().is_some())
}

/// For a claimable gather, the claimed matmul whose weight is its table transposed (a tied LM
/// head: `fold(transpose(cast(table)))`, the cast absent for an f32 table), whose stored form the gather can read instead.
pub fn tied_matmul(g: &Graph, gather: usize) -> Option<usize> {
    let table = g.nodes[gather].inputs[0];
    (0..g.nodes.len()).find(|&m| {
        matmul_claimable(g, m) && {
            let fold = &g.nodes[g.nodes[m].inputs[1].index()];
            let t = &g.nodes[fold.inputs[0].index()];
            matches!(&t.op, Op::Transpose { perm } if perm == &[1, 0]) && {
                let c = &g.nodes[t.inputs[0].index()];
                t.inputs[0] == table
                    || (matches!(c.op, Op::Cast { to: DType::F32 }) && c.inputs[0] == table)
            }
        }
    })
}

/// An f32 matmul (plain or fused) whose rhs is a fold of constant shape `[k, n]`: the kernels'
/// `A[m, k] · W` with any batch dims of `A` folded into m.
pub fn matmul_claimable(g: &Graph, i: usize) -> bool {
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
        && node
            .inputs
            .iter()
            .all(|x| g.nodes[x.index()].ty.dtype == DType::F32)
}

/// The generated kernel that computes node `i`, if one does: f32 throughout, the row width a
/// constant (it is baked into the code), norm parameters exactly `[width]`, and no broadcasting.
pub fn kernel_desc(g: &Graph, i: usize) -> Option<KernelDesc> {
    let node = &g.nodes[i];
    let ins: Vec<_> = node.inputs.iter().map(|x| &g.nodes[x.index()].ty).collect();
    if node.ty.dtype != DType::F32 || ins.iter().any(|t| t.dtype != DType::F32) {
        return None;
    }
    let width = node
        .ty
        .shape
        .last()
        .and_then(|d| d.as_const())
        .map(|w| w as usize);
    let param = |t: &vl3c_ir::TensorType| {
        t.shape.len() == 1 && t.shape[0].as_const().map(|c| c as usize) == width
    };
    let same = || ins.iter().all(|t| t.shape == node.ty.shape);
    Some(match &node.op {
        Op::LayerNorm { eps } if same_rows(&ins) && param(ins[1]) && param(ins[2]) => {
            KernelDesc::LayerNorm {
                width: width?,
                eps: *eps,
            }
        }
        Op::RmsNorm { eps } if same_rows(&ins) && param(ins[1]) => KernelDesc::RmsNorm {
            width: width?,
            eps: *eps,
        },
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
