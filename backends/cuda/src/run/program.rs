//! A CUDA engine loaded onto a device: the plan's instances with their kernels and reference
//! graphs, every stored weight uploaded once, and the KV caches a sequence keeps on the device.

use super::device::{DevBuf, Device};
use super::RunError;
use crate::check::ty_of;
use crate::gemm::{DataType, GemmCall};
use crate::kir::{Kernel, Ty};
use crate::lower::{GraphFile, PlanFile, Step, KERNELS_FILE, PLAN_FILE, WEIGHTS_FILE};
use crate::templates::Scratch;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use vl3c_ir::{parse_graphs, DType, Dim, Graph, Op};

/// A device shared by the engine and the KV caches it hands out (which free their buffers when
/// dropped).
pub type SharedDevice = Arc<Mutex<Box<dyn Device + Send>>>;

pub(super) struct Instance {
    pub name: String,
    pub reference: Graph,
    pub kernels: Vec<Kernel>,
    pub scratch: Vec<Scratch>,
    /// The reference graph's inputs in order: a matmul's operands bind to them by position.
    pub inputs: Vec<String>,
}

impl Instance {
    /// The device element type of the reference graph's input at `pos`.
    pub fn input_ty(&self, pos: usize) -> Option<Ty> {
        let name = self.inputs.get(pos)?;
        let node = self
            .reference
            .nodes
            .iter()
            .find(|n| matches!(&n.op, Op::Input { name: m } if m == name))?;
        ty_of(node.ty.dtype)
    }
}

/// A stored weight on the device, in one of the layouts (and element types) the steps read it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Layout {
    /// As the IR holds it, in its stored dtype.
    Ir,
    /// The last two dimensions swapped: `[N, K]`, what the GEMMs and GEMVs read as their weight
    /// (see `gemm::describe`), with elements of the given type: the stored dtype, or bf16 for an
    /// f32 value of a bf16 checkpoint's weight (exact; checked at upload).
    Nk(Ty),
}

/// The element type a matmul step's GEMM reads its weight (A) in.
pub(super) fn gemm_weight_ty(gemm: &GemmCall) -> Ty {
    match gemm.a.ty {
        DataType::Bf16 => Ty::Bf16,
        DataType::F32 => Ty::F32,
    }
}

