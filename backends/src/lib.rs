//! Code generation from vl3c IR, the CPU kernels the generated engines call, and the engine
//! file format.

pub mod cpu;
pub mod engine;
