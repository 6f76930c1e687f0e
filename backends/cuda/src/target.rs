//! The CUDA target: a device plan (a template instance or cuBLASLt call per node), its kernels
//! printed into one module that NVRTC compiles per architecture, and the engine's `cuda/`.

use crate::lower::{build_module, DevicePlan, GraphPlan, InstanceEntry, Step};
use crate::nvrtc::{Nvrtc, PtxasReport, Sm};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use vl3c_engine::{Emit, Emitted, EngineError, Target};
use vl3c_ir::Graph;

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
}

pub struct CudaTarget {
    /// Architectures to build cubins (and PTX fallbacks) for.
    pub sms: Vec<Sm>,
    nvrtc: Option<Nvrtc>,
    pub report: CudaReport,
}

impl CudaTarget {
    pub fn new(sms: Vec<Sm>) -> CudaTarget {
        CudaTarget { sms, nvrtc: None, report: CudaReport::default() }
    }
}

/// The plan as `cuda/plan.json` stores it.
#[derive(Serialize)]
struct PlanFile<'a> {
    instances: Vec<InstanceEntry>,
    graphs: &'a [GraphPlan],
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
        let module = build_module(&plan, self.nvrtc.as_ref(), &self.sms, |d, t| out.progress("nvrtc", d, t)).map_err(build_err)?;
        report.nvrtc_seconds = start.elapsed().as_secs_f64();
        report.instances = plan.instances.len();
        report.kernels = module.kernels.len();
        report.steps = plan.graphs.iter().map(|g| g.steps.len()).sum();
        report.gemm_calls = plan.graphs.iter().flat_map(|g| &g.steps).filter(|s| matches!(s, Step::Matmul { .. })).count();
        report.problems = module.problems();

        let plan_file = PlanFile { instances: plan.instance_index(), graphs: &plan.graphs };
        out.write(&format!("{CUDA_DIR}/plan.json"), &json(&plan_file))?;
        out.write(&format!("{CUDA_DIR}/kernels.kir.json"), &json(&module.kernels))?;
        out.write(&format!("{CUDA_DIR}/kernels.cu"), module.source.as_bytes())?;
        for b in &module.builds {
            out.write(&format!("{CUDA_DIR}/{}.cubin", b.sm.name()), &b.cubin)?;
            out.write(&format!("{CUDA_DIR}/{}.ptx", b.sm.virtual_name()), b.ptx.as_bytes())?;
            out.write(&format!("{CUDA_DIR}/ptxas_{}.json", b.sm.name()), &json(&b.reports))?;
            report.cubin_bytes.insert(b.sm.name().into(), b.cubin.len());
            report.reports.insert(b.sm.name().into(), b.reports.clone());
        }
        let cubins: Vec<String> = report.cubin_bytes.iter().map(|(sm, b)| format!("{sm} {:.1} KiB", *b as f64 / 1024.0)).collect();
        let summary = format!(
            "{} steps ({} cuBLASLt calls), {} template instances, {} kernels, NVRTC {:.2}s; cubins {}",
            report.steps,
            report.gemm_calls,
            report.instances,
            report.kernels,
            report.nvrtc_seconds,
            cubins.join(", ")
        );
        let warnings = report.problems.clone();
        self.report = report;
        Ok(Emitted { summary, warnings, ..Emitted::default() })
    }
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("engine metadata serializes")
}
