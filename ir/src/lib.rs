//! vl3c's typed tensor IR: dtypes, symbolic dimensions, the primitive op set, graphs, their
//! verifier, a text form that round-trips and Graphviz output.
//!
//! This crate knows nothing of checkpoints, optimizers or backends.

mod dim;
mod dot;
mod dtype;
mod graph;
mod infer;
mod lex;
mod op;
mod parse;
mod text;
mod verify;

pub use dim::{Bounds, Dim, DimEvalError};
pub use dot::to_dot;
pub use dtype::DType;
pub use graph::{Graph, IrError, Node, NodeId, SymbolDecl, TensorType};
pub use infer::{broadcast_shapes, infer_type, shapes_equal};
pub use op::{Activation, AttentionMask, BinaryOp, Op, ReduceOp, Scalar, UnaryOp};
pub use parse::{parse_graphs, ParseError};
pub use verify::verify;
