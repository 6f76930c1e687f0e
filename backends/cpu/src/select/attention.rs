//! Which `attention` nodes the CPU engine runs on its attention kernel, and what they read:
//! q, k and v in place where the graph only slices, reshapes and transposes them out of a fused
//! projection, k and v from the engine's KV cache where they are a `cache_append`, and the
//! `[n, heads·d]` rows the output projection reads written directly when the graph only
//! transposes and reshapes the result. Compile time only: the plan records the answers.

use crate::plan::{AppendRows, AttentionOperand};
use vl3c_ir::{AttentionMask, DType, Graph, NodeId, Op};

/// Each node's readers, as (reader, operand position), and whether it is a graph output.
pub struct Readers {
    by_node: Vec<Vec<(usize, usize)>>,
    output: Vec<bool>,
}

impl Readers {
    pub fn of(g: &Graph) -> Readers {
        let mut by_node = vec![Vec::new(); g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for (pos, x) in n.inputs.iter().enumerate() {
                by_node[x.index()].push((i, pos));
            }
        }
        let mut output = vec![false; g.nodes.len()];
        for (_, id) in &g.outputs {
            output[id.index()] = true;
        }
        Readers { by_node, output }
    }

    /// The readers of node `i`, as (reader, operand position).
    pub fn of_node(&self, i: usize) -> &[(usize, usize)] {
        &self.by_node[i]
    }

    pub fn is_output(&self, i: usize) -> bool {
        self.output[i]
    }

    /// The single reader of `i`, when it has exactly one and is not an output.
    fn only(&self, i: usize) -> Option<(usize, usize)> {
        match self.by_node[i].as_slice() {
            [r] if !self.output[i] => Some(*r),
            _ => None,
        }
    }
}

/// A claimed attention, derived from the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnPlan {
    /// The attention node.
    pub attn: usize,
    /// Whether the claimed node is `reshape(transpose(attn))`, `[n, heads·d]`.
    pub rows_out: bool,
    pub q: AttentionOperand,
    pub k: AttentionOperand,
    pub v: AttentionOperand,
    /// Every node the claim reads.
    pub reads: Vec<NodeId>,
}

/// The node a claim on attention `a` computes: the `[n, heads·d]` reshape when the result is
/// only transposed to rows and reshaped, else `a` itself.
pub fn claim_node(g: &Graph, r: &Readers, a: usize) -> usize {
    let rows = || {
        let (t, _) = r.only(a)?;
        let (re, _) = r.only(t)?;
        let ok_t = matches!(&g.nodes[t].op, Op::Transpose { perm } if perm == &[1, 0, 2]);
        let (tn, rn) = (&g.nodes[t], &g.nodes[re]);
        let ok_r = matches!(rn.op, Op::Reshape { .. })
            && rn.ty.rank() == 2
            && rn.ty.shape[0] == tn.ty.shape[0];
        (ok_t && ok_r).then_some(re)
    };
    rows().unwrap_or(a)
}

