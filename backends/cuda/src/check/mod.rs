//! `test-kernels`, after llama.cpp's `test-backend-ops`: every template case runs on a device
//! and on the reference executor, on the same random inputs, and the outputs are compared by
//! normalized mean squared error. Outputs start uninitialised (the emulator reports a read before
//! a write and an element never written), and a non-finite value where the reference is finite
//! fails the case whatever the NMSE.
//!
//! One code path drives both devices through [`Device`]: the same uploads, the same launches in
//! the same order, the same read-backs. So a GPU runs exactly the sequence the emulator proved
//! free of out-of-bounds accesses, races and uninitialised reads, and where the two disagree the
//! difference is in the device, not in the harness. On a GPU the selected cases' kernels are
//! printed into one module and compiled by NVRTC for the device's SM when it opens.

mod inputs;
mod report;

pub use report::{CaseReport, OutputCheck, Summary};

use crate::emu::DeviceBuffer;
use crate::kir::{Access, Kernel, Lit, ParamKind, Ty};
use crate::nvrtc::{Nvrtc, Sm};
use crate::print::print_module;
use crate::run::{CudaDevice, DevArg, DevBuf, Device, DeviceError, EmuDevice, KernelImage};
use crate::templates::Case;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use vl3c_ir::{DType, Graph, Op};
use vl3c_reference::{execute_sized, Tensor};

/// Where kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The kernel-IR emulator, with every check on.
    Emu,
    /// GPU `ordinal`, through the CUDA driver.
    Cuda { ordinal: usize },
}

impl Backend {
    /// `emu`, `cuda` (the first GPU) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "emu" => Ok(Backend::Emu),
            "cuda" => Ok(Backend::Cuda { ordinal: 0 }),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(Backend::Cuda { ordinal }),
                _ => Err(format!(
                    "unknown backend `{s}` (expected emu, cuda or cuda:N)"
                )),
            },
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
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| case.label().contains(p.as_str()))
    }
}

/// Runs one case on `device`; a failure of any kind (a harness error, a device error, an
/// emulator check, a mismatch) is a failed report, never a panic. Every buffer the case
/// allocated is freed again, so cases can follow one another on one device.
pub fn run_case(case: &Case, device: &mut dyn Device) -> CaseReport {
    let start = Instant::now();
    let mut report = CaseReport::new(case);
    let mut allocated = Vec::new();
    match run(case, device, &mut allocated, &mut report) {
        Ok(()) => report.passed = report.outputs.iter().all(|o| o.passed()),
        Err(e) => report.error = Some(e),
    }
    for b in allocated {
        device.free(b);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

/// A device error as a case reports it: the emulator's checks in their own words.
fn device_error(e: DeviceError) -> String {
    match e {
        DeviceError::Emulator(message) => message,
        other => other.to_string(),
    }
}

fn run(
    case: &Case,
    device: &mut dyn Device,
    allocated: &mut Vec<DevBuf>,
    report: &mut CaseReport,
) -> Result<(), String> {
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
        let shape = node
            .ty
            .concrete_shape(&sizes)
            .map_err(|e| format!("input `{name}`: {e}"))?;
        let tensor = inputs::generate(
            t.as_ref(),
            name,
            node.ty.dtype,
            shape,
            &case.sizes,
            &mut rng,
        )?;
        into.insert(name.clone(), tensor);
    }
    let no_weights: HashMap<String, Tensor> = HashMap::new();
    let expected = execute_sized(&graph, &values, &no_weights, &caches, &sizes)
        .map_err(|e| format!("reference: {e}"))?;

    let mut buffers: HashMap<String, (DevBuf, Ty)> = HashMap::new();
    let mut scratch: HashMap<String, (Ty, usize)> = HashMap::new();
    for s in t.scratch() {
        let len = s.len_at(&case.sizes)?;
        scratch.insert(s.name, (s.elem, len));
    }
    let host = Host {
        graph: &graph,
        values: &values,
        caches: &caches,
        expected: &expected,
        scratch: &scratch,
    };
    for k in &t.kernels() {
        let mut args = Vec::with_capacity(k.params.len());
        for p in &k.params {
            let arg = match &p.kind {
                ParamKind::Scalar(ty) => DevArg::Scalar(scalar(&p.name, *ty, &sizes)?),
                ParamKind::Buffer { elem, access } => {
                    if !buffers.contains_key(&p.name) {
                        let b = host.upload(device, allocated, &p.name, *elem, *access)?;
                        buffers.insert(p.name.clone(), (b, *elem));
                    }
                    DevArg::Buffer(buffers[&p.name].0)
                }
            };
            args.push(arg);
        }
        device.launch(k, &args).map_err(device_error)?;
        report.launches += 1;
    }
    // A GPU's launches are queued: their faults surface here, before any output is read.
    device.synchronize().map_err(device_error)?;
    for (name, want) in expected.outputs.iter().chain(expected.caches.iter()) {
        let &(id, elem) = buffers
            .get(name)
            .ok_or_else(|| format!("no kernel writes the reference output `{name}`"))?;
        let bytes = device
            .read(id, 0, want.numel())
            .map_err(|e| format!("output `{name}`: {}", device_error(e)))?;
        report.outputs.push(OutputCheck::compare_bytes(
            name,
            want,
            elem,
            &bytes,
            t.nmse_limit(),
        ));
    }
    Ok(())
}

fn scalar(name: &str, ty: Ty, sizes: &HashMap<String, i64>) -> Result<Lit, String> {
    let v = *sizes
        .get(name)
        .ok_or_else(|| format!("scalar parameter `{name}` has no size in the case"))?;
    Ok(match ty {
        Ty::I64 => Lit::I64(v),
        Ty::I32 => {
            Lit::I32(i32::try_from(v).map_err(|_| format!("`{name}` = {v} does not fit i32"))?)
        }
        Ty::U32 => {
            Lit::U32(u32::try_from(v).map_err(|_| format!("`{name}` = {v} does not fit u32"))?)
        }
        other => {
            return Err(format!(
                "scalar parameter `{name}` of type {other:?} cannot take a size"
            ))
        }
    })
}

/// What the host holds for a case: the values its buffers start from.
struct Host<'a> {
    graph: &'a Graph,
    values: &'a HashMap<String, Tensor>,
    caches: &'a HashMap<String, Tensor>,
    expected: &'a vl3c_reference::Outputs,
    scratch: &'a HashMap<String, (Ty, usize)>,
}

