//! Videos: decoding a file into RGB frames (`decode`) and turning sampled frames into the model's
//! inputs exactly as transformers' `VideoLlama3VideoProcessor` does (`process`).

pub mod decode;
pub mod process;
