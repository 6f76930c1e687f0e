//! Code generation from vl3c IR, and the CPU kernels the generated engines call.

pub mod cpu;
