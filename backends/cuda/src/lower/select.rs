//! Selection: the template instance (or GEMM call) for each runtime node of one graph.

use super::{DevicePlan, LowerError, Step};
use crate::gemm::{describe_with, Inputs, WeightLayout};
use crate::kir::Ty;
use crate::templates::activation::{Act, GateUp, SwiGlu};
use crate::templates::attention::{DecodeAttention, PrefillAttention, VisionAttention};
use crate::templates::embed::{Embedding, MaskedScatter};
use crate::templates::gemv::Gemv;
use crate::templates::norm::{Norm, NormKind};
use crate::templates::prune::{DiffFramePrune, MaskedSelect};
use crate::templates::rope::{HeadSource, Rope};
use crate::templates::softmax::Softmax;
use crate::templates::vision::SpatialMerge;
use crate::templates::{CacheAppend, ElementwiseChain, FloatTy, Reduce, Template};
use std::collections::BTreeMap;
use std::sync::Arc;
use vl3c_ir::{AttentionMask, DType, Dim, Graph, NodeId, Op, TensorType};

/// Which nodes run at inference time: everything the outputs reach without passing through a
/// `fold` (a fold's value is computed at compile time and stored; what only it reads never runs).
pub fn runtime_nodes(g: &Graph) -> Vec<bool> {
    let mut live = vec![false; g.nodes.len()];
    let mut stack: Vec<usize> = g.outputs.iter().map(|(_, id)| id.index()).collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        if g.nodes[i].op != Op::Fold {
            stack.extend(g.nodes[i].inputs.iter().map(|n| n.index()));
        }
    }
    live
}

/// The steps of `g`, interning the instances they launch into `plan`.
pub fn select_graph(g: &Graph, plan: &mut DevicePlan) -> Result<Vec<Step>, LowerError> {
    let live = runtime_nodes(g);
    let mut steps = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !live[i] || is_source(&n.op) {
            continue;
        }
        let fail = |why: String| LowerError {
            graph: g.name.clone(),
            node: i,
            op: n.op.mnemonic().to_string(),
            why,
        };
        let step = select_node(g, NodeId(i as u32), plan).map_err(fail)?;
        steps.push(step);
    }
    Ok(steps)
}

/// Values the device reads but no step computes: bound at load or stored by the compiler.
fn is_source(op: &Op) -> bool {
    matches!(
        op,
        Op::Input { .. }
            | Op::Weight { .. }
            | Op::CacheRead { .. }
            | Op::Fold
            | Op::Constant { .. }
    )
}

fn float(d: DType) -> Result<FloatTy, String> {
    match d {
        DType::F32 => Ok(FloatTy::F32),
        DType::BF16 => Ok(FloatTy::Bf16),
        other => Err(format!("{other} tensors have no float kernels")),
    }
}

/// A dimension the checkpoint fixes, which a template bakes in.
fn fixed(g: &Graph, id: NodeId, axis: isize, what: &str) -> Result<usize, String> {
    let shape = &g.ty(id).shape;
    let axis = if axis < 0 {
        shape.len() as isize + axis
    } else {
        axis
    };
    let d = shape
        .get(axis as usize)
        .ok_or_else(|| format!("{what}: operand has rank {}", shape.len()))?;
    d.as_const()
        .map(|v| v as usize)
        .ok_or_else(|| format!("{what} {d} is not fixed by the checkpoint"))
}

