//! The target interface. The driver lowers and optimizes (with the target's cost model), then
//! hands the optimized graphs to [`Target::emit`], which decides what runs each node and writes
//! its section of the engine through [`Emit`]; the driver writes the target-neutral files and the
//! manifest, which lists every file the target wrote.

use crate::EngineError;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use vl3c_ir::{Graph, NodeId, Op};
use vl3c_reference::{execute, Tensor, WeightSource, WeightView};

/// Compile progress: `(stage, done, total)`; a new stage starts at done = 0.
pub type Progress<'p> = &'p mut dyn FnMut(&str, usize, usize);

pub trait Target {
    /// The manifest's `target` and `--target`'s value.
    fn name(&self) -> &'static str;
    /// The cost model (a `vl3c_passes::cost::Target` name) the optimizer extracts with.
    fn cost_model(&self) -> &'static str;
    /// Checks the tools the target needs before anything is optimized, so a missing one costs
    /// the user no optimization time.
    fn prepare(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Selects what runs each node of `graphs` (the optimized graphs in `GRAPH_NAMES` order),
    /// builds it and writes the target's files.
    fn emit(&mut self, graphs: &[&Graph], out: &mut Emit) -> Result<Emitted, EngineError>;
}

/// What a target reports back for the manifest and the user.
#[derive(Clone, Debug, Default)]
pub struct Emitted {
    /// CPU features the engine's native code needs (the manifest's `cpu_features`).
    pub cpu_features: Vec<String>,
    /// Features used when present, with a portable fallback (informational).
    pub cpu_features_optional: Vec<String>,
    /// What was built, in one line.
    pub summary: String,
    /// What works but should not be so (a kernel that spills registers).
    pub warnings: Vec<String>,
}

/// The engine directory as a target sees it: files it writes (each listed in the manifest),
/// the checkpoint's weights when there are any, fold evaluation, progress.
pub struct Emit<'a> {
    dir: &'a Path,
    weights: Option<&'a dyn WeightSource>,
    progress: Progress<'a>,
    written: BTreeSet<String>,
}

impl<'a> Emit<'a> {
    pub fn new(
        dir: &'a Path,
        weights: Option<&'a dyn WeightSource>,
        progress: Progress<'a>,
    ) -> Emit<'a> {
        Emit {
            dir,
            weights,
            progress,
            written: BTreeSet::new(),
        }
    }

    /// The path of engine file `name` (`/`-separated, relative), its directory created; the
    /// file is listed in the manifest once the target has written it.
    pub fn path(&mut self, name: &str) -> Result<PathBuf, EngineError> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| EngineError::file(parent, format!("cannot create: {e}")))?;
        }
        self.written.insert(name.to_string());
        Ok(path)
    }

    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        let path = self.path(name)?;
        std::fs::write(&path, bytes)
            .map_err(|e| EngineError::file(&path, format!("cannot write: {e}")))
    }

    /// Removes a file an earlier compile into the same directory may have left.
    pub fn remove_stale(&mut self, name: &str) {
        self.written.remove(name);
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Whether the checkpoint's weights are at hand (not `--config-only`).
    pub fn has_weights(&self) -> bool {
        self.weights.is_some()
    }

    pub fn weight(&self, name: &str) -> Result<WeightView<'_>, EngineError> {
        let w = self.weights.ok_or_else(|| EngineError::Incompatible(format!("weight `{name}` is needed, but the compile has no checkpoint weights (--config-only)")))?;
        w.weight(name).ok_or_else(|| {
            EngineError::Incompatible(format!("weight `{name}` is not in the checkpoint"))
        })
    }

    /// The value of fold node `fold` of `g`: its weight-only ancestors copied into a graph of
    /// their own and run on the reference executor, the definition of every op.
    pub fn fold(&self, g: &Graph, fold: usize) -> Result<Tensor, EngineError> {
        let err = |m: String| EngineError::Incompatible(format!("{}: fold %{fold}: {m}", g.name));
        let weights = self
            .weights
            .ok_or_else(|| err("needs the checkpoint's weights (--config-only has none)".into()))?;
        let mut needed = vec![false; fold + 1];
        needed[fold] = true;
        for i in (0..=fold).rev() {
            if needed[i] {
                for inp in &g.nodes[i].inputs {
                    needed[inp.index()] = true;
                }
            }
        }
        let mut sub = Graph::new(format!("{}.fold{fold}", g.name));
        sub.symbols = g.symbols.clone();
        let mut map = vec![NodeId(u32::MAX); fold + 1];
        for i in (0..=fold).filter(|&i| needed[i]) {
            let mut node = g.nodes[i].clone();
            if matches!(node.op, Op::Input { .. } | Op::CacheRead { .. }) {
                return Err(err("reads a runtime value".into()));
            }
            node.inputs = node.inputs.iter().map(|x| map[x.index()]).collect();
            map[i] = NodeId(sub.nodes.len() as u32);
            sub.nodes.push(node);
        }
        sub.set_output("value", map[fold]);
        let mut out = execute(&sub, &HashMap::new(), weights, &HashMap::new())
            .map_err(|e| err(e.to_string()))?;
        Ok(out.outputs.remove("value").expect("the output was set"))
    }

    pub fn progress(&mut self, stage: &str, done: usize, total: usize) {
        (self.progress)(stage, done, total)
    }

    /// The files written so far, relative to the engine directory.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        self.written.iter().map(String::as_str)
    }

    pub fn dir(&self) -> &Path {
        self.dir
    }
}
