//! What every target shares: the engine directory's target-neutral files ([`format`]),
//! `weights.bin`'s writer ([`weights`]), and the [`Target`] interface the one compile driver
//! (vl3c-driver) calls after optimizing, so a target is a room that only selects and emits.

pub mod format;
mod target;
pub mod weights;

pub use format::*;
pub use target::{Emit, Emitted, Progress, Target};
pub use weights::{TensorEntry, TensorLayout, WeightsWriter, ALIGN};