fn select_node(g: &Graph, id: NodeId, plan: &mut DevicePlan) -> Result<Step, String> {
    let n = g.node(id);
    let node = id.index();
    let ops = &n.inputs;
    let dtype = n.ty.dtype;
    let template: Arc<dyn Template> = match &n.op {
        Op::Reshape { .. } => {
            return Ok(Step::Alias {
                node,
                of: ops[0].index(),
            })
        }
        Op::MatMul | Op::FusedMatMul { .. } => return matmul(g, id, plan),
        Op::Attention { .. } => return attention(g, id, plan),
        Op::RmsNorm { eps } | Op::LayerNorm { eps } => Arc::new(Norm {
            kind: if matches!(n.op, Op::RmsNorm { .. }) {
                NormKind::Rms
            } else {
                NormKind::Layer
            },
            dtype: float(dtype)?,
            hidden: fixed(g, ops[0], -1, "hidden size")?,
            eps: *eps,
            residual: false,
        }),
        Op::Activation(act) => Arc::new(Act {
            act: *act,
            dtype: float(dtype)?,
            features: fixed(g, ops[0], -1, "features")?,
        }),
        Op::SwiGlu => Arc::new(SwiGlu {
            dtype: float(dtype)?,
            intermediate: fixed(g, ops[0], -1, "intermediate size")?,
            layout: GateUp::Separate,
        }),
        Op::Rope => Arc::new(Rope {
            dtype: float(dtype)?,
            heads: fixed(g, ops[0], 0, "heads")?,
            head_dim: fixed(g, ops[0], -1, "head_dim")?,
            source: HeadSource::Heads,
        }),
        Op::Softmax => Arc::new(Softmax {
            dtype: float(dtype)?,
        }),
        Op::SpatialMerge { merge } => Arc::new(SpatialMerge {
            dtype: float(dtype)?,
            features: fixed(g, ops[0], -1, "features")?,
            merge: *merge,
        }),
        Op::DiffFramePrune {
            threshold, merge, ..
        } => Arc::new(DiffFramePrune {
            dtype: float(g.ty(ops[0]).dtype)?,
            patch_values: fixed(g, ops[0], -1, "values per patch")?,
            merge: *merge,
            threshold: *threshold,
        }),
        Op::MaskedScatter => Arc::new(MaskedScatter {
            dtype: float(dtype)?,
            hidden: fixed(g, ops[0], -1, "hidden size")?,
        }),
        Op::MaskedSelect { .. } if dtype.is_float() && n.ty.rank() == 2 => Arc::new(MaskedSelect {
            dtype: float(dtype)?,
            features: fixed(g, ops[0], -1, "features")?,
        }),
        Op::Gather { axis: 0 }
            if dtype.is_float() && is_source(&g.node(ops[0]).op) && g.ty(ops[0]).rank() == 2 =>
        {
            Arc::new(Embedding {
                dtype: float(dtype)?,
                hidden: fixed(g, ops[0], -1, "hidden size")?,
            })
        }
        // The engine allocates each cache once at its maximum context, which attention reads too.
        Op::CacheAppend { axis, .. } => Arc::new(
            CacheAppend::new(*axis, g.ty(ops[0]).clone(), g.ty(ops[1]).clone())?
                .with_capacity(Dim::sym("kv_capacity")),
        ),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => Arc::new(Reduce::new(
            *op,
            axes.clone(),
            *keep_dims,
            g.ty(ops[0]).clone(),
        )?),
        op => {
            let types: Vec<_> = ops.iter().map(|o| g.ty(*o).clone()).collect();
            Arc::new(ElementwiseChain::single(op.clone(), &types)?)
        }
    };
    let inputs = bind_inputs(g, id, template.as_ref())?;
    let output = match &n.op {
        // The append writes the cache in place, the buffer it reads.
        Op::CacheAppend { .. } => crate::templates::cache::CACHE.into(),
        _ => "out".into(),
    };
    let instance = plan.intern(template);
    Ok(Step::Launch {
        node,
        instance,
        inputs,
        output,
    })
}

