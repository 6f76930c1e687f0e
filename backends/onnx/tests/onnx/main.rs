//! The ONNX export's tests, one binary (tract is slow to link): ops against the reference
//! executor, the fixtures end to end, and the exported graphs' summaries.

mod common;
mod fixtures;
mod ops;
mod snapshots;
