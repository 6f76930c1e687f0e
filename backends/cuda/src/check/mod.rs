//! `test-kernels`, after llama.cpp's `test-backend-ops`: every template case runs on a device
//! (the emulator now, a GPU later) and on the reference executor, on the same random inputs,
//! and the outputs are compared by normalized mean squared error. Outputs start uninitialised
//! (the emulator reports a read before a write and an element never written), and a non-finite
//! value where the reference is finite fails the case whatever the NMSE.

mod inputs;
mod report;

pub use report::{CaseReport, OutputCheck, Summary};

use crate::emu::{Arg, BufferId, DeviceBuffer, Emulator};
use crate::kir::{Access, Lit, ParamKind, Ty};
use crate::templates::Case;
use std::collections::HashMap;
use std::time::Instant;
use vl3c_ir::{DType, Graph, Op};
use vl3c_reference::{execute_sized, Tensor};

/// Where kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The kernel-IR emulator, with every check on.
    Emu,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "emu" => Ok(Backend::Emu),
            "cuda" => Err("backend `cuda` is not supported yet (it comes with CUDA engines); use `emu`".into()),
            other => Err(format!("unknown backend `{other}` (expected `emu`)")),
        }
    }
}

/// Which cases to run: `-o` names op families, `-p` is a substring of the case label.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub ops: Vec<String>,
    pub pattern: Option<String>,
}

impl Filter {
    pub fn accepts(&self, case: &Case) -> bool {
        (self.ops.is_empty() || self.ops.iter().any(|o| o == case.template.op()))
            && self.pattern.as_ref().is_none_or(|p| case.label().contains(p.as_str()))
    }
}

