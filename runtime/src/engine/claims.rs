//! The loader's side of the plan: each claim checked against the graph's types (node kinds,
//! dtypes, constant widths, stored tensors' shapes), and what it reads. Nothing here decides
//! what a node runs on; the compiler did (`vl3c_cpu::select`) and the plan says it, so an
//! engine is read the same way whatever the compiler's matchers become.

use std::collections::HashMap;
use vl3c_cpu::plan::{AppendRows, AttentionOperand, Claim, KernelDesc, Plan};
use vl3c_cpu::select::attention::Readers;
use vl3c_engine::{TensorEntry, TensorLayout};
use vl3c_ir::{Activation, AttentionMask, DType, Graph, NodeId, Op, TensorType};

/// A claim as the runner executes it.
pub(crate) struct Claimed {
    pub kind: Kind,
    /// Nodes the claim reads (the executor computes these and skips what nothing else reads).
    pub reads: Vec<NodeId>,
}

pub(crate) enum Kind {
    Fold(TensorEntry),
    Matmul(TensorEntry),
    Kernel(usize),
    Gather(TensorEntry, bool),
    Attention(Attention),
    CacheAppend(String, AppendRows),
    /// A swiglu over column ranges of one matrix (node, gate and up offsets).
    SwiGluColumns(NodeId, usize, usize),
}

/// A claimed attention, as the plan records it.
#[derive(Clone, Debug)]
pub(crate) struct Attention {
    pub attn: usize,
    pub rows_out: bool,
    pub q: AttentionOperand,
    pub k: AttentionOperand,
    pub v: AttentionOperand,
}

fn id(i: usize) -> NodeId {
    NodeId(i as u32)
}

fn konst(t: &TensorType, axis: usize) -> Option<usize> {
    t.shape.get(axis)?.as_const().map(|c| c as usize)
}

fn all_f32(g: &Graph, node: usize) -> bool {
    let n = &g.nodes[node];
    n.ty.dtype == DType::F32
        && n.inputs
            .iter()
            .all(|x| g.nodes[x.index()].ty.dtype == DType::F32)
}

