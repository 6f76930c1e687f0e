//! A claimed attention on the CPU attention kernel (`vl3c_cpu::attention`): q, k and
//! v read where the plan says (the operand, columns of a fused projection, the engine's KV
//! cache), the result written as `[heads, n, d]` or directly as the `[n, heads·d]` rows.

use super::claims::Attention;
use super::kv::{CacheBuf, KvStore};
use crate::exec::{Operands, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use vl3c_cpu::attention::{self as kernel, Keys, Mask, OutView, Precision, Rope, View};
use vl3c_cpu::plan::AttentionOperand as Src;
use vl3c_cpu::Backend;
use vl3c_ir::{AttentionMask, DType, Graph, NodeId, Op};

/// Runs a claimed attention on the kernel, its products in `precision`. `kv`: the engine's
/// caches, when it keeps them.
pub(crate) fn compute(
    g: &Graph,
    p: &Attention,
    ops: &dyn Operands,
    kv: Option<&KvStore>,
    threads: usize,
    precision: Precision,
) -> Result<Tensor, String> {
    let n = &g.nodes[p.attn];
    let Op::Attention {
        scale,
        mask,
        rope_q,
        rope_k,
    } = n.op
    else {
        return Err("not an attention".into());
    };
    let e = |e: crate::exec::ExecError| e.to_string();
    // Values read through the executor (operands of the attention node, which need not be the
    // claimed node), kept alive for the views below.
    let fetch = |src: &Src, pos: usize| -> Result<Option<Cow<'_, Tensor>>, String> {
        Ok(match src {
            Src::Operand => Some(ops.node(n.inputs[pos]).map_err(e)?),
            Src::Columns { node, .. } => Some(ops.node(NodeId(*node as u32)).map_err(e)?),
            Src::Cache { .. } => None,
        })
    };
    let (qt, kt, vt) = (fetch(&p.q, 0)?, fetch(&p.k, 1)?, fetch(&p.v, 2)?);
    let caches = kv.map(|s| s.borrow());
    let caches = caches.as_deref();
    let declared = |pos: usize| -> Result<(usize, usize), String> {
        let ty = &g.nodes[n.inputs[pos].index()].ty;
        match (ty.shape[0].as_const(), ty.shape[2].as_const()) {
            (Some(h), Some(d)) => Ok((h as usize, d as usize)),
            _ => Err("heads and head_dim must be constant".into()),
        }
    };
    let q = view(&p.q, qt.as_deref(), caches, declared(0)?, false)?.1;
    let k = match view(&p.k, kt.as_deref(), caches, declared(1)?, true)? {
        (Some(keys), _) => keys,
        (None, rows) => Keys::Rows(rows),
    };
    let v = view(&p.v, vt.as_deref(), caches, declared(2)?, false)?.1;
    let (hq, len, d) = (q.heads, q.len, q.d);
    let t = v.len;
    let mut at = 3;
    let tables = if rope_q || rope_k {
        at = 5;
        Some((
            ops.node(n.inputs[3]).map_err(e)?,
            ops.node(n.inputs[4]).map_err(e)?,
        ))
    } else {
        None
    };
    let rope = match &tables {
        Some((c, s)) => Some(Rope {
            cos: as_f32(c)?,
            sin: as_f32(s)?,
            queries: rope_q,
            keys: rope_k,
        }),
        None => None,
    };
    let seg: Vec<i64> = match mask {
        AttentionMask::Segments => {
            let t = ops.node(n.inputs[at]).map_err(e)?;
            if t.dtype() != DType::I64 {
                return Err(format!("segments are {}, not i64", t.dtype()));
            }
            t.to_i64_vec()
        }
        _ => Vec::new(),
    };
    let kmask = match mask {
        AttentionMask::Full => Mask::Full,
        AttentionMask::Causal => Mask::Causal {
            past: t.saturating_sub(len),
        },
        AttentionMask::Segments => Mask::Segments(&seg),
    };
    let mut out = vec![0f32; hq * len * d];
    let (shape, ov) = if p.rows_out {
        (
            vec![len, hq * d],
            OutView {
                data: &mut out,
                head_stride: d,
                row_stride: hq * d,
            },
        )
    } else {
        (
            vec![hq, len, d],
            OutView {
                data: &mut out,
                head_stride: len * d,
                row_stride: d,
            },
        )
    };
    kernel::attention_with(
        q,
        k,
        v,
        rope,
        kmask,
        scale as f32,
        ov,
        threads,
        precision,
        Backend::Auto,
    )?;
    Ok(Tensor::f32(shape, out))
}

/// The `[heads, len, d]` view a source reads: the operand, the projection's columns, or the
/// cache (as keys when `keys`: then the first element); `(heads, d)` as the graph declares them.
fn view<'a>(
    src: &Src,
    value: Option<&'a Tensor>,
    caches: Option<&'a HashMap<String, CacheBuf>>,
    (heads, d): (usize, usize),
    keys: bool,
) -> Result<(Option<Keys<'a>>, View<'a>), String> {
    match (src, value) {
        (Src::Operand, Some(t)) => {
            let [h, len, dd] = t.shape[..] else {
                return Err(format!("operand {:?} is not [heads, len, d]", t.shape));
            };
            Ok((None, View::contiguous(as_f32(t)?, h, len, dd)))
        }
        (Src::Columns { offset, .. }, Some(t)) => {
            let [len, width] = t.shape[..] else {
                return Err(format!("projection {:?} is not 2-D", t.shape));
            };
            let data = as_f32(t)?.get(*offset..).ok_or("projection too narrow")?;
            Ok((
                None,
                View {
                    data,
                    heads,
                    len,
                    d,
                    head_stride: d,
                    row_stride: width,
                },
            ))
        }
        (Src::Cache { name }, None) => {
            let c = caches
                .and_then(|c| c.get(name))
                .ok_or_else(|| format!("cache `{name}` is not kept by the engine"))?;
            match keys {
                true => {
                    let k = c.keys();
                    let rows = match k {
                        Keys::Rows(v) | Keys::Transposed(v) => v,
                    };
                    Ok((Some(k), rows))
                }
                false => Ok((None, c.values()?)),
            }
        }
        _ => Err("attention operand is missing".into()),
    }
}

fn as_f32(t: &Tensor) -> Result<&[f32], String> {
    match &t.data {
        crate::exec::TensorData::F32(v) => Ok(v),
        _ => Err(format!("expected f32, got {}", t.dtype())),
    }
}
