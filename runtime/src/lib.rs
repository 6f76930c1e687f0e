//! The runtime: the reference executor that defines IR semantics, image preprocessing, and the
//! model runner that strings VideoLLaMA3's graphs together.

pub mod bench;
pub mod chat;
pub mod engine;
pub mod exec;
pub mod generate;
pub mod media;
pub mod model;
pub mod preprocess;
pub mod sampling;
pub mod tensor_file;
pub mod tokenizer;
pub mod video;
