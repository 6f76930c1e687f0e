//! The primitive op set. Fusion is discovered by later passes, so the frontend lowers into these
//! ops only: attention is matmul + scale + mask + softmax chain, norms are their reductions.

use crate::{DType, Dim};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Erf,
    Abs,
    Sin,
    Cos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

/// A scalar literal; its dtype is the node's dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Float(f64),
    Int(i64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A runtime input, named as the forward argument it carries.
    Input {
        name: String,
    },
    /// A checkpoint tensor, named as in the checkpoint (transformers naming).
    Weight {
        name: String,
    },
    /// The current contents of a KV-cache state (first dim = heads, second = cached positions).
    CacheRead {
        name: String,
    },
    /// A scalar literal of shape [].
    Constant {
        value: Scalar,
        dtype: DType,
    },
    /// `[start, start + len)` as a 1-D tensor.
    Iota {
        len: Dim,
        start: Dim,
        dtype: DType,
    },
    /// `[..., m, k] × [..., k, n] → [..., m, n]`, batch dims broadcast.
    MatMul,
    Unary(UnaryOp),
    /// Elementwise with numpy broadcasting; comparisons and logic produce bool.
    Binary(BinaryOp),
    /// `(cond, a, b)`: a where cond else b, broadcast.
    Select,
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    Reshape {
        shape: Vec<Dim>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Broadcast {
        shape: Vec<Dim>,
    },
    Concat {
        axis: usize,
    },
    /// `[start, end)` along `axis`.
    Slice {
        axis: usize,
        start: Dim,
        end: Dim,
    },
    /// `(data, indices)`: index_select along `axis`; out = data[..axis] ++ indices ++ data[axis+1..].
    /// Embedding lookup is a gather on axis 0.
    Gather {
        axis: usize,
    },
    Cast {
        to: DType,
    },
    /// `(data [N, ..], mask bool [N])`: the rows where mask is true, in order. `len` is the
    /// (usually fresh, symbolic) row count; the executor checks it against the mask.
    MaskedSelect {
        len: Dim,
    },
    /// `(base [N, ..], mask bool [N], src [M, ..])`: base with the true rows replaced by the rows
    /// of src in order (torch `masked_scatter` on rows). M must equal the number of true rows.
    MaskedScatter,
    /// `(grid_thw i64 [n, 3], merge_sizes i64 [n])` → i64 `[len, 2]`: the (row, col) of every
    /// patch in merge-block-major order, repeated per frame (transformers' `get_vision_position_ids`).
    VisionPositionIds {
        len: Dim,
    },
    /// `(grid_thw i64 [n, 3])` → i64 `[len]`: the index of the frame each patch belongs to; every
    /// frame of every image or video is its own attention segment.
    SegmentIds {
        len: Dim,
    },
    /// `(past, new)`: `new` appended to the cache state `name` along `axis`; the result is the whole
    /// cache after the append, and the state the next step reads.
    CacheAppend {
        name: String,
        axis: usize,
    },

    // Fused ops. The frontend never emits these: the optimizer discovers them, and each one's
    // meaning is the primitive chain it replaces (see passes/src/rules).
    /// Softmax over the last axis: `exp(x - max) / sum(exp(x - max))`.
    Softmax,
    /// `(x, weight, bias)`: LayerNorm over the last axis, `(x - mean)·rsqrt(var + eps)·w + b`.
    LayerNorm {
        eps: f64,
    },
    /// `(x, weight)`: RMSNorm over the last axis, `x·rsqrt(mean(x²) + eps)·w`.
    RmsNorm {
        eps: f64,
    },
    /// Elementwise activation.
    Activation(Activation),
    /// `(gate, up)`: `silu(gate)·up`.
    SwiGlu,
    /// `(x, cos, sin)`: `x·cos + rotate_half(x)·sin` on the last axis, pairing i with i + d/2.
    Rope,
    /// `(a, b, [bias], [residual])`: `a × b (+ bias) (+ residual)`, the matmul with its epilogue.
    FusedMatMul {
        bias: bool,
        residual: bool,
    },
    /// `(q [hq, n, d], k [hk, t, d], v [hk, t, d], [cos, sin], [segments i64 [n]])`: softmax
    /// attention with `hq = g·hk` (query head j reads kv head j / g), scores scaled by `scale`.
    /// `rope_q`/`rope_k` rotate q/k by the tables first (the tables broadcast against `[n, d]`).
    /// Masks: `Causal` lets query i (absolute position t - n + i) see keys ≤ that position;
    /// `Segments` lets patches of the same segment see each other (n = t); `Full` masks nothing.
    Attention {
        scale: f64,
        mask: AttentionMask,
        rope_q: bool,
        rope_k: bool,
    },
    /// `(x [m²·n, F])` → `[n, F]`: the mean of each group of m² consecutive rows — the spatial
    /// merge of a merge-block-major patch sequence (transformers' bilinear downsampling by m).
    SpatialMerge {
        merge: usize,
    },
    /// `(pixel_values [N, C·p·p], grid_thw i64 [e, 3])` → bool `[len]`: Differential Frame
    /// Pruning's keep-mask over merged tokens. A token is kept in frame 0, or where the mean
    /// |Δ| of its m×m patch block against the previous frame, times 255, exceeds `threshold`;
    /// a frame with nothing kept keeps its first token.
    DiffFramePrune {
        threshold: f64,
        merge: usize,
        len: Dim,
    },
    /// Identity. Marks a subgraph that depends only on weights and constants, to be evaluated
    /// once at compile time.
    Fold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activation {
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    GeluTanh,
    /// `0.5·x·(1 + erf(x/√2))`
    GeluErf,
    /// `x / (1 + exp(-x))`
    Silu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttentionMask {
    Full,
    Causal,
    Segments,
}

impl Op {
    /// The mnemonic used in the text form, DOT output and op counts.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::CacheRead { .. } => "cache_read",
            Op::Constant { .. } => "const",
            Op::Iota { .. } => "iota",
            Op::MatMul => "matmul",
            Op::Unary(u) => u.mnemonic(),
            Op::Binary(b) => b.mnemonic(),
            Op::Select => "select",
            Op::Reduce { op, .. } => op.mnemonic(),
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Broadcast { .. } => "broadcast",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::Cast { .. } => "cast",
            Op::MaskedSelect { .. } => "masked_select",
            Op::MaskedScatter => "masked_scatter",
            Op::VisionPositionIds { .. } => "vision_position_ids",
            Op::SegmentIds { .. } => "segment_ids",
            Op::CacheAppend { .. } => "cache_append",
            Op::Softmax => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Activation(a) => a.mnemonic(),
            Op::SwiGlu => "swiglu",
            Op::Rope => "rope",
            Op::FusedMatMul { .. } => "fused_matmul",
            Op::Attention { .. } => "attention",
            Op::SpatialMerge { .. } => "spatial_merge",
            Op::DiffFramePrune { .. } => "diff_frame_prune",
            Op::Fold => "fold",
        }
    }

    /// True for the ops the optimizer introduces; the frontend emits none of them.
    pub fn is_fused(&self) -> bool {
        matches!(
            self,
            Op::Softmax
                | Op::LayerNorm { .. }
                | Op::RmsNorm { .. }
                | Op::Activation(_)
                | Op::SwiGlu
                | Op::Rope
                | Op::FusedMatMul { .. }
                | Op::Attention { .. }
                | Op::SpatialMerge { .. }
        )
    }

    /// Ops whose type is declared rather than inferred from operands.
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Weight { .. } | Op::CacheRead { .. }
        )
    }

    /// Number of operands, where fixed.
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::CacheRead { .. }
            | Op::Constant { .. }
            | Op::Iota { .. } => 0,
            Op::Unary(_)
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::SegmentIds { .. }
            | Op::Softmax
            | Op::Activation(_)
            | Op::SpatialMerge { .. }
            | Op::Fold => 1,
            Op::MatMul
            | Op::Binary(_)
            | Op::Gather { .. }
            | Op::MaskedSelect { .. }
            | Op::VisionPositionIds { .. }
            | Op::CacheAppend { .. }
            | Op::RmsNorm { .. }
            | Op::SwiGlu
            | Op::DiffFramePrune { .. } => 2,
            Op::Select | Op::MaskedScatter | Op::LayerNorm { .. } | Op::Rope => 3,
            Op::FusedMatMul { bias, residual } => 2 + *bias as usize + *residual as usize,
            Op::Attention {
                mask,
                rope_q,
                rope_k,
                ..
            } => {
                3 + 2 * (*rope_q || *rope_k) as usize + (*mask == AttentionMask::Segments) as usize
            }
            Op::Concat { .. } => return None,
        })
    }
}

macro_rules! mnemonics {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn mnemonic(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            pub fn from_mnemonic(s: &str) -> Option<$ty> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.mnemonic()) }
        }
    };
}

mnemonics!(UnaryOp {
    Neg => "neg", Exp => "exp", Log => "log", Sqrt => "sqrt", Rsqrt => "rsqrt", Recip => "recip",
    Tanh => "tanh", Erf => "erf", Abs => "abs", Sin => "sin", Cos => "cos",
});

mnemonics!(BinaryOp {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div", Pow => "pow", Max => "max", Min => "min",
    Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge", And => "and", Or => "or",
});

mnemonics!(ReduceOp { Sum => "reduce_sum", Max => "reduce_max", Mean => "reduce_mean" });

mnemonics!(Activation { GeluTanh => "gelu_tanh", GeluErf => "gelu_erf", Silu => "silu" });

mnemonics!(AttentionMask { Full => "full", Causal => "causal", Segments => "segments" });

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}