/// A matmul's precision: an f32 matmul whose weight is a bf16 checkpoint's, exactly (see
/// [`bf16_exact`]), runs on bf16 inputs with f32 accumulation and output: the GEMM reads the
/// weight and the activations (rounded to bf16 by `round_b` first) in bf16 on the tensor cores,
/// the decode GEMV the weight in bf16 and x in f32. Every other matmul computes in its dtype
/// (an f32 one with no TF32).
fn matmul(g: &Graph, id: NodeId, plan: &mut DevicePlan) -> Result<Step, String> {
    let n = g.node(id);
    let (x, w) = (n.inputs[0], n.inputs[1]);
    let stored = is_source(&g.node(w).op);
    let layout = if stored {
        WeightLayout::Nk
    } else {
        WeightLayout::Kn
    };
    let k = fixed(g, x, -1, "inner dimension").ok();
    let bf16_weight = stored
        && n.ty.dtype == DType::F32
        && g.ty(x).dtype == DType::F32
        && k.is_some()
        && bf16_exact(g, w);
    let inputs = if bf16_weight {
        Inputs::Bf16
    } else {
        Inputs::Node
    };
    let gemm = describe_with(g, id, layout, inputs).map_err(|e| e.message)?;
    let round_b = match k {
        Some(k) if bf16_weight => {
            let x_ty = TensorType::new(DType::F32, vec![Dim::sym("rows"), Dim::from(k as i64)]);
            let cast = ElementwiseChain::single(Op::Cast { to: DType::BF16 }, &[x_ty])?;
            Some(plan.intern(Arc::new(cast)))
        }
        _ => None,
    };
    let (bias, residual) = match n.op {
        Op::FusedMatMul { bias, residual } => (bias, residual),
        _ => (false, false),
    };
    let w_ty = g.ty(w);
    let gemv = match (
        stored,
        w_ty.rank(),
        w_ty.shape.first().and_then(|d| d.as_const()),
        w_ty.shape.last().and_then(|d| d.as_const()),
    ) {
        // A single-row matmul happens in decode steps only.
        (true, 2, Some(k), Some(nn)) if g.name == "decode" => {
            let ty = match n.ty.dtype {
                DType::BF16 => Ty::Bf16,
                _ => Ty::F32,
            };
            let weight = if bf16_weight { Ty::Bf16 } else { ty };
            Gemv::supports_weight(ty, weight, k).then(|| {
                plan.intern(Arc::new(Gemv::with_weight(
                    ty, weight, k, nn, bias, residual,
                )))
            })
        }
        _ => None,
    };
    Ok(Step::Matmul {
        node: id.index(),
        gemm,
        gemv,
        inputs: n.inputs.iter().map(|i| i.index()).collect(),
        round_b,
    })
}

