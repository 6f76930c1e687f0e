//! `vl3c compile --target cuda`.

use crate::DriverError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use vl3c_backends::engine::{self as fmt, sha256_file, sha256_hex, EngineError, FileEntry, Manifest, Source};
use vl3c_cuda::lower::{build_module, DevicePlan, GraphPlan, InstanceEntry};
use vl3c_cuda::nvrtc::{Nvrtc, PtxasReport, Sm};
use vl3c_frontends::checkpoint::Checkpoint;
use vl3c_frontends::config::ModelConfig;
use vl3c_frontends::lower::ModelGraphs;
use vl3c_passes::cost::Target;
use vl3c_passes::schedule::{optimize_graph_with, Memo};
use vl3c_passes::Budget;

/// The engine's CUDA section, a directory inside the engine.
pub const CUDA_DIR: &str = "cuda";

pub struct CudaOptions {
    /// Architectures to build cubins (and PTX fallbacks) for.
    pub sms: Vec<Sm>,
    /// Graphs from config.json alone (the real 2B/7B sizes without their weights).
    pub config_only: bool,
}

/// Compile progress: `(stage, done, total)`.
pub type Progress<'p> = &'p mut dyn FnMut(&str, usize, usize);

#[derive(Debug, Default, Serialize)]
pub struct CudaReport {
    pub instances: usize,
    pub kernels: usize,
    pub steps: usize,
    pub gemm_calls: usize,
    /// Per architecture: cubin bytes and the ptxas reports.
    pub cubin_bytes: BTreeMap<String, usize>,
    pub reports: BTreeMap<String, Vec<PtxasReport>>,
    /// Spills, attention stack frames, shared memory over the limit.
    pub problems: Vec<String>,
    pub optimize_seconds: f64,
    pub nvrtc_seconds: f64,
}

/// The plan as `cuda/plan.json` stores it.
#[derive(Serialize)]
struct PlanFile<'a> {
    instances: Vec<InstanceEntry>,
    graphs: &'a [GraphPlan],
}

fn model_err(dir: &Path, e: impl std::fmt::Display) -> DriverError {
    DriverError::Model(format!("{}: {e}", dir.display()))
}

pub fn compile_cuda(model_dir: &Path, out_dir: &Path, opts: &CudaOptions, progress: Progress) -> Result<CudaReport, DriverError> {
    let mut report = CudaReport::default();
    // NVRTC first: a missing one should cost the user no optimization time.
    let nvrtc = Nvrtc::load().map_err(vl3c_cuda::lower::ModuleError::from)?;
    let (mut graphs, ckpt) = if opts.config_only {
        let config = ModelConfig::from_dir(model_dir).map_err(|e| model_err(model_dir, e))?;
        (ModelGraphs::from_config(&config).map_err(|e| model_err(model_dir, e))?, None)
    } else {
        let ckpt = Checkpoint::open(model_dir).map_err(|e| model_err(model_dir, e))?;
        let declared = ckpt.config().declared_dtype;
        let graphs = ModelGraphs::lower(ckpt.config(), &|name| ckpt.weight_dtype(name).unwrap_or(declared))
            .map_err(|e| model_err(model_dir, e))?;
        (graphs, Some(ckpt))
    };

    let start = Instant::now();
    let cost = Target::by_name("cuda").expect("cuda is a cost target");
    let mut memo = Memo::default();
    for (i, name) in fmt::GRAPH_NAMES.iter().enumerate() {
        progress("optimize", i, fmt::GRAPH_NAMES.len());
        let g = graphs.get_mut(name).expect("a graph of ModelGraphs");
        let (opt, _) = optimize_graph_with(g, &cost, &Budget::default(), &mut memo).map_err(|e| DriverError::Model(e.to_string()))?;
        *g = opt;
    }
    progress("optimize", fmt::GRAPH_NAMES.len(), fmt::GRAPH_NAMES.len());
    report.optimize_seconds = start.elapsed().as_secs_f64();

    let plan = DevicePlan::lower(graphs.all())?;
    let start = Instant::now();
    let module = build_module(&plan, Some(&nvrtc), &opts.sms, |d, t| progress("nvrtc", d, t))?;
    report.nvrtc_seconds = start.elapsed().as_secs_f64();
    report.instances = plan.instances.len();
    report.kernels = module.kernels.len();
    report.steps = plan.graphs.iter().map(|g| g.steps.len()).sum();
    report.gemm_calls = plan
        .graphs
        .iter()
        .flat_map(|g| &g.steps)
        .filter(|s| matches!(s, vl3c_cuda::lower::Step::Matmul { .. }))
        .count();
    report.problems = module.problems();

    progress("write", 0, 1);
    let cuda = out_dir.join(CUDA_DIR);
    std::fs::create_dir_all(&cuda).map_err(|e| EngineError::file(&cuda, format!("cannot create: {e}")))?;
    let mut files = BTreeMap::new();
    let mut put = |name: String, bytes: &[u8]| -> Result<(), DriverError> {
        let path = out_dir.join(&name);
        std::fs::write(&path, bytes).map_err(|e| EngineError::file(&path, format!("cannot write: {e}")))?;
        files.insert(name, FileEntry { bytes: bytes.len() as u64, sha256: sha256_hex(bytes) });
        Ok(())
    };
    let text: String = graphs.all().iter().map(|g| format!("{g}\n")).collect();
    put(fmt::GRAPHS.into(), text.as_bytes())?;
    let plan_file = PlanFile { instances: plan.instance_index(), graphs: &plan.graphs };
    put(format!("{CUDA_DIR}/plan.json"), &json(&plan_file))?;
    put(format!("{CUDA_DIR}/kernels.kir.json"), &json(&module.kernels))?;
    put(format!("{CUDA_DIR}/kernels.cu"), module.source.as_bytes())?;
    for b in &module.builds {
        put(format!("{CUDA_DIR}/{}.cubin", b.sm.name()), &b.cubin)?;
        put(format!("{CUDA_DIR}/{}.ptx", b.sm.virtual_name()), b.ptx.as_bytes())?;
        put(format!("{CUDA_DIR}/ptxas_{}.json", b.sm.name()), &json(&b.reports))?;
        report.cubin_bytes.insert(b.sm.name().into(), b.cubin.len());
        report.reports.insert(b.sm.name().into(), b.reports.clone());
    }
    for name in fmt::COPIED {
        let src = model_dir.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| EngineError::file(&src, format!("cannot read: {e}")))?;
            put(name.to_string(), &bytes)?;
        }
    }
    let mut source_files = BTreeMap::new();
    if let Some(ckpt) = &ckpt {
        for f in ckpt.files() {
            let name = f.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            source_files.insert(name, sha256_file(f)?);
        }
    }
    let manifest = Manifest {
        format_version: fmt::FORMAT_VERSION,
        target: "cuda".into(),
        cpu_features: Vec::new(),
        cpu_features_optional: Vec::new(),
        vl3c_version: env!("CARGO_PKG_VERSION").to_string(),
        source: Source { config_sha256: sha256_file(&model_dir.join("config.json"))?.sha256, files: source_files },
        files,
    };
    let path = out_dir.join(fmt::MANIFEST);
    std::fs::write(&path, json(&manifest)).map_err(|e| EngineError::file(&path, format!("cannot write: {e}")))?;
    progress("write", 1, 1);
    Ok(report)
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("engine metadata serializes")
}
