//! From a graph's `matmul`/`fused_matmul` node to the cuBLASLt call that computes it.
//!
//! The graph is row-major: `out[M, N] = x[M, K] · w[K, N] (+ bias[N]) (+ residual[M, N])`, M the
//! token count. cuBLAS is column-major, and a row-major `[R, C]` buffer is the column-major C×R
//! matrix with leading dimension C, its transpose. So the call computes the transposed product
//!
//! ```text
//!     outᵀ (N×M) = wᵀ (N×K) · xᵀ (K×M)        cuBLAS m = N, n = M, k = K
//! ```
//!
//! with the weight as A and the activations as B, without moving a byte: `x` row-major `[M, K]`
//! is column-major K×M with `ldb = K` (`transb = N`), and `out` row-major `[M, N]` is
//! column-major N×M with `ldd = N`. The weight as the engine stores it ([`WeightLayout::Nk`],
//! nn.Linear's `[N, K]` row-major) is column-major K×N with `lda = K`, so `transa = T`: the "TN"
//! GEMM, whose K runs contiguously in both operands. A residual is C with `beta = 1` (same layout
//! as D), a bias is the `BIAS` epilogue's per-row (per-feature) vector.
//!
//! Precision: by default every matrix has the node's dtype, an f32 node computing with
//! `CUBLAS_COMPUTE_32F_PEDANTIC` (no TF32) and a bf16 one on the tensor cores with f32
//! accumulation. [`Inputs::Bf16`] asks for an f32 node with bf16 A and B (the engine holds the
//! weight in bf16 and rounds the activations to bf16 before the call) and f32 C, D and bias,
//! under `CUBLAS_COMPUTE_32F`: a bf16 checkpoint's matmuls on the tensor cores.

use super::call::{ComputeType, DataType, Epilogue, GemmCall, MatrixLayout, Operands, Transpose};
use super::extent::Extent;
use vl3c_ir::{DType, Dim, Graph, NodeId, Op};

/// How the engine stores the node's second operand, the graph's `[K, N]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[N, K]` row-major (per batch matrix): the checkpoint's nn.Linear layout.
    Nk,
    /// `[K, N]` row-major: the graph operand's own layout.
    Kn,
}

/// The element type of A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// The node's dtype, as every other matrix.
    Node,
    /// bf16, under an f32 node (C, D and the bias stay f32), with `CUBLAS_COMPUTE_32F`.
    Bf16,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: {message}")]
pub struct DescribeError {
    pub node: u32,
    pub message: String,
}

/// The cuBLASLt call computing `node` (a `matmul` or `fused_matmul`) with its second operand
/// stored as `weight` says; activations, residual and output are contiguous row-major, and
/// every matrix has the node's dtype.
pub fn describe(
    graph: &Graph,
    node: NodeId,
    weight: WeightLayout,
) -> Result<GemmCall, DescribeError> {
    describe_with(graph, node, weight, Inputs::Node)
}