/// The plan of a claim on `node` (an attention, or the reshape [`claim_node`] picks), when the
/// kernel can run it; `held`: whether the engine keeps the KV caches.
pub fn plan(g: &Graph, r: &Readers, node: usize, held: bool) -> Option<AttnPlan> {
    let (attn, rows_out) = match g.nodes[node].op {
        Op::Attention { .. } => (node, false),
        Op::Reshape { .. } => {
            let t = g.nodes[node].inputs[0].index();
            let a = g.nodes[t].inputs.first()?.index();
            if !matches!(g.nodes[a].op, Op::Attention { .. }) || claim_node(g, r, a) != node {
                return None;
            }
            (a, true)
        }
        _ => return None,
    };
    let n = &g.nodes[attn];
    let Op::Attention {
        mask,
        rope_q,
        rope_k,
        ..
    } = n.op
    else {
        return None;
    };
    let ty = |pos: usize| &g.nodes[n.inputs[pos].index()].ty;
    if n.ty.dtype != DType::F32
        || n.ty.rank() != 3
        || (0..3).any(|p| ty(p).dtype != DType::F32 || ty(p).rank() != 3)
    {
        return None;
    }
    let d = n.ty.shape[2].as_const()?;
    if ty(1).shape[2].as_const() != Some(d) || ty(2).shape[2].as_const() != Some(d) {
        return None;
    }
    let mut reads = Vec::new();
    let src = |pos: usize, reads: &mut Vec<NodeId>| -> Option<AttentionOperand> {
        let x = n.inputs[pos];
        if pos > 0 && held {
            if let Op::CacheAppend { name, .. } = &g.nodes[x.index()].op {
                return cache_holdable(g, r, x.index())
                    .then(|| AttentionOperand::Cache { name: name.clone() });
            }
        }
        Some(match columns(g, x) {
            Some((node, offset)) => {
                reads.push(node);
                AttentionOperand::Columns {
                    node: node.index(),
                    offset,
                }
            }
            None => {
                reads.push(x);
                AttentionOperand::Operand
            }
        })
    };
    let (q, k, v) = (
        src(0, &mut reads)?,
        src(1, &mut reads)?,
        src(2, &mut reads)?,
    );
    let mut rest = 3;
    if rope_q || rope_k {
        // Tables shared by the heads: [.., n, d] with leading dims of 1.
        for pos in [3, 4] {
            let t = ty(pos);
            let r = t.rank();
            if t.dtype != DType::F32
                || r < 2
                || t.shape[r - 1].as_const() != Some(d)
                || t.shape[r - 2] != n.ty.shape[1]
            {
                return None;
            }
            if t.shape[..r - 2].iter().any(|x| x.as_const() != Some(1)) {
                return None;
            }
            reads.push(n.inputs[pos]);
        }
        rest = 5;
    }
    if mask == AttentionMask::Segments {
        reads.push(n.inputs[rest]);
    }
    Some(AttnPlan {
        attn,
        rows_out,
        q,
        k,
        v,
        reads,
    })
}

/// `x` = `transpose[1, 0, 2](reshape[len, H, d](slice…(X)))` with `X` 2-D f32 and the slices
/// along its columns: `(X, first column)`.
pub fn columns(g: &Graph, x: NodeId) -> Option<(NodeId, usize)> {
    let t = &g.nodes[x.index()];
    if !matches!(&t.op, Op::Transpose { perm } if perm == &[1, 0, 2]) {
        return None;
    }
    let re = &g.nodes[t.inputs[0].index()];
    if !matches!(re.op, Op::Reshape { .. }) || re.ty.rank() != 3 {
        return None;
    }
    let (h, d) = (re.ty.shape[1].as_const()?, re.ty.shape[2].as_const()?);
    let mut cur = re.inputs[0];
    let mut offset = 0usize;
    let width = h.checked_mul(d)?;
    let node = &g.nodes[cur.index()];
    if node.ty.rank() != 2
        || node.ty.shape[1].as_const() != Some(width)
        || node.ty.shape[0] != re.ty.shape[0]
    {
        return None;
    }
    loop {
        let node = &g.nodes[cur.index()];
        if node.ty.rank() != 2 || node.ty.dtype != DType::F32 {
            return None;
        }
        match &node.op {
            Op::Slice { axis: 1, start, .. } => {
                offset += usize::try_from(start.as_const()?).ok()?;
                cur = node.inputs[0];
            }
            _ => return Some((cur, offset)),
        }
    }
}

