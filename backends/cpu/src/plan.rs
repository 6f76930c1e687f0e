//! The CPU target's section of an engine: `plan.json` ([`Plan`]), `weights.bin` (indexed by
//! the plan) and `kernels.o`.
//!
//! The plan records every decision the compiler made about a node ([`Claim`]), operands
//! included (which columns of a fused projection an attention reads, which cache, which halves
//! a SwiGLU takes), so the loader only checks a claim against the graph's types and runs it: a
//! change to the compiler's matchers (`select`) cannot change how an existing engine is read.

use crate::codegen::KernelSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vl3c_engine::TensorEntry;

pub const PLAN: &str = "plan.json";
pub const WEIGHTS: &str = "weights.bin";
pub const KERNELS: &str = "kernels.o";

/// One node the engine computes itself. `node` is the claimed node's index in its graph.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Claim {
    /// A `fold` node: its value is the stored tensor `tensor` (evaluated at compile time).
    Fold { node: usize, tensor: String },
    /// A `matmul` / `fused_matmul` whose weight operand (operand 1, a fold) is the stored,
    /// kernel-laid-out tensor `tensor`; the fold itself is then never evaluated.
    Matmul { node: usize, tensor: String },
    /// A fused op run by kernel `kernel` of `kernels.o` (index into [`Plan::kernels`]) on the
    /// node's operands.
    Kernel { node: usize, kernel: usize },
    /// A `swiglu` of two column ranges of the 2-D `matrix` (the merged gate|up projection),
    /// read in place: gate from column `gate`, up from column `up`.
    SwiGluColumns {
        node: usize,
        matrix: usize,
        gate: usize,
        up: usize,
    },
    /// A `gather` along axis 0 of a weight `[v, h]` (the token embedding), reading rows of the
    /// stored tensor `tensor` in place: the weight itself (`transposed: false`, raw), or the
    /// tied LM head's weight (`transposed: true`: the `[h, v]` matmul weight, packed or raw),
    /// so a tied table is stored once.
    Gather {
        node: usize,
        tensor: String,
        transposed: bool,
    },
    /// The `attention` node `attention` on the engine's attention kernel. `node` is the
    /// attention itself, or (`rows_out`) the `[n, heads·d]` reshape of its `[1, 0, 2]`
    /// transpose, then written in that layout directly.
    Attention {
        node: usize,
        attention: usize,
        rows_out: bool,
        q: AttentionOperand,
        k: AttentionOperand,
        v: AttentionOperand,
    },
    /// A `cache_append` into the engine's own KV cache (preallocated from `--max-context`,
    /// appended in place), its new rows taken from `rows`. A graph's plan claims all of its
    /// cache appends or none.
    CacheAppend { node: usize, rows: AppendRows },
}

impl Claim {
    pub fn node(&self) -> usize {
        match self {
            Claim::Fold { node, .. }
            | Claim::Matmul { node, .. }
            | Claim::Kernel { node, .. }
            | Claim::SwiGluColumns { node, .. }
            | Claim::Gather { node, .. }
            | Claim::Attention { node, .. }
            | Claim::CacheAppend { node, .. } => *node,
        }
    }
}

/// Where a claimed attention reads one of q, k, v (`[heads, len, d]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AttentionOperand {
    /// The attention node's operand itself, contiguous.
    Operand,
    /// Columns of the 2-D `[len, width]` node `node`: element `(h, j, c)` at
    /// `[j, offset + h·d + c]` (q, k or v sliced out of a fused projection).
    Columns { node: usize, offset: usize },
    /// The engine's KV cache `name` (the operand is the `cache_append` onto it).
    Cache { name: String },
}

/// Where a claimed `cache_append` takes its new rows `[heads, s, d]` from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AppendRows {
    /// Operand 1 itself, contiguous.
    Operand,
    /// Columns of the 2-D projection output `node` (as [`AttentionOperand::Columns`]), rotated
    /// by the RoPE tables `rope = [cos, sin]` (`[.., s, d]`) when the graph rotates them.
    Columns {
        node: usize,
        offset: usize,
        rope: Option<[usize; 2]>,
    },
}

/// A generated kernel, as the plan records it (`cpu::codegen::KernelSpec`, serializable).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelDesc {
    LayerNorm {
        width: usize,
        eps: f64,
    },
    RmsNorm {
        width: usize,
        eps: f64,
    },
    Softmax {
        width: usize,
    },
    GeluTanh,
    GeluErf,
    Silu,
    #[serde(rename = "swiglu")]
    SwiGlu,
}

impl KernelDesc {
    pub fn spec(self) -> KernelSpec {
        match self {
            KernelDesc::LayerNorm { width, eps } => KernelSpec::LayerNorm { width, eps },
            KernelDesc::RmsNorm { width, eps } => KernelSpec::RmsNorm { width, eps },
            KernelDesc::Softmax { width } => KernelSpec::Softmax { width },
            KernelDesc::GeluTanh => KernelSpec::Gelu { tanh: true },
            KernelDesc::GeluErf => KernelSpec::Gelu { tanh: false },
            KernelDesc::Silu => KernelSpec::Silu,
            KernelDesc::SwiGlu => KernelSpec::SwiGlu,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GraphPlan {
    pub claims: Vec<Claim>,
    /// Checkpoint weights the graph still reads directly, stored raw under their own names.
    pub weights: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub graphs: BTreeMap<String, GraphPlan>,
    /// The kernels of `kernels.o`, in symbol-index order (empty: no kernels.o).
    #[serde(default)]
    pub kernels: Vec<KernelDesc>,
    /// `weights.bin`'s index.
    pub tensors: BTreeMap<String, TensorEntry>,
}

/// x86 features Cranelift may use when it targets the host (cranelift-native enables each one
/// the CPU has), so an engine with `kernels.o` requires the ones its compile host had.
pub fn codegen_features() -> Vec<String> {
    const CANDIDATES: [&str; 16] = [
        "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi1",
        "bmi2", "lzcnt", "avx512f", "avx512vl", "avx512dq", "avx512bw",
    ];
    CANDIDATES
        .iter()
        .filter(|f| vl3c_engine::cpu_has(f))
        .map(|f| f.to_string())
        .collect()
}

/// The features the matmul kernels use when present (they fall back to portable code).
pub fn optional_features() -> Vec<String> {
    ["avx512f", "avx512bw", "avx512vl", "avx512bf16"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
