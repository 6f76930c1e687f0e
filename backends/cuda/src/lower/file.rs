//! `cuda/plan.json`: the device plan as the engine stores it, written by the target and read by
//! the loader (`run`), one type for both so the two cannot disagree on a field.

use super::{GraphPlan, InstanceEntry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vl3c_engine::TensorEntry;

/// The engine's CUDA plan file, inside the engine's `cuda/`.
pub const PLAN_FILE: &str = "plan.json";
/// The kernel IR of every kernel the plan launches (`Vec<kir::Kernel>`).
pub const KERNELS_FILE: &str = "kernels.kir.json";
/// Values of the weights and folds the steps read, as the IR holds them.
pub const WEIGHTS_FILE: &str = "weights.bin";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub instances: Vec<InstanceEntry>,
    pub graphs: Vec<GraphFile>,
    /// Whether `cuda/weights.bin` holds the values of every stored node (not `--config-only`).
    pub weights: bool,
    /// `cuda/weights.bin`'s index.
    pub tensors: BTreeMap<String, TensorEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphFile {
    #[serde(flatten)]
    pub plan: GraphPlan,
    /// Source nodes the steps read whose values the compiler stored (checkpoint weights, folds
    /// evaluated on the reference executor) → tensor of `cuda/weights.bin`.
    pub stored: BTreeMap<usize, String>,
}