/// Checks `claim` against graph `g` and the plan's tensors; `held`: the engine keeps the KV
/// caches. The error says what does not match.
pub(crate) fn check(
    g: &Graph,
    plan: &Plan,
    claim: &Claim,
    held: bool,
) -> Result<(usize, Claimed), String> {
    let node = claim.node();
    let bad = |what: &str| {
        format!(
            "graph `{}`: {what} claim on %{node} does not match graphs.vir",
            g.name
        )
    };
    let n = g.nodes.get(node).ok_or_else(|| bad("a"))?;
    let tensor = |t: &str| {
        plan.tensors
            .get(t)
            .cloned()
            .ok_or_else(|| format!("graph `{}` reads unknown tensor `{t}`", g.name))
    };
    let consts = |t: &TensorType| -> Option<Vec<usize>> {
        t.shape
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect()
    };
    let claimed = match claim {
        Claim::Fold { tensor: t, .. } => {
            let e = tensor(t)?;
            // A fold's value has a constant type (it depends on weights only); the stored
            // tensor is read as exactly that (its bytes were checked against its own shape).
            if n.op != Op::Fold
                || e.layout != TensorLayout::Raw
                || e.dtype != n.ty.dtype.to_string()
                || consts(&n.ty) != Some(e.shape.clone())
            {
                return Err(bad("fold"));
            }
            Claimed {
                kind: Kind::Fold(e),
                reads: Vec::new(),
            }
        }
        Claim::Matmul { tensor: t, .. } => {
            let e = tensor(t)?;
            let ok = matches!(n.op, Op::MatMul | Op::FusedMatMul { .. })
                && n.inputs.len() >= 2
                && all_f32(g, node)
                && g.nodes[n.inputs[0].index()].ty.rank() >= 2
                && g.nodes[n.inputs[1].index()].op == Op::Fold
                && e.dtype == "f32"
                && consts(&g.nodes[n.inputs[1].index()].ty)
                    .is_some_and(|s| s.len() == 2 && s == e.shape);
            if !ok {
                return Err(bad("matmul"));
            }
            let reads = n
                .inputs
                .iter()
                .enumerate()
                .filter(|&(pos, _)| pos != 1)
                .map(|(_, &x)| x)
                .collect();
            Claimed {
                kind: Kind::Matmul(e),
                reads,
            }
        }
        Claim::Kernel { kernel, .. } => {
            let desc = plan.kernels.get(*kernel).ok_or_else(|| bad("kernel"))?;
            if !kernel_fits(g, node, desc) {
                return Err(bad("kernel"));
            }
            Claimed {
                kind: Kind::Kernel(*kernel),
                reads: n.inputs.clone(),
            }
        }
        Claim::SwiGluColumns {
            matrix, gate, up, ..
        } => {
            let m = g
                .nodes
                .get(*matrix)
                .filter(|_| *matrix < node)
                .ok_or_else(|| bad("swiglu"))?;
            let (f, width) = (konst(&n.ty, 1), konst(&m.ty, 1));
            let ok = n.op == Op::SwiGlu
                && n.ty.rank() == 2
                && m.ty.rank() == 2
                && n.ty.dtype == DType::F32
                && m.ty.dtype == DType::F32
                && m.ty.shape[0] == n.ty.shape[0]
                && matches!((f, width), (Some(f), Some(w)) if gate.max(up).checked_add(f).is_some_and(|end| end <= w));
            if !ok {
                return Err(bad("swiglu"));
            }
            Claimed {
                kind: Kind::SwiGluColumns(id(*matrix), *gate, *up),
                reads: vec![id(*matrix)],
            }
        }
        Claim::Gather {
            tensor: name,
            transposed,
            ..
        } => {
            let table = n.inputs.first().map(|t| &g.nodes[t.index()]);
            let dims = table
                .filter(|t| matches!(t.op, Op::Weight { .. }) && t.ty.rank() == 2)
                .and_then(|t| consts(&t.ty));
            let (Op::Gather { axis: 0 }, Some(dims), 2) = (&n.op, dims, n.inputs.len()) else {
                return Err(bad("gather"));
            };
            let e = tensor(name)?;
            let stored = if *transposed {
                vec![dims[1], dims[0]]
            } else {
                dims
            };
            let layout_ok = match e.layout {
                TensorLayout::Raw => !*transposed || e.dtype == "f32",
                TensorLayout::PackedBf16 { n, k } => *transposed && [k, n] == stored[..],
            };
            let dtype = table.map(|t| t.ty.dtype.to_string()).unwrap_or_default();
            if e.shape != stored || !layout_ok || (!*transposed && e.dtype != dtype) {
                return Err(bad("gather"));
            }
            Claimed {
                kind: Kind::Gather(e, *transposed),
                reads: vec![n.inputs[1]],
            }
        }
        Claim::Attention {
            attention,
            rows_out,
            q,
            k,
            v,
            ..
        } => {
            let a = Attention {
                attn: *attention,
                rows_out: *rows_out,
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
            };
            let reads = attention_reads(g, node, &a, held).ok_or_else(|| bad("attention"))?;
            Claimed {
                kind: Kind::Attention(a),
                reads,
            }
        }
        Claim::CacheAppend { rows, .. } => {
            let (name, reads) = append_reads(g, node, rows).ok_or_else(|| bad("cache"))?;
            Claimed {
                kind: Kind::CacheAppend(name, rows.clone()),
                reads,
            }
        }
    };
    Ok((node, claimed))
}

/// Every raw checkpoint weight graph `g` reads from `weights.bin` (`weights`: the plan's list)
/// is stored raw with the dtype and shape the graph declares, so it is never decoded as
/// another type (an `i64` table read as f32).
pub(crate) fn check_raw_weights(g: &Graph, plan: &Plan, weights: &[String]) -> Result<(), String> {
    for n in &g.nodes {
        let Op::Weight { name } = &n.op else { continue };
        if !weights.contains(name) {
            continue;
        }
        let e = plan
            .tensors
            .get(name)
            .ok_or_else(|| format!("graph `{}` reads unknown tensor `{name}`", g.name))?;
        let shape: Option<Vec<usize>> =
            n.ty.shape
                .iter()
                .map(|d| d.as_const().map(|c| c as usize))
                .collect();
        if e.layout != TensorLayout::Raw
            || e.dtype != n.ty.dtype.to_string()
            || shape.as_ref() != Some(&e.shape)
        {
            return Err(format!(
                "tensor `{name}` is {}{:?} ({:?} layout), but graph `{}` reads weight {name} as {}",
                e.dtype, e.shape, e.layout, g.name, n.ty
            ));
        }
    }
    Ok(())
}