/// Whether stored source `id` holds bf16 values exactly: a bf16 checkpoint weight, or a fold
/// that only moves such weights around (`cast` to f32 or bf16, `transpose`, `concat`, `reshape`,
/// `slice`). An f32 weight, a constant, or any arithmetic makes it not so.
fn bf16_exact(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    match &n.op {
        Op::Weight { .. } => n.ty.dtype == DType::BF16,
        Op::Cast { to } if !matches!(to, DType::F32 | DType::BF16) => false,
        Op::Fold
        | Op::Cast { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Reshape { .. }
        | Op::Slice { .. } => !n.inputs.is_empty() && n.inputs.iter().all(|&i| bf16_exact(g, i)),
        _ => false,
    }
}

fn attention(g: &Graph, id: NodeId, plan: &mut DevicePlan) -> Result<Step, String> {
    let n = g.node(id);
    let Op::Attention {
        scale,
        mask,
        rope_q,
        rope_k,
    } = n.op
    else {
        unreachable!("called on attention nodes")
    };
    let ty = match n.ty.dtype {
        DType::BF16 => Ty::Bf16,
        DType::F32 => Ty::F32,
        other => return Err(format!("attention over {other}")),
    };
    let q_heads = fixed(g, n.inputs[0], 0, "query heads")?;
    let kv_heads = fixed(g, n.inputs[1], 0, "kv heads")?;
    let head_dim = fixed(g, n.inputs[0], -1, "head_dim")?;
    let (prefill, decode): (Arc<dyn Template>, Option<Arc<dyn Template>>) = match mask {
        AttentionMask::Segments => {
            let t = VisionAttention {
                dtype: ty,
                heads: q_heads,
                head_dim,
            };
            check_spec(t.spec(), scale, rope_q, rope_k)?;
            (Arc::new(t), None)
        }
        AttentionMask::Causal => {
            let p = PrefillAttention {
                dtype: ty,
                q_heads,
                kv_heads,
                head_dim,
            };
            check_spec(p.spec(), scale, rope_q, rope_k)?;
            let d = (g.name == "decode").then(|| {
                Arc::new(DecodeAttention {
                    dtype: ty,
                    q_heads,
                    kv_heads,
                    head_dim,
                }) as Arc<dyn Template>
            });
            (Arc::new(p), d)
        }
        AttentionMask::Full => {
            return Err("attention without a mask has no template (no graph uses it)".into())
        }
    };
    let inputs = bind_inputs(g, id, prefill.as_ref())?;
    let prefill = plan.intern(prefill);
    let decode = decode.map(|d| plan.intern(d));
    Ok(Step::Attention {
        node: id.index(),
        prefill,
        decode,
        inputs,
    })
}

fn check_spec(
    spec: crate::templates::attention::AttnSpec,
    scale: f64,
    rope_q: bool,
    rope_k: bool,
) -> Result<(), String> {
    if (spec.scale - scale).abs() > 1e-12 * scale.abs()
        || spec.rope_q != rope_q
        || spec.rope_k != rope_k
    {
        return Err(format!(
            "attention with scale {scale}, rope_q {rope_q}, rope_k {rope_k}; the template computes scale {}, rope_q {}, rope_k {}",
            spec.scale, spec.rope_q, spec.rope_k
        ));
    }
    Ok(())
}

/// Maps each input of the instance's reference graph to the node it reads: the reference
/// graph's output `out` is computed by the same op as `id`, and its operand `i` is (through
/// layout-only ops) an input, which then reads `id`'s operand `i`. A fixed dimension that
/// differs between the two is an error, not a guess.
fn bind_inputs(g: &Graph, id: NodeId, t: &dyn Template) -> Result<BTreeMap<String, usize>, String> {
    let reference = t.reference();
    let mnemonic = g.node(id).op.mnemonic();
    // The node computing `out`, or (an in-place op such as a cache append has no `out`) the
    // last node doing what `id` does.
    let main = reference
        .output("out")
        .or_else(|| {
            reference
                .node_ids()
                .filter(|&r| reference.node(r).op.mnemonic() == mnemonic)
                .last()
        })
        .map(|r| reference.node(r))
        .ok_or_else(|| format!("{}: the reference graph computes no `{mnemonic}`", t.name()))?;
    if main.op.mnemonic() != g.node(id).op.mnemonic() {
        return Err(format!(
            "{}: the reference computes `{}`, not `{}`",
            t.name(),
            main.op.mnemonic(),
            g.node(id).op.mnemonic()
        ));
    }
    let operands = &g.node(id).inputs;
    let mut inputs = BTreeMap::new();
    for (pos, &r) in main.inputs.iter().enumerate() {
        let mut at = r;
        let name = loop {
            match &reference.node(at).op {
                Op::Input { name } | Op::CacheRead { name } => break name.clone(),
                Op::Transpose { .. } | Op::Reshape { .. } | Op::Cast { .. } | Op::Fold => {
                    at = reference.node(at).inputs[0]
                }
                other => {
                    return Err(format!(
                        "{}: operand {pos} is computed by `{}`, not read",
                        t.name(),
                        other.mnemonic()
                    ))
                }
            }
        };
        let Some(&operand) = operands.get(pos) else {
            return Err(format!(
                "{}: reads operand {pos}, the node has {}",
                t.name(),
                operands.len()
            ));
        };
        let (want, have) = (&reference.ty(r).shape, &g.ty(operand).shape);
        if let (Some(w), Some(h)) = (
            want.last().and_then(|d| d.as_const()),
            have.last().and_then(|d| d.as_const()),
        ) {
            if w != h {
                return Err(format!(
                    "{}: operand {pos} has last dim {h}, the instance expects {w}",
                    t.name()
                ));
            }
        }
        inputs.insert(name, operand.index());
    }
    Ok(inputs)
}