/// [`describe`] with A and B of the element type `inputs` says.
pub fn describe_with(
    graph: &Graph,
    node: NodeId,
    weight: WeightLayout,
    inputs: Inputs,
) -> Result<GemmCall, DescribeError> {
    let err = |message: String| DescribeError {
        node: node.0,
        message,
    };
    let n = graph.node(node);
    let (bias, residual) = match n.op {
        Op::MatMul => (false, false),
        Op::FusedMatMul { bias, residual } => (bias, residual),
        ref other => return Err(err(format!("`{}` is not a matmul", other.mnemonic()))),
    };
    let arity = 2 + bias as usize + residual as usize;
    if n.inputs.len() != arity {
        return Err(err(format!(
            "takes {arity} operands, got {}",
            n.inputs.len()
        )));
    }
    let (x_ty, w_ty) = (graph.ty(n.inputs[0]), graph.ty(n.inputs[1]));
    let data_type = match n.ty.dtype {
        DType::BF16 => DataType::Bf16,
        DType::F32 => DataType::F32,
        other => return Err(err(format!("cuBLASLt calls are bf16 or f32, not {other}"))),
    };
    let input_type = match (inputs, data_type) {
        (Inputs::Node, t) => t,
        (Inputs::Bf16, DataType::F32) => DataType::Bf16,
        (Inputs::Bf16, t) => {
            return Err(err(format!(
                "bf16 inputs are for f32 nodes, this one is {t:?}"
            )))
        }
    };
    for i in &n.inputs {
        if graph.ty(*i).dtype != n.ty.dtype {
            return Err(err(format!(
                "operand dtype {} differs from the result's {}",
                graph.ty(*i).dtype,
                n.ty.dtype
            )));
        }
    }
    let (xs, ws) = (&x_ty.shape, &w_ty.shape);
    if xs.len() < 2 || ws.len() < 2 {
        return Err(err(format!("operands {xs:?} × {ws:?} are not matrices")));
    }
    let k = dim(&xs[xs.len() - 1]);
    if ws[ws.len() - 2] != xs[xs.len() - 1] {
        return Err(err(format!("inner dimensions differ: {xs:?} × {ws:?}")));
    }
    let features = dim(&ws[ws.len() - 1]);
    let rows = dim(&xs[xs.len() - 2]);
    // A single weight shared by every batch matrix folds the batch into the token count (the
    // activations are contiguous), one call; equal batch dims make a strided batch.
    let (tokens, batch_count) = if ws.len() == 2 {
        (
            xs[..xs.len() - 1]
                .iter()
                .map(dim)
                .fold(Extent::Const(1), |acc, d| acc.times(&d)),
            Extent::Const(1),
        )
    } else if xs.len() == ws.len() && xs[..xs.len() - 2] == ws[..ws.len() - 2] {
        (
            rows,
            xs[..xs.len() - 2]
                .iter()
                .map(dim)
                .fold(Extent::Const(1), |acc, d| acc.times(&d)),
        )
    } else {
        return Err(err(format!(
            "batch dims of {xs:?} × {ws:?} neither match nor share one weight"
        )));
    };
    let batched = batch_count != Extent::Const(1);
    let stride = |a: &Extent, b: &Extent| {
        if batched {
            a.times(b)
        } else {
            Extent::Const(0)
        }
    };

    let (transa, a) = match weight {
        WeightLayout::Nk => (
            Transpose::T,
            MatrixLayout {
                ty: input_type,
                rows: k.clone(),
                cols: features.clone(),
                ld: k.clone(),
                batch_stride: stride(&k, &features),
            },
        ),
        WeightLayout::Kn => (
            Transpose::N,
            MatrixLayout {
                ty: input_type,
                rows: features.clone(),
                cols: k.clone(),
                ld: features.clone(),
                batch_stride: stride(&k, &features),
            },
        ),
    };
    let b = MatrixLayout {
        ty: input_type,
        rows: k.clone(),
        cols: tokens.clone(),
        ld: k.clone(),
        batch_stride: stride(&tokens, &k),
    };
    let d = MatrixLayout {
        ty: data_type,
        rows: features.clone(),
        cols: tokens.clone(),
        ld: features.clone(),
        batch_stride: stride(&tokens, &features),
    };

    let bias_operand = bias.then_some(2);
    if let Some(i) = bias_operand {
        let shape = &graph.ty(n.inputs[i]).shape;
        if shape.len() != 1 || shape[0] != ws[ws.len() - 1] {
            return Err(err(format!(
                "bias {shape:?} is not one value per output feature"
            )));
        }
    }
    let residual_operand = residual.then_some(2 + bias as usize);
    if let Some(i) = residual_operand {
        let shape = &graph.ty(n.inputs[i]).shape;
        if *shape != n.ty.shape {
            return Err(err(format!(
                "residual {shape:?} is not the result's shape {:?}",
                n.ty.shape
            )));
        }
    }
    Ok(GemmCall {
        // f32 products only when both inputs are f32: then no TF32.
        compute: if input_type == DataType::F32 {
            ComputeType::F32Pedantic
        } else {
            ComputeType::F32
        },
        transa,
        transb: Transpose::N,
        m: features,
        n: tokens,
        k,
        a,
        b,
        c: d.clone(),
        d,
        batch_count,
        alpha: 1.0,
        beta: if residual { 1.0 } else { 0.0 },
        epilogue: if bias {
            Epilogue::Bias { ty: data_type }
        } else {
            Epilogue::Default
        },
        operands: Operands {
            a: 1,
            b: 0,
            c: residual_operand,
            bias: bias_operand,
        },
    })
}

fn dim(d: &Dim) -> Extent {
    d.into()
}
