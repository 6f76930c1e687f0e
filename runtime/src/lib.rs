//! placeholder
pub mod preprocess;
