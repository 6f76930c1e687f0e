pub mod bench;
pub mod compile;
pub mod engine_cache;
pub mod eval;
pub mod inspect;
pub mod opt;
pub mod preprocess;
pub mod run;