/// Whether `desc` computes node `node`: the op it implements, f32 throughout, the row width and
/// parameters it bakes in.
fn kernel_fits(g: &Graph, node: usize, desc: &KernelDesc) -> bool {
    let n = &g.nodes[node];
    let width =
        n.ty.shape
            .last()
            .and_then(|d| d.as_const())
            .map(|w| w as usize);
    let param = |pos: usize, w: usize| {
        n.inputs.get(pos).is_some_and(|x| {
            konst(&g.nodes[x.index()].ty, 0) == Some(w) && g.nodes[x.index()].ty.rank() == 1
        })
    };
    let same = || {
        n.inputs
            .iter()
            .all(|x| g.nodes[x.index()].ty.shape == n.ty.shape)
    };
    all_f32(g, node)
        && match (desc, &n.op) {
            (KernelDesc::LayerNorm { width: w, eps }, Op::LayerNorm { eps: e }) => {
                width == Some(*w) && e == eps && param(1, *w) && param(2, *w)
            }
            (KernelDesc::RmsNorm { width: w, eps }, Op::RmsNorm { eps: e }) => {
                width == Some(*w) && e == eps && param(1, *w)
            }
            (KernelDesc::Softmax { width: w }, Op::Softmax) => width == Some(*w),
            (KernelDesc::GeluTanh, Op::Activation(Activation::GeluTanh))
            | (KernelDesc::GeluErf, Op::Activation(Activation::GeluErf))
            | (KernelDesc::Silu, Op::Activation(Activation::Silu))
            | (KernelDesc::SwiGlu, Op::SwiGlu) => same(),
            _ => false,
        }
}

/// `(heads, len, d)` read as `src` for operand `pos` of attention `a`: checks the columns lie
/// inside the projection and a cache operand is a `cache_append` of that name.
fn operand_reads(
    g: &Graph,
    a: usize,
    pos: usize,
    src: &AttentionOperand,
    held: bool,
    reads: &mut Vec<NodeId>,
) -> Option<()> {
    let x = g.nodes[a].inputs[pos];
    let ty = &g.nodes[x.index()].ty;
    let (h, d) = (konst(ty, 0)?, konst(ty, 2)?);
    match src {
        AttentionOperand::Operand => reads.push(x),
        AttentionOperand::Columns { node, offset } => {
            let m = g.nodes.get(*node).filter(|_| *node < a)?;
            let end = offset.checked_add(h.checked_mul(d)?)?;
            let ok = m.ty.rank() == 2
                && m.ty.dtype == DType::F32
                && m.ty.shape[0] == ty.shape[1]
                && konst(&m.ty, 1).is_some_and(|w| end <= w);
            ok.then(|| reads.push(id(*node)))?;
        }
        AttentionOperand::Cache { name } => {
            let is_append =
                matches!(&g.nodes[x.index()].op, Op::CacheAppend { name: n, .. } if n == name);
            (held && pos > 0 && is_append).then_some(())?;
        }
    }
    Some(())
}

