//! From the optimized graphs to the CUDA target's device plan: which template instance (or which
//! cuBLASLt call) computes every node that runs at inference time, decided once at compile time
//! and written into the engine, so a loader never re-derives it from the graphs.
//!
//! A node runs on the device unless it is a source (an input, a KV-cache read, a checkpoint
//! weight, a `fold` whose value the compiler stores, a constant) or a reshape, which moves no
//! data and aliases its operand's buffer. What a template's kernels read and write is bound by
//! name (see `templates`): a step lists the node ids of the instance's inputs, in the order of
//! its reference graph's inputs, so the binding is data in the plan, not a rule in the loader.

mod bind;
mod file;
mod module;
mod select;

pub use bind::bind_symbols;
pub use file::{GraphFile, PlanFile, KERNELS_FILE, PLAN_FILE, WEIGHTS_FILE};
pub use module::{build_module, KernelModule, ModuleError, SmBuild};
pub use select::{runtime_nodes, select_graph};

use crate::gemm::GemmCall;
use crate::templates::Template;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One template instance of the engine: a name (what test-kernels calls it) and its kernels.
#[derive(Clone)]
pub struct Instance {
    pub template: Arc<dyn Template>,
}

/// Every graph's steps, and the instances they launch (deduplicated across graphs by name).
#[derive(Clone, Default)]
pub struct DevicePlan {
    pub graphs: Vec<GraphPlan>,
    pub instances: Vec<Instance>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphPlan {
    pub graph: String,
    pub steps: Vec<Step>,
}

/// What computes one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "a plan has a few hundred steps, read once at load"
)]
pub enum Step {
    /// The node's buffer is `of`'s: a reshape of a contiguous tensor.
    Alias { node: usize, of: usize },
    /// The kernels of instance `instance`, launched in order; `inputs` maps each input of the
    /// instance's reference graph (by name) to the node whose buffer it reads, and `output` names
    /// the buffer this node's value is.
    Launch {
        node: usize,
        instance: usize,
        inputs: BTreeMap<String, usize>,
        output: String,
    },
    /// A matmul: `gemm` (cuBLASLt, M ≥ 16) or, for a single row, the GEMV instance `gemv` when the
    /// weight's shape is fixed. The weight's element type on the device is what `gemm`'s A and
    /// the GEMV reference's `w_nk` say (bf16 for an f32 matmul over a bf16 checkpoint's weight).
    /// `round_b`: an instance casting the f32 activations (`x`, viewed as `[rows, K]`) to bf16
    /// `out`, which the GEMM then reads as B; absent when B is the operand itself (and in plans
    /// written before it existed).
    Matmul {
        node: usize,
        gemm: GemmCall,
        gemv: Option<usize>,
        inputs: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round_b: Option<usize>,
    },
    /// Causal attention: `prefill` for any query count, `decode` (split-KV over the cache) when
    /// the step has one query row.
    Attention {
        node: usize,
        prefill: usize,
        decode: Option<usize>,
        inputs: BTreeMap<String, usize>,
    },
}

impl Step {
    pub fn node(&self) -> usize {
        match self {
            Step::Alias { node, .. }
            | Step::Launch { node, .. }
            | Step::Matmul { node, .. }
            | Step::Attention { node, .. } => *node,
        }
    }
}

/// A node the CUDA target cannot compute yet: the compile stops with this, never with a silent
/// fallback.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("graph `{graph}`, node %{node} ({op}): not supported yet on cuda: {why}")]
pub struct LowerError {
    pub graph: String,
    pub node: usize,
    pub op: String,
    pub why: String,
}

impl DevicePlan {
    /// Lowers every graph, in order.
    pub fn lower<'g>(
        graphs: impl IntoIterator<Item = &'g vl3c_ir::Graph>,
    ) -> Result<DevicePlan, LowerError> {
        let mut plan = DevicePlan::default();
        for g in graphs {
            let steps = select_graph(g, &mut plan)?;
            plan.graphs.push(GraphPlan {
                graph: g.name.clone(),
                steps,
            });
        }
        Ok(plan)
    }

    /// The index of `template`'s instance, added when no instance of that name exists yet.
    pub fn intern(&mut self, template: Arc<dyn Template>) -> usize {
        let name = template.name();
        if let Some(i) = self
            .instances
            .iter()
            .position(|i| i.template.name() == name)
        {
            return i;
        }
        self.instances.push(Instance { template });
        self.instances.len() - 1
    }

    /// Each instance as the plan stores it, in plan order.
    pub fn instance_index(&self) -> Vec<InstanceEntry> {
        self.instances
            .iter()
            .map(|i| {
                let t = &i.template;
                InstanceEntry {
                    name: t.name(),
                    op: t.op().to_string(),
                    kernels: t.kernels().into_iter().map(|k| k.name).collect(),
                    reference: t.reference().to_string(),
                    scratch: t
                        .scratch()
                        .into_iter()
                        .map(|s| ScratchEntry {
                            name: s.name,
                            elem: format!("{:?}", s.elem),
                            len: s.len.to_string(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// An instance as `cuda/plan.json` stores it: what a loader needs to launch it without the
/// template's code. Buffers and scalars bind by name (see `templates`): `reference` is the
/// instance's meaning as IR text, whose inputs and outputs name the buffers and whose symbols
/// name the scalars (a loader binds them by matching the inputs' types against the actual
/// shapes); `scratch` sizes the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceEntry {
    pub name: String,
    pub op: String,
    pub kernels: Vec<String>,
    pub reference: String,
    pub scratch: Vec<ScratchEntry>,
}

/// A scratch buffer: element type (`F32`, `I64`), length as a dimension over the reference's
/// symbols in IR text (`Dim::parse` reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScratchEntry {
    pub name: String,
    pub elem: String,
    pub len: String,
}
