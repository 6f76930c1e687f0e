//! GEMMs with M ≥ 16 (vision encoder, projector, prefill, the prefill lm_head) go to cuBLASLt,
//! not to our own kernels. This module describes each one as data: [`describe`] turns a graph's
//! `matmul`/`fused_matmul` node into a [`GemmCall`] in cuBLAS's column-major terms, the engine
//! serializes it and replays it through `cublasLtMatmul`, and [`emulate`] executes the same
//! descriptor on the CPU, bounds-checked from its leading dimensions, so test-kernels catches a
//! row/column-major mix-up before a GPU sees it.

mod call;
mod describe;
mod emulate;
mod extent;

pub use call::{
    CallError, ComputeType, DataType, Epilogue, GemmCall, MatrixLayout, Operands, Resolved,
    ResolvedLayout, Transpose,
};
pub use describe::{describe, describe_with, DescribeError, Inputs, WeightLayout};
pub use emulate::{emulate, EmulateError};
pub use extent::{Extent, ExtentError};