/// A `cache_append` the engine can keep in its own storage: f32 `[heads, len, d]` along axis 1,
/// appended to a `cache_read` nothing else reads, and read only as the k or v of attentions.
pub fn cache_holdable(g: &Graph, r: &Readers, i: usize) -> bool {
    let n = &g.nodes[i];
    let Op::CacheAppend { axis: 1, .. } = n.op else {
        return false;
    };
    let read = n.inputs[0].index();
    let ok_read = matches!(g.nodes[read].op, Op::CacheRead { .. })
        && r.by_node[read].len() == 1
        && !r.output[read];
    let ok_type =
        n.ty.dtype == DType::F32 && n.ty.rank() == 3 && n.ty.shape[2].as_const().is_some();
    let ok_readers = !r.output[i]
        && r.by_node[i].iter().all(|&(a, pos)| {
            (pos == 1 || pos == 2) && matches!(g.nodes[a].op, Op::Attention { .. })
        });
    ok_read && ok_type && ok_readers
}

/// Whether every cache of `g` can be kept by the engine (and it has some).
pub fn all_caches_holdable(g: &Graph) -> bool {
    let r = Readers::of(g);
    let appends: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| matches!(g.nodes[i].op, Op::CacheAppend { .. }))
        .collect();
    let reads_ok = g.nodes.iter().enumerate().all(|(i, n)| {
        !matches!(n.op, Op::CacheRead { .. })
            || r.by_node[i].iter().all(|&(a, _)| appends.contains(&a))
    });
    !appends.is_empty() && reads_ok && appends.iter().all(|&i| cache_holdable(g, &r, i))
}

/// The source of a holdable `cache_append`'s new rows, and the nodes it reads.
pub fn append_source(g: &Graph, i: usize) -> (AppendRows, Vec<NodeId>) {
    let rows = g.nodes[i].inputs[1];
    let n = &g.nodes[rows.index()];
    let d = n.ty.shape.last().and_then(|x| x.as_const());
    if let Some((node, offset)) = columns(g, rows) {
        return (
            AppendRows::Columns {
                node: node.index(),
                offset,
                rope: None,
            },
            vec![node],
        );
    }
    if let (Op::Rope, [x, c, s]) = (&n.op, n.inputs.as_slice()) {
        let table_ok = |t: NodeId| {
            let ty = &g.nodes[t.index()].ty;
            let r = ty.rank();
            ty.dtype == DType::F32
                && r >= 2
                && ty.shape[r - 1].as_const() == d
                && ty.shape[r - 2] == n.ty.shape[1]
                && ty.shape[..r - 2].iter().all(|x| x.as_const() == Some(1))
        };
        if let (Some((node, offset)), true) = (columns(g, *x), table_ok(*c) && table_ok(*s)) {
            return (
                AppendRows::Columns {
                    node: node.index(),
                    offset,
                    rope: Some([c.index(), s.index()]),
                },
                vec![node, *c, *s],
            );
        }
    }
    (AppendRows::Operand, vec![rows])
}

/// A `swiglu` of two column ranges of one 2-D matrix (the merged gate/up projection): the
/// matrix and the first columns of gate and up.
pub fn swiglu_columns(g: &Graph, i: usize) -> Option<(NodeId, usize, usize)> {
    let n = &g.nodes[i];
    if n.op != Op::SwiGlu || n.ty.rank() != 2 || n.ty.dtype != DType::F32 {
        return None;
    }
    let half = |x: NodeId| -> Option<(NodeId, usize)> {
        let mut cur = x;
        let mut offset = 0usize;
        while let Op::Slice { axis: 1, start, .. } = &g.nodes[cur.index()].op {
            offset += usize::try_from(start.as_const()?).ok()?;
            cur = g.nodes[cur.index()].inputs[0];
        }
        let src = &g.nodes[cur.index()];
        let ok = cur != x
            && src.ty.rank() == 2
            && src.ty.dtype == DType::F32
            && g.nodes[x.index()].ty.shape == n.ty.shape;
        ok.then_some((cur, offset))
    };
    let (gx, go) = half(n.inputs[0])?;
    let (ux, uo) = half(n.inputs[1])?;
    (gx == ux).then_some((gx, go, uo))
}