impl Host<'_> {
    /// Allocates the buffer a parameter names on `device`: a graph input (copied in), a graph
    /// output or cache (uninitialised, or holding the cache's current contents when
    /// read-write), or scratch (uninitialised).
    fn upload(
        &self,
        device: &mut dyn Device,
        allocated: &mut Vec<DevBuf>,
        name: &str,
        elem: Ty,
        access: Access,
    ) -> Result<DevBuf, String> {
        let check = |dtype: DType| {
            if ty_of(dtype) == Some(elem) {
                Ok(())
            } else {
                Err(format!(
                    "buffer `{name}` holds {elem:?} but the reference graph's `{name}` is {dtype}"
                ))
            }
        };
        let mut alloc = |len: usize| -> Result<DevBuf, String> {
            let b = device
                .alloc(elem, len)
                .map_err(|e| format!("buffer `{name}`: {}", device_error(e)))?;
            allocated.push(b);
            Ok(b)
        };
        let write = |device: &mut dyn Device, b: DevBuf, at: usize, bytes: &[u8]| {
            device
                .write(b, at, bytes)
                .map_err(|e| format!("buffer `{name}`: {}", device_error(e)))
        };
        if let Some(v) = self.values.get(name) {
            check(v.dtype())?;
            let b = alloc(v.numel())?;
            write(device, b, 0, host_buffer(elem, v).bytes())?;
            return Ok(b);
        }
        if let Some(want) = self
            .expected
            .outputs
            .get(name)
            .or_else(|| self.expected.caches.get(name))
        {
            check(want.dtype())?;
            let b = alloc(want.numel())?;
            if let (Access::ReadWrite, Some(old)) = (access, self.caches.get(name)) {
                let axis = append_axis(self.graph, name)
                    .ok_or_else(|| format!("cache `{name}` is read-write but not appended to"))?;
                for (at, bytes) in prefix_runs(elem, old, &want.shape, axis) {
                    write(device, b, at, &bytes)?;
                }
            }
            return Ok(b);
        }
        if let Some(&(ty, len)) = self.scratch.get(name) {
            if ty != elem {
                return Err(format!(
                    "scratch `{name}` is {ty:?} but the kernel reads it as {elem:?}"
                ));
            }
            return alloc(len);
        }
        Err(format!(
            "buffer `{name}` is neither an input, an output nor scratch of the case"
        ))
    }
}

fn append_axis(graph: &Graph, cache: &str) -> Option<usize> {
    graph.nodes.iter().find_map(|n| match &n.op {
        Op::CacheAppend { name, axis } if name == cache => Some(*axis),
        _ => None,
    })
}

