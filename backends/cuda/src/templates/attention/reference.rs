//! The one-op graphs the attention templates mean, with inputs named like the kernels' buffers.

use super::common::AttnSpec;
use crate::kir::Ty;
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// Longest sequence a reference graph admits; only the cases' sizes are ever bound.
const MAX_LEN: i64 = 1 << 20;

fn dtype(spec: &AttnSpec) -> DType {
    match spec.dtype {
        Ty::Bf16 => DType::BF16,
        _ => DType::F32,
    }
}

fn input(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add_source(
        Op::Input { name: name.into() },
        TensorType::new(dtype, shape),
    )
    .expect("an input")
}

fn attention(g: &mut Graph, spec: &AttnSpec, operands: &[NodeId]) {
    let op = Op::Attention {
        scale: spec.scale,
        mask: spec.mask,
        rope_q: spec.rope_q,
        rope_k: spec.rope_k,
    };
    let out = g
        .add(op, operands)
        .expect("attention operands are well-typed");
    g.set_output("out", out);
}

fn qkv(g: &mut Graph, spec: &AttnSpec, n: Dim, t: Dim) -> Vec<NodeId> {
    let (dt, d) = (dtype(spec), Dim::from(spec.head_dim));
    let q = input(
        g,
        "q",
        dt,
        vec![Dim::from(spec.q_heads), n.clone(), d.clone()],
    );
    let k = input(
        g,
        "k",
        dt,
        vec![Dim::from(spec.kv_heads), t.clone(), d.clone()],
    );
    let v = input(g, "v", dt, vec![Dim::from(spec.kv_heads), t, d.clone()]);
    let cos = input(g, "cos", dt, vec![Dim::from(1usize), n.clone(), d.clone()]);
    let sin = input(g, "sin", dt, vec![Dim::from(1usize), n, d]);
    vec![q, k, v, cos, sin]
}

pub fn vision(spec: &AttnSpec) -> Graph {
    let mut g = Graph::new("attention_vision");
    let n = g.declare_symbol("n_patches", 1, MAX_LEN);
    let mut ops = qkv(&mut g, spec, n.clone(), n.clone());
    ops.push(input(&mut g, "segments", DType::I64, vec![n]));
    attention(&mut g, spec, &ops);
    g
}

pub fn prefill(spec: &AttnSpec) -> Graph {
    let mut g = Graph::new("attention_prefill");
    let n = g.declare_symbol("seq_len", 1, MAX_LEN);
    let past = g.declare_symbol("past_len", 0, MAX_LEN);
    let ops = qkv(&mut g, spec, n.clone(), past + n);
    attention(&mut g, spec, &ops);
    g
}

/// Decode also takes `kv_len` (the keys after this step's append, `past_len + 1`), which the
/// kernels read from device memory so one captured graph serves every step.
pub fn decode(spec: &AttnSpec) -> Graph {
    let mut g = Graph::new("attention_decode");
    let past = g.declare_symbol("past_len", 0, MAX_LEN);
    let ops = qkv(&mut g, spec, Dim::from(1usize), past + 1i64);
    input(&mut g, "kv_len", DType::I64, vec![Dim::from(1usize)]);
    attention(&mut g, spec, &ops);
    g
}
