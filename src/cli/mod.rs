pub mod eval;
pub mod inspect;
pub mod preprocess;