/// The nodes a claimed attention reads, when the claim fits the graph.
fn attention_reads(g: &Graph, node: usize, a: &Attention, held: bool) -> Option<Vec<NodeId>> {
    let n = g.nodes.get(a.attn)?;
    let Op::Attention {
        mask,
        rope_q,
        rope_k,
        ..
    } = n.op
    else {
        return None;
    };
    let placed = if a.rows_out {
        let re = &g.nodes[node];
        let t = re.inputs.first().map(|t| &g.nodes[t.index()]);
        matches!(re.op, Op::Reshape { .. })
            && re.ty.rank() == 2
            && t.is_some_and(|t| {
                matches!(&t.op, Op::Transpose { perm } if perm == &[1, 0, 2])
                    && t.inputs.first() == Some(&id(a.attn))
            })
    } else {
        node == a.attn
    };
    let ty = |pos: usize| &g.nodes[n.inputs[pos].index()].ty;
    let d = konst(&n.ty, 2);
    if !placed
        || n.ty.dtype != DType::F32
        || n.ty.rank() != 3
        || (0..3).any(|p| ty(p).dtype != DType::F32 || ty(p).rank() != 3 || konst(ty(p), 2) != d)
    {
        return None;
    }
    let mut reads = Vec::new();
    for (pos, src) in [&a.q, &a.k, &a.v].into_iter().enumerate() {
        operand_reads(g, a.attn, pos, src, held, &mut reads)?;
    }
    let mut rest = 3;
    if rope_q || rope_k {
        for pos in [3, 4] {
            let t = ty(pos);
            let r = t.rank();
            let ok = t.dtype == DType::F32
                && r >= 2
                && konst(t, r - 1) == d
                && t.shape[r - 2] == n.ty.shape[1]
                && t.shape[..r - 2].iter().all(|x| x.as_const() == Some(1));
            ok.then_some(())?;
            reads.push(n.inputs[pos]);
        }
        rest = 5;
    }
    if mask == AttentionMask::Segments {
        reads.push(*n.inputs.get(rest)?);
    }
    Some(reads)
}

/// The cache a claimed `cache_append` writes and the nodes it reads, when the claim fits.
fn append_reads(g: &Graph, node: usize, rows: &AppendRows) -> Option<(String, Vec<NodeId>)> {
    let n = &g.nodes[node];
    let Op::CacheAppend { name, axis: 1 } = &n.op else {
        return None;
    };
    let read = &g.nodes[n.inputs[0].index()];
    let new = &g.nodes[n.inputs[1].index()].ty;
    let (h, d) = (konst(&n.ty, 0)?, konst(&n.ty, 2)?);
    if !matches!(read.op, Op::CacheRead { .. }) || n.ty.dtype != DType::F32 || n.ty.rank() != 3 {
        return None;
    }
    let reads = match rows {
        AppendRows::Operand => vec![n.inputs[1]],
        AppendRows::Columns {
            node: m,
            offset,
            rope,
        } => {
            let mt = &g.nodes.get(*m).filter(|_| *m < node)?.ty;
            let end = offset.checked_add(h.checked_mul(d)?)?;
            let ok = mt.rank() == 2
                && mt.dtype == DType::F32
                && mt.shape[0] == new.shape[1]
                && konst(mt, 1).is_some_and(|w| end <= w);
            ok.then_some(())?;
            let mut reads = vec![id(*m)];
            if let Some(tables) = rope {
                for &t in tables {
                    let tt = &g.nodes.get(t).filter(|_| t < node)?.ty;
                    let r = tt.rank();
                    let ok = tt.dtype == DType::F32
                        && r >= 2
                        && konst(tt, r - 1) == Some(d)
                        && tt.shape[r - 2] == new.shape[1];
                    ok.then_some(())?;
                    reads.push(id(t));
                }
            }
            reads
        }
    };
    Some((name.clone(), reads))
}

/// A claimed cache append produces no value, only the engine's cache: every reader must be a
/// claimed attention that reads it as that cache, and the `cache_read` under it read by it alone.
pub(crate) fn check_held_caches(g: &Graph, claims: &HashMap<usize, Claimed>) -> Result<(), String> {
    let readers = Readers::of(g);
    for (&node, c) in claims {
        let Kind::CacheAppend(name, _) = &c.kind else {
            continue;
        };
        let read = g.nodes[node].inputs[0].index();
        let bad = || {
            format!("graph `{}`: the engine keeps cache `{name}`, but %{node} is read other than by its attentions", g.name)
        };
        if readers.is_output(node) || readers.is_output(read) || readers.of_node(read).len() != 1 {
            return Err(bad());
        }
        for &(r, pos) in readers.of_node(node) {
            let by_kernel = claims.values().any(|c| match &c.kind {
                Kind::Attention(a) => a.attn == r && matches!([&a.q, &a.k, &a.v].get(pos), Some(AttentionOperand::Cache { name: n }) if n == name),
                _ => false,
            });
            if !by_kernel {
                return Err(bad());
            }
        }
    }
    Ok(())
}
