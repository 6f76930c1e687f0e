//! The CUDA target: a device plan (a template instance or cuBLASLt call per node), its kernels
//! printed into one module that NVRTC compiles per architecture, the values of the weights and
//! folds the steps read (`cuda/weights.bin`, as the IR holds them), and the engine's `cuda/`.

use crate::lower::{
    build_module, runtime_nodes, DevicePlan, GraphFile, PlanFile, Step, KERNELS_FILE, PLAN_FILE,
    WEIGHTS_FILE,
};
use crate::nvrtc::{Nvrtc, PtxasReport, Sm};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use vl3c_engine::{Emit, Emitted, EngineError, Target, TensorStore};
use vl3c_ir::{Graph, Op};

/// The engine's CUDA section, a directory inside the engine.
pub const CUDA_DIR: &str = "cuda";

#[derive(Debug, Default, Clone, Serialize)]
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
    pub nvrtc_seconds: f64,
    /// Tensors in `cuda/weights.bin` and its size (0 for `--config-only`).
    pub stored_tensors: usize,
    pub weights_bytes: u64,
}

pub struct CudaTarget {
    /// Architectures to build cubins (and PTX fallbacks) for.
    pub sms: Vec<Sm>,
    nvrtc: Option<Nvrtc>,
    pub report: CudaReport,
}

impl CudaTarget {
    pub fn new(sms: Vec<Sm>) -> CudaTarget {
        CudaTarget {
            sms,
            nvrtc: None,
            report: CudaReport::default(),
        }
    }
}

/// Stores every checkpoint weight and fold value a step of `g` reads: node → tensor.
fn store_sources(
    g: &Graph,
    store: &mut TensorStore,
    out: &Emit,
) -> Result<BTreeMap<usize, String>, EngineError> {
    let live = runtime_nodes(g);
    let mut stored = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate().filter(|&(i, _)| live[i]) {
        match &n.op {
            Op::Fold => {
                stored.insert(i, store.raw_fold(out, g, i)?.0);
            }
            Op::Weight { name } => {
                store.weight(out, name)?;
                stored.insert(i, name.clone());
            }
            _ => {}
        }
    }
    Ok(stored)
}

fn build_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Build(e.to_string())
}

impl Target for CudaTarget {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn cost_model(&self) -> &'static str {
        "cuda"
    }

    fn prepare(&mut self) -> Result<(), EngineError> {
        self.nvrtc = Some(Nvrtc::load().map_err(build_err)?);
        Ok(())
    }

    fn emit(&mut self, graphs: &[&Graph], out: &mut Emit) -> Result<Emitted, EngineError> {
        if self.nvrtc.is_none() {
            self.prepare()?;
        }
        let mut report = CudaReport::default();
        let plan = DevicePlan::lower(graphs.iter().copied()).map_err(build_err)?;
        let start = Instant::now();
        let module = build_module(&plan, self.nvrtc.as_ref(), &self.sms, |d, t| {
            out.progress("nvrtc", d, t)
        })
        .map_err(build_err)?;
        report.nvrtc_seconds = start.elapsed().as_secs_f64();
        report.instances = plan.instances.len();
        report.kernels = module.kernels.len();
        report.steps = plan.graphs.iter().map(|g| g.steps.len()).sum();
        report.gemm_calls = plan
            .graphs
            .iter()
            .flat_map(|g| &g.steps)
            .filter(|s| matches!(s, Step::Matmul { .. }))
            .count();
        report.problems = module.problems();

        // The values the device reads but no step computes; none from config.json alone.
        let mut stored = Vec::new();
        let mut tensors = BTreeMap::new();
        if out.has_weights() {
            let mut store = TensorStore::create(out, &format!("{CUDA_DIR}/{WEIGHTS_FILE}"))?;
            for (i, g) in graphs.iter().enumerate() {
                out.progress("fold weights", i, graphs.len());
                stored.push(store_sources(g, &mut store, out)?);
            }
            out.progress("fold weights", graphs.len(), graphs.len());
            tensors = store.finish()?;
        } else {
            out.remove_stale(&format!("{CUDA_DIR}/{WEIGHTS_FILE}"));
            stored.resize(graphs.len(), BTreeMap::new());
        }
        report.stored_tensors = tensors.len();
        report.weights_bytes = tensors
            .values()
            .map(|e| e.offset + e.bytes)
            .max()
            .unwrap_or(0);
        let graph_files = plan
            .graphs
            .iter()
            .zip(stored)
            .map(|(plan, stored)| GraphFile {
                plan: plan.clone(),
                stored,
            })
            .collect();
        let plan_file = PlanFile {
            instances: plan.instance_index(),
            graphs: graph_files,
            weights: out.has_weights(),
            tensors,
        };
        out.write(&format!("{CUDA_DIR}/{PLAN_FILE}"), &json(&plan_file))?;
        out.write(
            &format!("{CUDA_DIR}/{KERNELS_FILE}"),
            &json(&module.kernels),
        )?;
        out.write(&format!("{CUDA_DIR}/kernels.cu"), module.source.as_bytes())?;
        for b in &module.builds {
            out.write(&format!("{CUDA_DIR}/{}.cubin", b.sm.name()), &b.cubin)?;
            out.write(
                &format!("{CUDA_DIR}/{}.ptx", b.sm.virtual_name()),
                b.ptx.as_bytes(),
            )?;
            out.write(
                &format!("{CUDA_DIR}/ptxas_{}.json", b.sm.name()),
                &json(&b.reports),
            )?;
            report.cubin_bytes.insert(b.sm.name().into(), b.cubin.len());
            report.reports.insert(b.sm.name().into(), b.reports.clone());
        }
        let cubins: Vec<String> = report
            .cubin_bytes
            .iter()
            .map(|(sm, b)| format!("{sm} {:.1} KiB", *b as f64 / 1024.0))
            .collect();
        let summary = format!(
            "{} steps ({} cuBLASLt calls), {} template instances, {} kernels, NVRTC {:.2}s; cubins {}; weights.bin {}",
            report.steps,
            report.gemm_calls,
            report.instances,
            report.kernels,
            report.nvrtc_seconds,
            cubins.join(", "),
            match out.has_weights() {
                true => format!("{} tensors, {:.1} MiB", report.stored_tensors, report.weights_bytes as f64 / (1 << 20) as f64),
                false => "none (--config-only)".to_string(),
            }
        );
        let warnings = report.problems.clone();
        self.report = report;
        Ok(Emitted {
            summary,
            warnings,
            ..Emitted::default()
        })
    }
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("engine metadata serializes")
}
