//! The compile driver for the CUDA target: checkpoint (or config alone) → graphs → optimized
//! with the CUDA cost model → device plan (a template instance or cuBLASLt call per node) → one
//! CUDA module compiled by NVRTC per architecture → engine directory.
//!
//! The CPU target's driver still lives in vl3c-runtime (`engine::compile`), because it evaluates
//! `fold` subgraphs into `weights.bin`; the CUDA engine gains its weights when CUDA engines run
//! (issue 11), and both drivers then become one with a target interface.

mod cuda;

pub use cuda::{compile_cuda, CudaOptions, CudaReport, CUDA_DIR};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Lower(#[from] vl3c_cuda::lower::LowerError),
    #[error(transparent)]
    Module(#[from] vl3c_cuda::lower::ModuleError),
    #[error(transparent)]
    Engine(#[from] vl3c_backends::engine::EngineError),
}
