//! The engine's one CUDA translation unit: every kernel of every instance the plan launches,
//! printed once, compiled by NVRTC for each requested architecture (cubin, PTX fallback, ptxas
//! report), and checked against what a launch could not survive.

use super::DevicePlan;
use crate::kir::Kernel;
use crate::nvrtc::{Nvrtc, NvrtcError, PtxasReport, Sm};
use crate::print::print_module;
use std::collections::BTreeMap;

/// What NVRTC made of the module for one architecture.
#[derive(Clone, Debug)]
pub struct SmBuild {
    pub sm: Sm,
    pub cubin: Vec<u8>,
    pub ptx: String,
    pub reports: Vec<PtxasReport>,
}

#[derive(Clone, Debug)]
pub struct KernelModule {
    /// Every kernel, by name, once.
    pub kernels: Vec<Kernel>,
    pub source: String,
    pub builds: Vec<SmBuild>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("two instances define different kernels named `{0}`")]
    NameClash(String),
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
}

/// Prints the plan's kernels and compiles them for each of `sms` (none: print only).
pub fn build_module(
    plan: &DevicePlan,
    nvrtc: Option<&Nvrtc>,
    sms: &[Sm],
    mut progress: impl FnMut(usize, usize),
) -> Result<KernelModule, ModuleError> {
    let mut by_name: BTreeMap<String, Kernel> = BTreeMap::new();
    let mut kernels = Vec::new();
    for inst in &plan.instances {
        for k in inst.template.kernels() {
            match by_name.get(&k.name) {
                Some(seen) if *seen != k => return Err(ModuleError::NameClash(k.name)),
                Some(_) => {}
                None => {
                    by_name.insert(k.name.clone(), k.clone());
                    kernels.push(k);
                }
            }
        }
    }
    let source = print_module(&kernels);
    let mut builds = Vec::new();
    if let Some(nvrtc) = nvrtc {
        for (i, &sm) in sms.iter().enumerate() {
            progress(i, sms.len());
            let c = nvrtc.compile(&source, "vl3c_engine.cu", sm)?;
            builds.push(SmBuild {
                sm,
                cubin: c.cubin,
                ptx: c.ptx,
                reports: c.reports,
            });
        }
        progress(sms.len(), sms.len());
    }
    Ok(KernelModule {
        kernels,
        source,
        builds,
    })
}

impl KernelModule {
    /// What would fail or slow a launch: register spills, a stack frame in an attention kernel,
    /// static shared memory over the architecture's per-block limit. One line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.builds {
            for r in &b.reports {
                if r.spill_stores + r.spill_loads > 0 {
                    out.push(format!(
                        "{} on {}: {} bytes spilled, {} reloaded",
                        r.kernel,
                        b.sm.name(),
                        r.spill_stores,
                        r.spill_loads
                    ));
                }
                if r.kernel.starts_with("attention") && r.stack_bytes > 0 {
                    out.push(format!(
                        "{} on {}: {}-byte stack frame",
                        r.kernel,
                        b.sm.name(),
                        r.stack_bytes
                    ));
                }
                if r.shared_bytes > b.sm.max_shared_bytes_per_block() {
                    out.push(format!(
                        "{} on {}: {} bytes of static shared memory",
                        r.kernel,
                        b.sm.name(),
                        r.shared_bytes
                    ));
                }
            }
        }
        out
    }
}