pub struct Program {
    pub(super) device: SharedDevice,
    pub(super) instances: Vec<Instance>,
    pub(super) graphs: HashMap<String, GraphFile>,
    pub(super) weights: HashMap<(String, Layout), DevBuf>,
    pub(super) tensors: HashMap<String, (DType, Vec<usize>)>,
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> RunError {
    RunError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

impl Program {
    /// Loads the engine's `cuda/` section from `cuda_dir` onto `device` and uploads the weights.
    pub fn load(cuda_dir: &Path, device: Box<dyn Device + Send>) -> Result<Program, RunError> {
        let read = |name: &str| {
            std::fs::read(cuda_dir.join(name)).map_err(|e| format!("cannot read: {e}"))
        };
        Program::load_with(&read, device)
    }

    /// [`Program::load`] with the files of `cuda/` read by `read` (by file name), which may
    /// check them against the engine's manifest.
    pub fn load_with(
        read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
        device: Box<dyn Device + Send>,
    ) -> Result<Program, RunError> {
        let read = |name: &str| read(name).map_err(|m| file_err(Path::new(name), m));
        let cuda_dir = Path::new("");
        let plan_path = cuda_dir.join(PLAN_FILE);
        let plan: PlanFile = serde_json::from_slice(&read(PLAN_FILE)?)
            .map_err(|e| file_err(&plan_path, format!("is malformed: {e}")))?;
        if !plan.weights {
            return Err(file_err(&plan_path, "belongs to an engine compiled with --config-only, which has no weights and cannot run"));
        }
        let kernels_path = cuda_dir.join(KERNELS_FILE);
        let kernels: Vec<Kernel> = serde_json::from_slice(&read(KERNELS_FILE)?)
            .map_err(|e| file_err(&kernels_path, format!("is malformed: {e}")))?;
        let by_name: HashMap<&str, &Kernel> =
            kernels.iter().map(|k| (k.name.as_str(), k)).collect();
        let mut instances = Vec::with_capacity(plan.instances.len());
        for e in &plan.instances {
            let bad = |m: String| file_err(&plan_path, format!("instance `{}`: {m}", e.name));
            let reference = parse_graphs(&e.reference)
                .map_err(|err| bad(format!("reference does not parse: {err}")))?;
            let [reference] = <[Graph; 1]>::try_from(reference)
                .map_err(|_| bad("reference is not one graph".into()))?;
            let kernels = e
                .kernels
                .iter()
                .map(|k| {
                    by_name
                        .get(k.as_str())
                        .map(|k| (*k).clone())
                        .ok_or_else(|| bad(format!("kernel `{k}` is not in {KERNELS_FILE}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let scratch =
                e.scratch
                    .iter()
                    .map(|s| {
                        // `Ty` serializes as its variant name, which the plan stores.
                        let elem: Ty =
                            serde_json::from_value(serde_json::Value::String(s.elem.clone()))
                                .map_err(|_| {
                                    bad(format!(
                                        "scratch `{}` has element type `{}`",
                                        s.name, s.elem
                                    ))
                                })?;
                        let len = Dim::parse(&s.len).map_err(|err| {
                            bad(format!("scratch `{}` length `{}`: {err}", s.name, s.len))
                        })?;
                        Ok(Scratch {
                            name: s.name.clone(),
                            elem,
                            len,
                        })
                    })
                    .collect::<Result<Vec<_>, RunError>>()?;
            let inputs = reference
                .nodes
                .iter()
                .filter_map(|n| match &n.op {
                    Op::Input { name } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            instances.push(Instance {
                name: e.name.clone(),
                reference,
                kernels,
                scratch,
                inputs,
            });
        }
        super::validate::check_instances(&instances)?;
        for g in &plan.graphs {
            for s in &g.plan.steps {
                let used = match s {
                    Step::Launch { instance, .. } => vec![*instance],
                    Step::Matmul { gemv, round_b, .. } => {
                        gemv.iter().chain(round_b).copied().collect()
                    }
                    Step::Attention {
                        prefill, decode, ..
                    } => std::iter::once(*prefill).chain(*decode).collect(),
                    Step::Alias { .. } => Vec::new(),
                };
                if let Some(i) = used.into_iter().find(|&i| i >= instances.len()) {
                    return Err(file_err(
                        &plan_path,
                        format!(
                            "graph `{}`, node %{}: instance {i} does not exist",
                            g.plan.graph,
                            s.node()
                        ),
                    ));
                }
            }
        }

        // Every stored tensor, in each layout and element type a step reads it in, and only
        // those: a matmul weight is `[N, K]` in its GEMM's and its GEMV's element type, and as the
        // IR holds it only when something else reads it too.
        let mut wanted: Vec<(String, Layout)> = Vec::new();
        let mut seen = HashSet::new();
        let mut want = |tensor: &String, layout: Layout| {
            if seen.insert((tensor.clone(), layout)) {
                wanted.push((tensor.clone(), layout));
            }
        };
        for g in &plan.graphs {
            let mut read = BTreeSet::new();
            for s in &g.plan.steps {
                let (others, weight): (Vec<usize>, _) = match s {
                    Step::Alias { of, .. } => (vec![*of], None),
                    Step::Launch { inputs, .. } | Step::Attention { inputs, .. } => {
                        (inputs.values().copied().collect(), None)
                    }
                    Step::Matmul {
                        inputs, gemm, gemv, ..
                    } => {
                        let others = inputs
                            .iter()
                            .enumerate()
                            .filter(|&(pos, _)| pos != 1)
                            .map(|(_, &n)| n)
                            .collect();
                        (others, inputs.get(1).map(|&w| (w, gemm, *gemv)))
                    }
                };
                for n in others {
                    if let Some(tensor) = g.stored.get(&n) {
                        read.insert(n);
                        want(tensor, Layout::Ir);
                    }
                }
                let Some((w, gemm, gemv)) = weight else {
                    continue;
                };
                let Some(tensor) = g.stored.get(&w) else {
                    continue;
                };
                read.insert(w);
                want(tensor, Layout::Nk(gemm_weight_ty(gemm)));
                if let Some(i) = gemv {
                    let ty = instances[i].input_ty(1).ok_or_else(|| {
                        file_err(&plan_path, format!("instance `{}` reads no weight of a device type as its second input", instances[i].name))
                    })?;
                    want(tensor, Layout::Nk(ty));
                }
            }
            // A stored value no step reads is an output of the graph.
            for (node, tensor) in &g.stored {
                if !read.contains(node) {
                    want(tensor, Layout::Ir);
                }
            }
        }
        let weights_path = cuda_dir.join(WEIGHTS_FILE);
        let bytes = read(WEIGHTS_FILE)?;
        // Every entry is what its shape and dtype take, inside the file, before any is sliced
        // (the CUDA target stores no packed layouts).
        vl3c_engine::check_index(&plan_path, &plan.tensors, bytes.len() as u64, &|_, _| None)
            .map_err(|e| match e {
                vl3c_engine::EngineError::File { path, message } => file_err(&path, message),
                other => RunError::Context(other.to_string()),
            })?;
        let device: SharedDevice = Arc::new(Mutex::new(device));
        let mut weights = HashMap::new();
        let mut tensors = HashMap::new();
        {
            let mut dev = lock(&device);
            // Bytes as uploaded: a bf16 [N, K] copy of an f32 value takes half its stored size.
            let need: u64 = wanted
                .iter()
                .filter_map(|(name, layout)| plan.tensors.get(name).map(|e| (e, layout)))
                .map(|(e, layout)| match layout {
                    Layout::Nk(Ty::Bf16) if e.dtype == "f32" => e.bytes / 2,
                    _ => e.bytes,
                })
                .sum();
            if let Some((free, total)) = dev.memory() {
                if need > free as u64 {
                    let gib = |b: f64| b / (1u64 << 30) as f64;
                    return Err(RunError::Context(format!(
                        "the engine's weights need {:.2} GiB on the device, but {:.2} GiB of the GPU's {:.2} GiB are free",
                        gib(need as f64),
                        gib(free as f64),
                        gib(total as f64)
                    )));
                }
            }
            for (name, layout) in wanted {
                let e = plan.tensors.get(&name).ok_or_else(|| {
                    file_err(
                        &plan_path,
                        format!("stores tensor `{name}` that has no entry"),
                    )
                })?;
                let dtype = DType::from_str(&e.dtype).map_err(|_| {
                    file_err(
                        &plan_path,
                        format!("tensor `{name}` has dtype `{}`", e.dtype),
                    )
                })?;
                let ty = ty_of(dtype).ok_or_else(|| {
                    file_err(
                        &plan_path,
                        format!("tensor `{name}`: {dtype} has no device type"),
                    )
                })?;
                let data = usize::try_from(e.offset)
                    .ok()
                    .zip(usize::try_from(e.offset + e.bytes).ok())
                    .and_then(|(a, b)| bytes.get(a..b))
                    .ok_or_else(|| {
                        file_err(
                            &weights_path,
                            format!("tensor `{name}` lies outside the file"),
                        )
                    })?;
                let numel: usize = e.shape.iter().product();
                if numel * ty.size() != data.len() {
                    return Err(file_err(
                        &weights_path,
                        format!(
                            "tensor `{name}`: {} bytes for {dtype}{:?}",
                            data.len(),
                            e.shape
                        ),
                    ));
                }
                let bad = |m: String| file_err(&weights_path, format!("tensor `{name}`: {m}"));
                let (data, elem) = match layout {
                    Layout::Ir => (data.to_vec(), ty),
                    Layout::Nk(elem) => (
                        convert(
                            &swap_last_two(data, &e.shape, ty.size()).map_err(bad)?,
                            ty,
                            elem,
                        )
                        .map_err(bad)?,
                        elem,
                    ),
                };
                let buf = dev.alloc(elem, numel.max(1))?;
                dev.write(buf, 0, &data)?;
                weights.insert((name.clone(), layout), buf);
                tensors.insert(name, (dtype, e.shape.clone()));
            }
        }
        let graphs = plan
            .graphs
            .into_iter()
            .map(|g| (g.plan.graph.clone(), g))
            .collect();
        Ok(Program {
            device,
            instances,
            graphs,
            weights,
            tensors,
        })
    }

    /// The device, shared with the caches this engine hands out.
    pub fn device(&self) -> SharedDevice {
        self.device.clone()
    }

    pub fn describe_device(&self) -> String {
        lock(&self.device).describe()
    }

    /// Bytes the KV caches of one sequence take at `capacity` positions.
    pub fn kv_bytes(graph: &Graph, capacity: usize) -> usize {
        graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::CacheRead { .. }))
            .map(|n| {
                let per_position: usize =
                    n.ty.shape
                        .iter()
                        .filter_map(|d| d.as_const())
                        .map(|d| d as usize)
                        .product();
                per_position
                    .saturating_mul(capacity)
                    .saturating_mul(n.ty.dtype.size_bytes())
            })
            .fold(0usize, usize::saturating_add)
    }

    /// Checks that one sequence's KV caches at `capacity` fit in the device's free memory (after
    /// the weights), so a too-small GPU is a load error rather than a failure mid-answer.
    pub fn check_kv_fits(&self, graph: &Graph, capacity: usize) -> Result<(), RunError> {
        let Some((free, total)) = lock(&self.device).memory() else {
            return Ok(());
        };
        let need = Program::kv_bytes(graph, capacity);
        if need > free {
            let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
            return Err(RunError::Context(format!(
                "the KV cache for --max-context {capacity} needs {:.2} GiB, but {:.2} GiB of the GPU's {:.2} GiB are free after the weights; lower --max-context",
                gib(need),
                gib(free),
                gib(total)
            )));
        }
        Ok(())
    }

    /// Empty KV caches for one sequence, for every cache `graph` reads, each with room for
    /// `capacity` positions, allocated on the device now.
    pub fn new_kv(&self, graph: &Graph, capacity: usize) -> Result<KvStore, RunError> {
        let mut caches = BTreeMap::new();
        let mut dev = lock(&self.device);
        for n in &graph.nodes {
            let Op::CacheRead { name } = &n.op else {
                continue;
            };
            let bad = |m: String| RunError::Cache {
                name: name.clone(),
                message: m,
            };
            let (heads, d) = match (
                n.ty.rank(),
                n.ty.shape[0].as_const(),
                n.ty.shape.last().and_then(|d| d.as_const()),
            ) {
                (3, Some(h), Some(d)) => (h as usize, d as usize),
                _ => {
                    return Err(bad(format!(
                        "is {}, not [heads, positions, head_dim] with fixed heads and head_dim",
                        n.ty
                    )))
                }
            };
            let ty = ty_of(n.ty.dtype)
                .ok_or_else(|| bad(format!("{} has no device type", n.ty.dtype)))?;
            let len = heads
                .checked_mul(capacity)
                .and_then(|x| x.checked_mul(d))
                .ok_or_else(|| bad("is too large".into()))?;
            let buf = dev.alloc(ty, len.max(1))?;
            caches.insert(
                name.clone(),
                KvCache {
                    buf,
                    heads,
                    d,
                    dtype: n.ty.dtype,
                    len: 0,
                },
            );
        }
        Ok(KvStore {
            device: self.device.clone(),
            capacity,
            caches,
        })
    }
}

pub(super) fn lock(device: &SharedDevice) -> MutexGuard<'_, Box<dyn Device + Send>> {
    // A panic while holding the lock leaves the device as it was; its state is still usable.
    device.lock().unwrap_or_else(|p| p.into_inner())
}

/// Little-endian elements of `from` as `to`: the same bytes, a bf16 widened to f32, or an f32
/// that is a bf16 value (its low 16 bits zero) narrowed, which is exact; any other f32 means the
/// plan reads as bf16 a weight that is not one, and is an error.
fn convert(data: &[u8], from: Ty, to: Ty) -> Result<Vec<u8>, String> {
    match (from, to) {
        _ if from == to => Ok(data.to_vec()),
        (Ty::Bf16, Ty::F32) => Ok(data
            .chunks_exact(2)
            .flat_map(|b| ((u16::from_le_bytes([b[0], b[1]]) as u32) << 16).to_le_bytes())
            .collect()),
        (Ty::F32, Ty::Bf16) => {
            let mut out = Vec::with_capacity(data.len() / 2);
            for (i, b) in data.chunks_exact(4).enumerate() {
                let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if bits & 0xffff != 0 {
                    return Err(format!(
                        "element {i} = {} is not a bf16 value, but the plan reads the tensor as a bf16 weight",
                        f32::from_bits(bits)
                    ));
                }
                out.extend(((bits >> 16) as u16).to_le_bytes());
            }
            Ok(out)
        }
        _ => Err(format!("is {from:?}, which the plan reads as {to:?}")),
    }
}

/// `[.., K, N]` row-major → `[.., N, K]`, elements of `size` bytes.
fn swap_last_two(data: &[u8], shape: &[usize], size: usize) -> Result<Vec<u8>, String> {
    let [.., k, n] = shape[..] else {
        return Err(format!("a matmul weight of shape {shape:?}"));
    };
    let batch = data.len() / (k * n * size).max(1);
    let mut out = vec![0u8; data.len()];
    for b in 0..batch {
        let base = b * k * n * size;
        for i in 0..k {
            for j in 0..n {
                let (src, dst) = (base + (i * n + j) * size, base + (j * k + i) * size);
                out[dst..dst + size].copy_from_slice(&data[src..src + size]);
            }
        }
    }
    Ok(out)
}

/// One cache of a sequence: `[heads, capacity, d]` on the device, the first `len` positions of
/// each head valid.
pub(super) struct KvCache {
    pub buf: DevBuf,
    pub heads: usize,
    pub d: usize,
    pub dtype: DType,
    pub len: usize,
}

/// The KV caches of one sequence, on the device for as long as it lives.
pub struct KvStore {
    device: SharedDevice,
    pub(super) capacity: usize,
    pub(super) caches: BTreeMap<String, KvCache>,
}

impl KvStore {
    /// Positions held (every cache holds the same number after a whole step).
    pub fn len(&self) -> usize {
        self.caches.values().map(|c| c.len).max().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cache `name`'s valid positions as a tensor `[heads, len, d]`.
    pub fn download(&self, name: &str) -> Result<vl3c_reference::Tensor, RunError> {
        let c = self.caches.get(name).ok_or_else(|| RunError::Cache {
            name: name.into(),
            message: "is not kept".into(),
        })?;
        let mut dev = lock(&self.device);
        let mut bytes = Vec::with_capacity(c.heads * c.len * c.d * c.dtype.size_bytes());
        for head in 0..c.heads {
            bytes.extend(dev.read(c.buf, head * self.capacity * c.d, c.len * c.d)?);
        }
        vl3c_reference::Tensor::from_bytes(c.dtype, &[c.heads, c.len, c.d], &bytes).map_err(|m| {
            RunError::Cache {
                name: name.into(),
                message: m,
            }
        })
    }

    /// Fills cache `name` from a host tensor `[heads, len, d]`.
    pub fn upload(&mut self, name: &str, t: &vl3c_reference::Tensor) -> Result<(), RunError> {
        let capacity = self.capacity;
        let c = self.caches.get_mut(name).ok_or_else(|| RunError::Cache {
            name: name.into(),
            message: "is not read by the graph".into(),
        })?;
        let bad = |m: String| RunError::Cache {
            name: name.into(),
            message: m,
        };
        let [h, len, d] = t.shape[..] else {
            return Err(bad(format!("has shape {:?}, not [heads, len, d]", t.shape)));
        };
        if h != c.heads || d != c.d || t.dtype() != c.dtype {
            return Err(bad(format!(
                "is {}{:?}, the engine keeps {}[{}, len, {}]",
                t.dtype(),
                t.shape,
                c.dtype,
                c.heads,
                c.d
            )));
        }
        if len > capacity {
            return Err(RunError::ContextOverflow {
                needed: len,
                capacity,
            });
        }
        let bytes = t.to_bytes();
        let row = len * d * c.dtype.size_bytes();
        let mut dev = lock(&self.device);
        // Head by head: the rows past `len` stay unwritten (the emulator proves nothing reads them).
        for head in 0..h {
            dev.write(
                c.buf,
                head * capacity * d,
                &bytes[head * row..(head + 1) * row],
            )?;
        }
        c.len = len;
        Ok(())
    }
}

impl Drop for KvStore {
    fn drop(&mut self) {
        let mut dev = lock(&self.device);
        for c in self.caches.values() {
            dev.free(c.buf);
        }
    }
}
