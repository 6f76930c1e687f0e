//! The CUDA target. One kernel IR (`kir`) has two consumers that cannot drift apart: the CUDA C++
//! printer (`print`), whose text NVRTC compiles ahead of time (`nvrtc`), and the emulator (`emu`),
//! which executes the same kernels on the CPU with the checks a GPU would not give us.
//! `templates` builds the kernels of the optimized graphs' ops from Rust, one template per
//! fused-op family; `gemm` describes the GEMMs left to cuBLASLt as data the emulator can also
//! execute; `lower` decides, at compile time, what computes every node of an engine; `target` is
//! the [`vl3c_engine::Target`] the compile driver calls; `check` is `vl3c test-kernels`, every
//! template case against the reference executor.

pub mod check;
pub mod emu;
pub mod gemm;
pub mod kir;
pub mod lower;
pub mod nvrtc;
pub mod print;
pub mod run;
pub mod target;
pub mod templates;

pub use target::{CudaReport, CudaTarget, CUDA_DIR};
