//! The one compile driver: checkpoint (or config alone) → graphs → optimized with the target's
//! cost model → the target selects what runs each node and writes its section
//! ([`vl3c_engine::Target::emit`]) → graphs, copied checkpoint files and the manifest, which
//! lists and hashes every file. Targets: [`CpuTarget`] (vl3c-cpu), [`CudaTarget`]
//! (vl3c-cuda).

use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vl3c_engine::{
    self as fmt, sha256_file, Emit, EngineError, FileEntry, Manifest, Progress, Source, Target,
};
use vl3c_frontends::checkpoint::Checkpoint;
use vl3c_frontends::config::ModelConfig;
use vl3c_frontends::lower::ModelGraphs;
use vl3c_passes::schedule::{optimize_graph_with, Memo};
use vl3c_passes::Budget;
use vl3c_reference::{WeightSource, WeightView};

pub use vl3c_cpu::CpuTarget;
pub use vl3c_cuda::nvrtc::Sm;
pub use vl3c_cuda::CudaTarget;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a compile reads: the checkpoint directory, its config (with any limits the caller
/// derived from the preprocessor configs), and the weights unless the compile is config-only.
pub struct ModelSource<'a> {
    pub dir: &'a Path,
    pub config: ModelConfig,
    pub checkpoint: Option<&'a Checkpoint>,
}

impl<'a> ModelSource<'a> {
    /// config.json alone: graphs and kernels at the real sizes, no weights.
    pub fn config_only(dir: &'a Path) -> Result<ModelSource<'a>, DriverError> {
        let config = ModelConfig::from_dir(dir).map_err(|e| model_err(dir, e))?;
        Ok(ModelSource {
            dir,
            config,
            checkpoint: None,
        })
    }

    pub fn checkpoint(dir: &'a Path, checkpoint: &'a Checkpoint) -> ModelSource<'a> {
        ModelSource {
            dir,
            config: checkpoint.config().clone(),
            checkpoint: Some(checkpoint),
        }
    }
}

/// A checkpoint as the reference executor's weight source.
pub struct CheckpointWeights<'a>(pub &'a Checkpoint);

impl WeightSource for CheckpointWeights<'_> {
    fn weight(&self, name: &str) -> Option<WeightView<'_>> {
        self.0.tensor(name).map(|t| WeightView {
            dtype: t.dtype,
            shape: t.shape.to_vec(),
            bytes: t.bytes,
        })
    }
}

/// What was compiled, for the user.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub target: &'static str,
    pub optimize_seconds: f64,
    pub summary: String,
    pub warnings: Vec<String>,
}

/// The target by `--target` name; `sms`: the CUDA architectures.
pub fn target_by_name(name: &str, sms: &[Sm]) -> Result<Box<dyn Target>, EngineError> {
    match name {
        "cpu" => Ok(Box::new(CpuTarget::default())),
        "cuda" => Ok(Box::new(CudaTarget::new(sms.to_vec()))),
        other => Err(EngineError::UnsupportedTarget(other.to_string())),
    }
}

fn model_err(dir: &Path, e: impl std::fmt::Display) -> DriverError {
    DriverError::Model(format!("{}: {e}", dir.display()))
}

pub fn compile(
    model: &ModelSource,
    target: &mut dyn Target,
    out_dir: &Path,
    progress: Progress,
) -> Result<Compiled, DriverError> {
    target.prepare()?;
    let declared = model.config.declared_dtype;
    let graphs = match model.checkpoint {
        Some(ckpt) => ModelGraphs::lower(&model.config, &|name| {
            ckpt.weight_dtype(name).unwrap_or(declared)
        }),
        None => ModelGraphs::from_config(&model.config),
    }
    .map_err(|e| model_err(model.dir, e))?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| EngineError::file(out_dir, format!("cannot create: {e}")))?;

    // Optimize, sharing the window memo so identical windows across graphs saturate once.
    let start = Instant::now();
    let cost = vl3c_passes::cost::Target::by_name(target.cost_model())
        .ok_or_else(|| DriverError::Model(format!("no cost model `{}`", target.cost_model())))?;
    let mut memo = Memo::default();
    let mut optimized = Vec::new();
    for (i, g) in graphs.all().into_iter().enumerate() {
        progress("optimize", i, fmt::GRAPH_NAMES.len());
        let (opt, _) = optimize_graph_with(g, &cost, &Budget::default(), &mut memo)
            .map_err(|e| DriverError::Model(e.to_string()))?;
        optimized.push(opt);
    }
    progress("optimize", fmt::GRAPH_NAMES.len(), fmt::GRAPH_NAMES.len());
    let optimize_seconds = start.elapsed().as_secs_f64();

    let weights = model.checkpoint.map(CheckpointWeights);
    let mut emit = Emit::new(
        out_dir,
        weights.as_ref().map(|w| w as &dyn WeightSource),
        progress,
    );
    let refs: Vec<_> = optimized.iter().collect();
    let emitted = target.emit(&refs, &mut emit)?;

    emit.progress("write", 0, 1);
    let text: String = optimized.iter().map(|g| format!("{g}\n")).collect();
    emit.write(fmt::GRAPHS, text.as_bytes())?;
    for name in fmt::COPIED {
        let src = model.dir.join(name);
        if src.is_file() {
            let dst = emit.path(name)?;
            std::fs::copy(&src, &dst)
                .map_err(|e| EngineError::file(&src, format!("cannot copy: {e}")))?;
        }
    }
    // Every written file and every checkpoint file is hashed for the manifest: several GB on a
    // real checkpoint, so each file on its own thread.
    let written: Vec<(String, PathBuf)> = emit
        .written()
        .map(|name| (name.to_string(), out_dir.join(name)))
        .collect();
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    if let Some(ckpt) = model.checkpoint {
        for f in ckpt.files() {
            let file_name = f
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push((file_name, f.to_path_buf()));
        }
        let index = model.dir.join("model.safetensors.index.json");
        if index.is_file() {
            sources.push(("model.safetensors.index.json".into(), index));
        }
    }
    let hash_all =
        |list: &[(String, PathBuf)]| -> Result<BTreeMap<String, FileEntry>, EngineError> {
            list.par_iter()
                .map(|(name, path)| Ok((name.clone(), sha256_file(path)?)))
                .collect()
        };
    let (files, source_files) = rayon::join(|| hash_all(&written), || hash_all(&sources));
    let (files, source_files) = (files?, source_files?);
    let manifest = Manifest {
        format_version: fmt::FORMAT_VERSION,
        target: target.name().to_string(),
        cpu_features: emitted.cpu_features,
        cpu_features_optional: emitted.cpu_features_optional,
        vl3c_version: env!("CARGO_PKG_VERSION").to_string(),
        source: Source {
            config_sha256: sha256_file(&model.dir.join("config.json"))?.sha256,
            files: source_files,
        },
        files,
    };
    let path = out_dir.join(fmt::MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&path, json)
        .map_err(|e| EngineError::file(&path, format!("cannot write: {e}")))?;
    emit.progress("write", 1, 1);
    Ok(Compiled {
        target: target.name(),
        optimize_seconds,
        summary: emitted.summary,
        warnings: emitted.warnings,
    })
}
