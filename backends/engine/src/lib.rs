//! What every target shares: the engine directory's target-neutral files ([`format`]),
//! `weights.bin`'s writer ([`weights`]) and the fold/weight store over it ([`TensorStore`]), and the [`Target`] interface the one compile driver
//! (vl3c-driver) calls after optimizing, so a target is a room that only selects and emits.

pub mod format;
mod store;
mod target;
pub mod weights;

pub use format::*;
pub use store::{fold_key, TensorStore};
pub use target::{Emit, Emitted, Progress, Target};
pub use weights::{check_index, PackedLen, TensorEntry, TensorLayout, WeightsWriter, ALIGN};
