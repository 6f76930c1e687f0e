//! Lowering of a VideoLLaMA3 configuration into primitive IR graphs. Graphs need only the
//! configuration and each weight's stored dtype: weights are bound when a graph runs.

mod builder;
mod llm;
mod vision;

pub use llm::{cache_names, llm_graph, Step, LAST_LOGITS};
pub use vision::{projector_graph, vision_graph, MAX_ENTRIES_PER_CALL};

use crate::config::ModelConfig;
use vl3c_ir::{DType, Graph, IrError};

/// Every graph of the model: the encoder for each merge size, projector, prefill and decode.
#[derive(Clone, Debug)]
pub struct ModelGraphs {
    pub vision_m1: Graph,
    pub vision_m2: Graph,
    pub projector: Graph,
    pub prefill: Graph,
    pub decode: Graph,
}

impl ModelGraphs {
    pub fn lower(cfg: &ModelConfig, weight_dtype: &dyn Fn(&str) -> DType) -> Result<Self, IrError> {
        Ok(ModelGraphs {
            vision_m1: vision_graph(cfg, 1, weight_dtype)?,
            vision_m2: vision_graph(cfg, 2, weight_dtype)?,
            projector: projector_graph(cfg, weight_dtype)?,
            prefill: llm_graph(cfg, Step::Prefill, weight_dtype)?,
            decode: llm_graph(cfg, Step::Decode, weight_dtype)?,
        })
    }

    /// Graphs from configuration alone: every weight is assumed stored in the config's dtype.
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, IrError> {
        let dtype = cfg.declared_dtype;
        Self::lower(cfg, &move |_| dtype)
    }

    pub fn vision(&self, merge: usize) -> Option<&Graph> {
        match merge {
            1 => Some(&self.vision_m1),
            2 => Some(&self.vision_m2),
            _ => None,
        }
    }

    /// The graph called `name` (`vision_m1`, `vision_m2`, `projector`, `prefill`, `decode`).
    pub fn get(&self, name: &str) -> Option<&Graph> {
        self.all().into_iter().find(|g| g.name == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        [
            &mut self.vision_m1,
            &mut self.vision_m2,
            &mut self.projector,
            &mut self.prefill,
            &mut self.decode,
        ]
        .into_iter()
        .find(|g| g.name == name)
    }

    pub fn all(&self) -> [&Graph; 5] {
        [
            &self.vision_m1,
            &self.vision_m2,
            &self.projector,
            &self.prefill,
            &self.decode,
        ]
    }
}