/// The copies that place the cache's old contents into the leading positions along `axis` of
/// the appended shape, leaving the new positions uninitialised for the kernel to fill: one
/// contiguous run of bytes per index of the axes before `axis`, with the element it starts at.
fn prefix_runs(elem: Ty, old: &Tensor, new_shape: &[usize], axis: usize) -> Vec<(usize, Vec<u8>)> {
    let outer: usize = new_shape[..axis].iter().product();
    let inner: usize = new_shape[axis + 1..].iter().product();
    let (old_len, new_len) = (old.shape[axis], new_shape[axis]);
    let old = host_buffer(elem, old);
    let run = old_len * inner * elem.size();
    (0..outer)
        .map(|o| {
            (
                o * new_len * inner,
                old.bytes()[o * run..(o + 1) * run].to_vec(),
            )
        })
        .collect()
}

/// The tensor's values in the element type, as a copy to the device takes them (f32 and bf16
/// rounded to nearest even from f32, integers and bools from i64).
fn host_buffer(elem: Ty, t: &Tensor) -> DeviceBuffer {
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

/// Runs every accepted case of `cases`; an error is one that stops the whole run before any case
/// (no driver, no GPU, no NVRTC, a module that does not compile). On the emulator each case has
/// its own device and they run in parallel over the machine's cores; on a GPU they run one after
/// another on the one device. `note` hears what was set up (the GPU and its kernels).
pub fn try_run_all(
    cases: &[Case],
    filter: &Filter,
    backend: Backend,
    note: &mut dyn FnMut(&str),
) -> Result<Summary, String> {
    use rayon::prelude::*;
    let start = Instant::now();
    let selected: Vec<&Case> = cases.iter().filter(|c| filter.accepts(c)).collect();
    let (reports, device) = match backend {
        _ if selected.is_empty() => (Vec::new(), format!("{backend:?}")),
        Backend::Emu => {
            let reports = selected
                .par_iter()
                .map(|c| {
                    let mut device = EmuDevice::new();
                    let mut report = run_case(c, &mut device);
                    report.thread_statements = device.statements;
                    report
                })
                .collect();
            (reports, EmuDevice::new().describe())
        }
        Backend::Cuda { ordinal } => {
            let mut device = open_gpu(ordinal, &selected, note)?;
            let describe = format!("{} with {}", device.describe(), device.image());
            (
                selected.iter().map(|c| run_case(c, &mut device)).collect(),
                describe,
            )
        }
    };
    Ok(Summary {
        device,
        reports,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// [`try_run_all`] where an error that stops the run fails every selected case with it.
pub fn run_all(cases: &[Case], filter: &Filter, backend: Backend) -> Summary {
    try_run_all(cases, filter, backend, &mut |_| {}).unwrap_or_else(|e| {
        let reports = cases
            .iter()
            .filter(|c| filter.accepts(c))
            .map(|c| CaseReport {
                error: Some(e.clone()),
                ..CaseReport::new(c)
            })
            .collect();
        Summary {
            device: format!("{backend:?}"),
            reports,
            seconds: 0.0,
        }
    })
}

/// GPU `ordinal`, with the kernels of `cases` printed into one module and compiled by NVRTC for
/// its SM: a cubin for the newest architecture not above the device's, and that architecture's
/// PTX, which the driver JIT-compiles where the cubin does not load.
fn open_gpu(
    ordinal: usize,
    cases: &[&Case],
    note: &mut dyn FnMut(&str),
) -> Result<CudaDevice, String> {
    // The driver's message names the engines' `--device emu`; here the emulator is a backend.
    let unsupported = |e: DeviceError| match e {
        DeviceError::Unsupported(m) => m
            .replace("run the engine on", "run the kernels on")
            .replace("--device emu", "--backend emu"),
        other => other.to_string(),
    };
    let mut compiled = String::new();
    // Called once the device is open: without a driver or a GPU, that is the one error.
    let device = CudaDevice::open_images(ordinal, |sm| {
        let target = Sm::ALL
            .into_iter()
            .filter(|s| sm_number(*s) <= sm)
            .max_by_key(|s| sm_number(*s))
            .ok_or_else(|| {
                DeviceError::Unsupported(format!(
                    "cuda:{ordinal} is an sm_{sm} GPU; the kernels need sm_80 or newer"
                ))
            })?;
        let kernels = module_kernels(cases).map_err(DeviceError::Unsupported)?;
        let source = print_module(&kernels);
        let nvrtc = Nvrtc::load().map_err(|e| DeviceError::Unsupported(e.to_string()))?;
        let start = Instant::now();
        let c = nvrtc
            .compile(&source, "vl3c_test_kernels.cu", target)
            .map_err(|e| DeviceError::Driver(e.to_string()))?;
        let (major, minor) = nvrtc.version();
        compiled = format!(
            "{} kernels of {} cases compiled for {target} by NVRTC {major}.{minor} in {:.1} s",
            kernels.len(),
            cases.len(),
            start.elapsed().as_secs_f64()
        );
        Ok(vec![
            KernelImage::Cubin {
                label: format!("{target} cubin (NVRTC)"),
                bytes: c.cubin,
            },
            KernelImage::Ptx {
                label: format!("{} PTX (NVRTC, JIT)", target.virtual_name()),
                text: c.ptx,
            },
        ])
    })
    .map_err(unsupported)?;
    note(&format!(
        "{}: {compiled}; loaded the {}",
        device.describe(),
        device.image()
    ));
    Ok(device)
}

/// `80` for sm_80.
fn sm_number(sm: Sm) -> u32 {
    sm.name()
        .trim_start_matches("sm_")
        .parse()
        .expect("an SM name is sm_ and a number")
}

/// Every kernel of `cases`, once: cases of one template instance share its kernels (sizes are
/// launch arguments), and instances name their kernels apart.
fn module_kernels(cases: &[&Case]) -> Result<Vec<Kernel>, String> {
    let mut by_name: BTreeMap<String, Kernel> = BTreeMap::new();
    let mut kernels = Vec::new();
    for case in cases {
        for k in case.template.kernels() {
            match by_name.get(&k.name) {
                Some(seen) if *seen != k => {
                    return Err(format!(
                        "two templates define different kernels named `{}` ({})",
                        k.name,
                        case.label()
                    ))
                }
                Some(_) => {}
                None => {
                    by_name.insert(k.name.clone(), k.clone());
                    kernels.push(k);
                }
            }
        }
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse() {
        assert_eq!(Backend::parse("emu"), Ok(Backend::Emu));
        assert_eq!(Backend::parse("cuda"), Ok(Backend::Cuda { ordinal: 0 }));
        assert_eq!(Backend::parse("cuda:3"), Ok(Backend::Cuda { ordinal: 3 }));
        for bad in ["cuda:", "cuda:x", "gpu"] {
            let e = Backend::parse(bad).unwrap_err();
            assert!(e.contains(&format!("unknown backend `{bad}`")), "{e}");
        }
    }

    /// The old cache goes to the leading positions of the appended axis, converted as any input;
    /// the new positions stay unwritten, and reading one back from the emulator is an error.
    #[test]
    fn a_cache_prefix_is_placed_and_the_rest_stays_unwritten() {
        let old = Tensor::f32(vec![2, 2, 3], (0..12).map(|v| v as f32 + 0.5).collect());
        for elem in [Ty::F32, Ty::Bf16] {
            let mut device = EmuDevice::new();
            let b = device.alloc(elem, 2 * 4 * 3).unwrap();
            for (at, bytes) in prefix_runs(elem, &old, &[2, 4, 3], 1) {
                device.write(b, at, &bytes).unwrap();
            }
            for o in 0..2 {
                let got = device.read(b, o * 12, 6).unwrap();
                let want: Vec<f32> = (0..6).map(|c| (o * 6 + c) as f32 + 0.5).collect();
                let check =
                    OutputCheck::compare_bytes("k", &Tensor::f32(vec![6], want), elem, &got, 0.0);
                assert!(check.passed() && check.nmse == 0.0, "{elem:?}: {check:?}");
            }
            let e = device_error(device.read(b, 0, 24).unwrap_err());
            assert_eq!(e, "element 6 is copied to the host but was never written");
        }
    }

    #[test]
    fn outputs_read_back_compare_in_their_element_type() {
        let want = Tensor::i64(vec![3], vec![1, -2, 3]);
        let bytes: Vec<u8> = [1i64, -2, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let check = OutputCheck::compare_bytes("ids", &want, Ty::I64, &bytes, 0.0);
        assert!(
            !check.passed() && (check.nmse - 1.0 / 3.0).abs() < 1e-12,
            "{check:?}"
        );
        let want = Tensor::f32(vec![2], vec![1.0, 2.0]);
        let nan: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            OutputCheck::compare_bytes("x", &want, Ty::F32, &nan, 1.0).non_finite,
            1
        );
    }

    /// Without a driver, a GPU run stops before any case with the one line that names the
    /// emulator (with one, this is `tests/cuda_cli.rs`'s business).
    #[test]
    fn without_a_driver_the_gpu_backend_names_the_emulator() {
        if CudaDevice::driver_present() {
            return;
        }
        let cases = crate::templates::cases();
        let filter = Filter {
            ops: vec!["rms_norm".into()],
            pattern: None,
        };
        let e =
            try_run_all(&cases, &filter, Backend::Cuda { ordinal: 0 }, &mut |_| {}).unwrap_err();
        assert!(
            e.contains("--backend emu") && !e.contains("--device") && e.lines().count() == 1,
            "{e}"
        );
    }
}
