//! The tensors a target stores in `weights.bin`: checkpoint weights under their own names and
//! the values of `fold` subgraphs, each computation stored once across the five graphs (prefill
//! and decode share every layer's weights) in each form a target asks for.

use crate::{Emit, EngineError, TensorEntry, TensorLayout, WeightsWriter};
use std::collections::{BTreeMap, HashMap};
use vl3c_ir::{Graph, NodeId};
use vl3c_reference::Tensor;

pub struct TensorStore {
    writer: WeightsWriter,
    index: BTreeMap<String, TensorEntry>,
    /// form + structural key of a fold → its tensor name.
    folds: HashMap<String, String>,
    /// (graph, node) → structural key, so each graph's keys are built once.
    keys: HashMap<(String, usize), String>,
}

impl TensorStore {
    /// Creates `file` (e.g. `weights.bin`, `cuda/weights.bin`) in the engine.
    pub fn create(out: &mut Emit, file: &str) -> Result<TensorStore, EngineError> {
        let writer = WeightsWriter::create(&out.path(file)?)?;
        Ok(TensorStore {
            writer,
            index: BTreeMap::new(),
            folds: HashMap::new(),
            keys: HashMap::new(),
        })
    }

    /// The tensor name of fold `node` of `g` in `form`: stored by `write` (given the fold's
    /// value from the reference executor) the first time this computation is asked for in this
    /// form, found again after. `Ok((name, true))` when it was stored just now.
    pub fn fold(
        &mut self,
        out: &Emit,
        g: &Graph,
        node: usize,
        form: &str,
        write: impl FnOnce(&mut WeightsWriter, &Tensor) -> Result<TensorEntry, EngineError>,
    ) -> Result<(String, bool), EngineError> {
        self.fold_with(out, g, node, form, |w, out| write(w, &out.fold(g, node)?))
    }

    /// [`fold`](Self::fold) where `write` produces the stored form itself, for a target that
    /// can build it from the checkpoint's bytes without evaluating the fold.
    pub fn fold_with(
        &mut self,
        out: &Emit,
        g: &Graph,
        node: usize,
        form: &str,
        write: impl FnOnce(&mut WeightsWriter, &Emit) -> Result<TensorEntry, EngineError>,
    ) -> Result<(String, bool), EngineError> {
        let key = self
            .keys
            .entry((g.name.clone(), node))
            .or_insert_with(|| fold_key(g, NodeId(node as u32)))
            .clone();
        let key = format!("{form} {key}");
        if let Some(t) = self.folds.get(&key) {
            return Ok((t.clone(), false));
        }
        let name = format!("{form}{}", self.folds.len());
        let entry = write(&mut self.writer, out)?;
        self.index.insert(name.clone(), entry);
        self.folds.insert(key, name.clone());
        Ok((name, true))
    }

    /// A fold's value as the IR holds it (row-major, its dtype).
    pub fn raw_fold(
        &mut self,
        out: &Emit,
        g: &Graph,
        node: usize,
    ) -> Result<(String, bool), EngineError> {
        self.fold(out, g, node, "raw", |w, t| {
            w.push(
                t.raw_bytes(),
                &t.dtype().to_string(),
                t.shape.clone(),
                TensorLayout::Raw,
            )
        })
    }

    /// Checkpoint weight `name`, stored raw under its own name (once); whether it was stored now.
    pub fn weight(&mut self, out: &Emit, name: &str) -> Result<bool, EngineError> {
        if self.index.contains_key(name) {
            return Ok(false);
        }
        let t = out.weight(name)?;
        let e = self.writer.push(
            t.bytes,
            &t.dtype.to_string(),
            t.shape.to_vec(),
            TensorLayout::Raw,
        )?;
        self.index.insert(name.to_string(), e);
        Ok(true)
    }

    /// Flushes the file; the index of what it holds.
    pub fn finish(self) -> Result<BTreeMap<String, TensorEntry>, EngineError> {
        self.writer.finish()?;
        Ok(self.index)
    }
}

/// A structural key of a weight-only subgraph, equal for equal computations in any graph, so
/// a weight shared by prefill and decode is stored once.
pub fn fold_key(g: &Graph, id: NodeId) -> String {
    fn go(g: &Graph, id: NodeId, memo: &mut HashMap<usize, String>) -> String {
        if let Some(k) = memo.get(&id.index()) {
            return k.clone();
        }
        let n = &g.nodes[id.index()];
        let args: Vec<String> = n.inputs.iter().map(|&x| go(g, x, memo)).collect();
        let k = format!("{:?}:{}({})", n.op, n.ty, args.join(","));
        memo.insert(id.index(), k.clone());
        k
    }
    go(g, id, &mut HashMap::new())
}
