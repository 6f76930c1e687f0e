//! Roofline cost per target: an op costs max(FLOPs / peak, bytes moved / bandwidth), with
//! symbols at a nominal size. Layout ops are free, a fused op is one pass over its operands and
//! result, and weight-only subgraphs are free because they run once at compile time.

use vl3c_ir::{Dim, Op, TensorType};

#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    /// f32 FLOP/s the matmul units sustain.
    pub peak_flops: f64,
    /// Bytes/s from main memory.
    pub bandwidth: f64,
    /// Seconds every launched op costs on top of its roofline: a kernel launch on a GPU, a
    /// dispatch and a pass over cold caches on the CPU. This is what makes merging two matmuls
    /// that read the same input worth it even when both are compute-bound.
    pub dispatch: f64,
}

impl Target {
    /// This machine class: 2 Zen 4 cores (AVX-512), about 33 GB/s.
    pub const CPU: Target = Target {
        name: "cpu",
        peak_flops: 2.4e11,
        bandwidth: 3.3e10,
        dispatch: 2e-6,
    };
    /// One H100 SXM: tensor-core TF32 and HBM3.
    pub const CUDA: Target = Target {
        name: "cuda",
        peak_flops: 4.9e14,
        bandwidth: 3.35e12,
        dispatch: 4e-6,
    };
    /// TensorRT fuses launches itself; its graph launches cost less than eager kernels.
    pub const TENSORRT: Target = Target {
        name: "tensorrt",
        peak_flops: 4.9e14,
        bandwidth: 3.35e12,
        dispatch: 2e-6,
    };

    pub fn by_name(name: &str) -> Option<Target> {
        [Target::CPU, Target::CUDA, Target::TENSORRT]
            .into_iter()
            .find(|t| t.name == name)
    }
}

/// The size a symbol stands for when costing: large enough that per-element work dominates.
pub const NOMINAL_SYMBOL: i64 = 512;

/// Strictly positive, so every chosen node costs more than each of its children and extraction
/// cannot choose a cycle.
pub const MIN_COST: f64 = 1e-12;

fn nominal(d: &Dim) -> f64 {
    let mut syms = Vec::new();
    d.symbols(&mut syms);
    let env = syms.into_iter().map(|s| (s, NOMINAL_SYMBOL)).collect();
    d.eval(&env)
        .map(|v| v.max(0) as f64)
        .unwrap_or(NOMINAL_SYMBOL as f64)
}

fn numel(t: &TensorType) -> f64 {
    t.shape.iter().map(nominal).product()
}

fn bytes(t: &TensorType) -> f64 {
    numel(t) * t.dtype.size_bytes() as f64
}

/// Seconds one op takes on `target`, never below [`MIN_COST`].
pub fn op_cost(
    target: &Target,
    op: &Op,
    out: &TensorType,
    ins: &[&TensorType],
    weight_only: bool,
) -> f64 {
    let layout = matches!(
        op,
        Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Fold
    );
    if weight_only || layout || op.is_source() || matches!(op, Op::Constant { .. }) {
        return MIN_COST;
    }
    let moved: f64 = bytes(out) + ins.iter().map(|t| bytes(t)).sum::<f64>();
    let flops = match op {
        Op::MatMul | Op::FusedMatMul { .. } => {
            let k = ins[0].shape.last().map(nominal).unwrap_or(1.0);
            2.0 * numel(out) * k
        }
        Op::Attention { .. } => {
            let (n, d) = (nominal(&ins[0].shape[1]), nominal(&ins[0].shape[2]));
            let (h, t) = (nominal(&ins[0].shape[0]), nominal(&ins[1].shape[1]));
            4.0 * h * n * t * d + 5.0 * h * n * t
        }
        Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax => 5.0 * numel(out),
        Op::Activation(_) | Op::SwiGlu | Op::Rope => 8.0 * numel(out),
        _ => numel(out),
    };
    target.dispatch + (flops / target.peak_flops).max(moved / target.bandwidth)
}
