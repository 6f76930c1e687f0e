//! One `cublasLtMatmul`, described completely in cuBLAS's own terms: column-major matrix
//! layouts, `op(A)`/`op(B)`, m/n/k of the column-major product, leading dimensions, strided
//! batch, alpha/beta and the epilogue. The engine turns it into `cublasLtMatmulDesc` +
//! `cublasLtMatrixLayout` objects field for field; the emulator (`emulate`) executes the same
//! fields literally, so a wrong leading dimension or a transposed operand fails on the CPU.
//!
//! cuBLASLt computes `D = alpha·op(A)·op(B) + beta·C (+ bias)`, `D` and `C` m×n, `op(A)` m×k,
//! `op(B)` k×n, all column-major: element (i, j) of a matrix with leading dimension `ld` and
//! batch stride `s` is at `batch·s + j·ld + i`.

use super::extent::{Extent, ExtentError};
use crate::templates::Sizes;
use serde::{Deserialize, Serialize};

/// `cudaDataType_t` of a matrix or the bias vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    /// `CUDA_R_16BF`
    Bf16,
    /// `CUDA_R_32F`
    F32,
}

/// `cublasComputeType_t`; the scale type (alpha, beta) is `CUDA_R_32F` for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeType {
    /// `CUBLAS_COMPUTE_32F`: bf16 products on the tensor cores, f32 accumulation.
    F32,
    /// `CUBLAS_COMPUTE_32F_PEDANTIC`: f32 everywhere, no TF32 nor other reduced precision (f32
    /// checkpoints, whose results the CPU engine matches to f32 round-off).
    F32Pedantic,
}

/// `cublasOperation_t` applied to A or B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transpose {
    /// `CUBLAS_OP_N`
    N,
    /// `CUBLAS_OP_T`
    T,
}

/// `cublasLtEpilogue_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Epilogue {
    /// `CUBLASLT_EPILOGUE_DEFAULT`
    Default,
    /// `CUBLASLT_EPILOGUE_BIAS`: adds `bias[i]` (a vector of m, `CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE`
    /// `ty`) to every column of D, i.e. to every output feature of every token.
    Bias { ty: DataType },
}

/// `cublasLtMatrixLayoutCreate(type, rows, cols, ld)` with `CUBLASLT_ORDER_COL`, plus
/// `CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET` (elements between consecutive batch matrices;
/// the batch count is the call's). `rows`×`cols` is the matrix as stored, before `op`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixLayout {
    pub ty: DataType,
    pub rows: Extent,
    pub cols: Extent,
    pub ld: Extent,
    pub batch_stride: Extent,
}

/// Which operand of the graph node each cuBLAS argument is (an index into the node's inputs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operands {
    pub a: usize,
    pub b: usize,
    /// The matrix read as C when beta ≠ 0 (the residual); D's own buffer otherwise.
    pub c: Option<usize>,
    pub bias: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmCall {
    pub compute: ComputeType,
    pub transa: Transpose,
    pub transb: Transpose,
    /// Rows of D and op(A): for a row-major `[tokens, N]` output, the N output features.
    pub m: Extent,
    /// Columns of D and op(B): the token count.
    pub n: Extent,
    pub k: Extent,
    pub a: MatrixLayout,
    pub b: MatrixLayout,
    pub c: MatrixLayout,
    pub d: MatrixLayout,
    pub batch_count: Extent,
    pub alpha: f32,
    pub beta: f32,
    pub epilogue: Epilogue,
    pub operands: Operands,
}

/// A [`MatrixLayout`] with the sizes of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedLayout {
    pub ty: DataType,
    pub rows: i64,
    pub cols: i64,
    pub ld: i64,
    pub batch_stride: i64,
}

impl ResolvedLayout {
    /// Element (row, col) of batch matrix `batch`, column-major.
    pub fn offset(&self, batch: i64, row: i64, col: i64) -> i64 {
        batch * self.batch_stride + col * self.ld + row
    }

