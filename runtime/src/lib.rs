//! The runtime: image and video preprocessing, the compiled-engine loader, and the model runner
//! that strings VideoLLaMA3's graphs together. The reference executor that defines IR semantics
//! lives in `vl3c-reference`; it is re-exported here as `exec` so `vl3c_runtime::exec::…` paths
//! keep working while callers move over.

pub mod bench;
pub mod chat;
pub mod engine;
pub use vl3c_reference as exec;
pub mod generate;
pub mod guard;
pub mod media;
pub mod model;
pub mod preprocess;
pub mod sampling;
pub mod tensor_file;
pub mod tokenizer;
pub mod video;