/// Runs one case; a failure of any kind (a harness error, an emulator check, a mismatch) is a
/// failed report, never a panic.
pub fn run_case(case: &Case, backend: Backend) -> CaseReport {
    let start = Instant::now();
    let mut report = CaseReport::new(case);
    match run(case, backend, &mut report) {
        Ok(()) => report.passed = report.outputs.iter().all(|o| o.passed()),
        Err(e) => report.error = Some(e),
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

fn run(case: &Case, backend: Backend, report: &mut CaseReport) -> Result<(), String> {
    let Backend::Emu = backend;
    let t = &case.template;
    let graph = t.reference();
    let sizes: HashMap<String, i64> = case.sizes.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut rng = inputs::Rng::for_label(&case.label());
    let mut values: HashMap<String, Tensor> = HashMap::new();
    let mut caches: HashMap<String, Tensor> = HashMap::new();
    for node in &graph.nodes {
        let (name, into) = match &node.op {
            Op::Input { name } => (name, &mut values),
            Op::CacheRead { name } => (name, &mut caches),
            _ => continue,
        };
        let shape = node.ty.concrete_shape(&sizes).map_err(|e| format!("input `{name}`: {e}"))?;
        let tensor = inputs::generate(t.as_ref(), name, node.ty.dtype, shape, &case.sizes, &mut rng)?;
        into.insert(name.clone(), tensor);
    }
    let no_weights: HashMap<String, Tensor> = HashMap::new();
    let expected = execute_sized(&graph, &values, &no_weights, &caches, &sizes).map_err(|e| format!("reference: {e}"))?;

    let mut emu = Emulator::new();
    let mut buffers: HashMap<String, BufferId> = HashMap::new();
    let mut scratch: HashMap<String, (Ty, usize)> = HashMap::new();
    for s in t.scratch() {
        let len = s.len_at(&case.sizes)?;
        scratch.insert(s.name, (s.elem, len));
    }
    let kernels = t.kernels();
    for k in &kernels {
        let mut args = Vec::with_capacity(k.params.len());
        for p in &k.params {
            let arg = match &p.kind {
                ParamKind::Scalar(ty) => Arg::Scalar(scalar(&p.name, *ty, &sizes)?),
                ParamKind::Buffer { elem, access } => {
                    if !buffers.contains_key(&p.name) {
                        let b = device_buffer(&p.name, *elem, *access, &graph, &values, &caches, &expected, &scratch)?;
                        buffers.insert(p.name.clone(), emu.alloc(b));
                    }
                    Arg::Buffer(buffers[&p.name])
                }
            };
            args.push(arg);
        }
        let stats = emu.launch(k, &args).map_err(|e| e.to_string())?;
        report.launches += 1;
        report.thread_statements += stats.statements;
    }
    for (name, want) in expected.outputs.iter().chain(expected.caches.iter()) {
        let id = *buffers.get(name).ok_or_else(|| format!("no kernel writes the reference output `{name}`"))?;
        report.outputs.push(OutputCheck::compare(name, want, emu.buffer(id), t.nmse_limit()));
    }
    Ok(())
}

fn scalar(name: &str, ty: Ty, sizes: &HashMap<String, i64>) -> Result<Lit, String> {
    let v = *sizes.get(name).ok_or_else(|| format!("scalar parameter `{name}` has no size in the case"))?;
    Ok(match ty {
        Ty::I64 => Lit::I64(v),
        Ty::I32 => Lit::I32(i32::try_from(v).map_err(|_| format!("`{name}` = {v} does not fit i32"))?),
        Ty::U32 => Lit::U32(u32::try_from(v).map_err(|_| format!("`{name}` = {v} does not fit u32"))?),
        other => return Err(format!("scalar parameter `{name}` of type {other:?} cannot take a size")),
    })
}

/// The buffer a parameter names: a graph input (initialised), a graph output or cache
/// (uninitialised, or holding the cache's current contents when read-write), or scratch.
#[allow(clippy::too_many_arguments)]
fn device_buffer(
    name: &str,
    elem: Ty,
    access: Access,
    graph: &Graph,
    values: &HashMap<String, Tensor>,
    caches: &HashMap<String, Tensor>,
    expected: &vl3c_reference::Outputs,
    scratch: &HashMap<String, (Ty, usize)>,
) -> Result<DeviceBuffer, String> {
    let check = |dtype: DType| {
        if ty_of(dtype) == Some(elem) {
            Ok(())
        } else {
            Err(format!("buffer `{name}` holds {elem:?} but the reference graph's `{name}` is {dtype}"))
        }
    };
    if let Some(v) = values.get(name) {
        check(v.dtype())?;
        return Ok(initialised(elem, v));
    }
    if let Some(want) = expected.outputs.get(name).or_else(|| expected.caches.get(name)) {
        check(want.dtype())?;
        let mut b = DeviceBuffer::new(elem, want.numel());
        if let (Access::ReadWrite, Some(old)) = (access, caches.get(name)) {
            let axis = append_axis(graph, name).ok_or_else(|| format!("cache `{name}` is read-write but not appended to"))?;
            place_prefix(&mut b, old, &want.shape, axis);
        }
        return Ok(b);
    }
    if let Some(&(ty, len)) = scratch.get(name) {
        if ty != elem {
            return Err(format!("scratch `{name}` is {ty:?} but the kernel reads it as {elem:?}"));
        }
        return Ok(DeviceBuffer::new(elem, len));
    }
    Err(format!("buffer `{name}` is neither an input, an output nor scratch of the case"))
}

fn append_axis(graph: &Graph, cache: &str) -> Option<usize> {
    graph.nodes.iter().find_map(|n| match &n.op {
        Op::CacheAppend { name, axis } if name == cache => Some(*axis),
        _ => None,
    })
}

/// Writes the cache's old contents into the leading positions along `axis` of the appended
/// shape, leaving the new positions uninitialised for the kernel to fill.
fn place_prefix(b: &mut DeviceBuffer, old: &Tensor, new_shape: &[usize], axis: usize) {
    let outer: usize = new_shape[..axis].iter().product();
    let inner: usize = new_shape[axis + 1..].iter().product();
    let (old_len, new_len) = (old.shape[axis], new_shape[axis]);
    let float = matches!(b.elem(), Ty::F32 | Ty::Bf16);
    let (f, i) = if float { (old.as_f32().into_owned(), Vec::new()) } else { (Vec::new(), old.to_i64_vec()) };
    for o in 0..outer {
        for p in 0..old_len {
            for c in 0..inner {
                let (src, dst) = ((o * old_len + p) * inner + c, (o * new_len + p) * inner + c);
                if float {
                    b.set_f32(dst, f[src]);
                } else {
                    b.set_i64(dst, i[src]);
                }
            }
        }
    }
}

fn initialised(elem: Ty, t: &Tensor) -> DeviceBuffer {
    match elem {
        Ty::F32 | Ty::Bf16 => DeviceBuffer::from_f32(elem, &t.as_f32()),
        _ => DeviceBuffer::from_i64(elem, &t.to_i64_vec()),
    }
}

/// The kernel element type that holds an IR dtype.
pub fn ty_of(d: DType) -> Option<Ty> {
    Some(match d {
        DType::F32 => Ty::F32,
        DType::BF16 => Ty::Bf16,
        DType::I32 => Ty::I32,
        DType::I64 => Ty::I64,
        DType::Bool => Ty::Bool,
        DType::F16 => return None,
    })
}

/// Runs every accepted case of `cases`, in parallel over the machine's cores.
pub fn run_all(cases: &[Case], filter: &Filter, backend: Backend) -> Summary {
    use rayon::prelude::*;
    let start = Instant::now();
    let selected: Vec<&Case> = cases.iter().filter(|c| filter.accepts(c)).collect();
    let reports: Vec<CaseReport> = selected.par_iter().map(|c| run_case(c, backend)).collect();
    Summary { reports, seconds: start.elapsed().as_secs_f64() }
}
