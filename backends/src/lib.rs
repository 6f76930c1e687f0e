//! The CPU target: its kernels (`cpu`: packed bf16 GEMM/GEMV, AMX, attention, Cranelift
//! codegen of the fused row ops), what runs each node (`select`, compile time), the engine
//! section it writes (`plan`), and the [`vl3c_engine::Target`] the driver calls (`target`).

pub mod cpu;
pub mod plan;
pub mod select;
pub mod target;

pub use target::{CpuReport, CpuTarget};