    /// Elements a buffer must hold for every matrix of the batch.
    pub fn span(&self, batch_count: i64) -> i64 {
        if self.rows == 0 || self.cols == 0 || batch_count == 0 {
            0
        } else {
            self.offset(batch_count - 1, self.rows - 1, self.cols - 1) + 1
        }
    }
}

/// A [`GemmCall`] at one set of sizes, checked the way cuBLASLt checks its arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub batch_count: i64,
    pub a: ResolvedLayout,
    pub b: ResolvedLayout,
    pub c: ResolvedLayout,
    pub d: ResolvedLayout,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Size(#[from] ExtentError),
    #[error("{0}")]
    Invalid(String),
}

impl GemmCall {
    /// Evaluates every size and checks what `cublasLtMatmul` would reject
    /// (`CUBLAS_STATUS_INVALID_VALUE`): op(A), op(B), C and D agreeing on m, n, k; `ld ≥ rows`;
    /// batch strides that keep the matrices of a batch apart.
    pub fn resolve(&self, sizes: &Sizes) -> Result<Resolved, CallError> {
        let layout = |l: &MatrixLayout| -> Result<ResolvedLayout, CallError> {
            Ok(ResolvedLayout {
                ty: l.ty,
                rows: l.rows.eval(sizes)?,
                cols: l.cols.eval(sizes)?,
                ld: l.ld.eval(sizes)?,
                batch_stride: l.batch_stride.eval(sizes)?,
            })
        };
        let r = Resolved {
            m: self.m.eval(sizes)?,
            n: self.n.eval(sizes)?,
            k: self.k.eval(sizes)?,
            batch_count: self.batch_count.eval(sizes)?,
            a: layout(&self.a)?,
            b: layout(&self.b)?,
            c: layout(&self.c)?,
            d: layout(&self.d)?,
        };
        let invalid = |msg: String| Err(CallError::Invalid(msg));
        if r.m < 0 || r.n < 0 || r.k < 0 || r.batch_count < 1 {
            return invalid(format!(
                "m={}, n={}, k={}, batch={} out of range",
                r.m, r.n, r.k, r.batch_count
            ));
        }
        let op_shape = |l: &ResolvedLayout, t: Transpose| match t {
            Transpose::N => (l.rows, l.cols),
            Transpose::T => (l.cols, l.rows),
        };
        let checks = [
            ("op(A)", op_shape(&r.a, self.transa), (r.m, r.k)),
            ("op(B)", op_shape(&r.b, self.transb), (r.k, r.n)),
            ("C", (r.c.rows, r.c.cols), (r.m, r.n)),
            ("D", (r.d.rows, r.d.cols), (r.m, r.n)),
        ];
        for (name, got, want) in checks {
            if got != want {
                return invalid(format!(
                    "{name} is {}×{} but the product needs {}×{}",
                    got.0, got.1, want.0, want.1
                ));
            }
        }
        for (name, l) in [("A", &r.a), ("B", &r.b), ("C", &r.c), ("D", &r.d)] {
            if l.ld < l.rows.max(1) {
                return invalid(format!(
                    "ld{} = {} is less than its {} rows",
                    name.to_lowercase(),
                    l.ld,
                    l.rows
                ));
            }
            let one_matrix = if l.cols == 0 {
                0
            } else {
                (l.cols - 1) * l.ld + l.rows
            };
            if r.batch_count > 1 && l.batch_stride < one_matrix && name == "D" {
                return invalid(format!(
                    "D's batch stride {} overlaps matrices of {one_matrix} elements",
                    l.batch_stride
                ));
            }
            if l.batch_stride < 0 {
                return invalid(format!(
                    "{name}'s batch stride {} is negative",
                    l.batch_stride
                ));
            }
        }
        if self.c.ty != self.d.ty {
            return invalid(format!(
                "C is {:?} but D is {:?}: cuBLASLt needs one type",
                self.c.ty, self.d.ty
            ));
        }
        Ok(r)
    }
}
