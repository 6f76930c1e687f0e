//! CUDA engines: the plan in the engine's `cuda/` runs on a device, the emulator (`--device emu`)
//! or a GPU (`--device cuda[:N]`), behind the same [`GraphRunner`] interface as the CPU engine,
//! so generation, eval and bench drive both alike. The KV caches live on the device.

use crate::exec::{ExecError, Outputs, Tensor};
use crate::model::{GraphRunner, NamedTensors};
use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use vl3c_cuda::run::{CudaDevice, Device, EmuDevice, KvStore, Program, RunError};
use vl3c_ir::{Graph, NodeId, Op};

/// Where a CUDA engine runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The engine's own kind: the first GPU for a CUDA engine.
    #[default]
    Default,
    /// The kernel-IR emulator, every check on.
    Emu,
    /// GPU `N` through the CUDA driver.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceSpec, String> {
        match s {
            "emu" => Ok(DeviceSpec::Emu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{s}` (expected emu, cuda or cuda:N)"
                )),
            },
        }
    }
}

/// Opens the device a CUDA engine in `cuda_dir` runs on.
pub(crate) fn open_device(
    spec: DeviceSpec,
    cuda_dir: &Path,
) -> Result<Box<dyn Device + Send>, String> {
    match spec {
        DeviceSpec::Emu => Ok(Box::new(EmuDevice::new())),
        DeviceSpec::Default => Ok(Box::new(
            CudaDevice::open(0, cuda_dir).map_err(|e| e.to_string())?,
        )),
        DeviceSpec::Cuda(n) => Ok(Box::new(
            CudaDevice::open(n, cuda_dir).map_err(|e| e.to_string())?,
        )),
    }
}

pub(crate) struct CudaRunner {
    program: Program,
    /// The graph whose cache reads name every cache a sequence keeps (decode).
    decode: Graph,
    max_context: usize,
}

/// A sequence's caches, allocated on the device on its first run (so an allocation failure is
/// that run's error).
struct LazyKv(Option<KvStore>);

impl CudaRunner {
    pub(crate) fn new(program: Program, decode: Graph, max_context: usize) -> CudaRunner {
        CudaRunner {
            program,
            decode,
            max_context,
        }
    }

    pub(crate) fn describe_device(&self) -> String {
        self.program.describe_device()
    }

    pub(crate) fn device(&self) -> vl3c_cuda::run::SharedDevice {
        self.program.device()
    }

    fn store(&self) -> Result<KvStore, ExecError> {
        self.program
            .new_kv(&self.decode, self.max_context)
            .map_err(|e| exec_err(&self.decode, e))
    }
}

/// The runner's errors in the reference executor's terms, which the model's callers report.
fn exec_err(graph: &Graph, e: RunError) -> ExecError {
    match e {
        RunError::Input { name, message } => ExecError::Input { name, message },
        RunError::Cache { name, message } => ExecError::Cache { name, message },
        RunError::Output { name, message } => ExecError::Output { name, message },
        RunError::Step { node, message, .. } if node < graph.nodes.len() => ExecError::Node {
            node: NodeId(node as u32),
            op: graph.nodes[node].op.mnemonic(),
            message,
        },
        other => ExecError::Backend(other.to_string()),
    }
}

impl GraphRunner for CudaRunner {
    /// With caches given as tensors (the reference semantics): they are uploaded into a
    /// sequence's store for the run and the extended ones downloaded.
    fn run(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
    ) -> Result<Outputs, ExecError> {
        let mut kv = self.store()?;
        for n in &graph.nodes {
            if let Op::CacheRead { name } = &n.op {
                if let Some(t) = caches.get(name) {
                    kv.upload(name, t).map_err(|e| exec_err(graph, e))?;
                }
            }
        }
        let out = self
            .program
            .run(graph, inputs, &mut kv)
            .map_err(|e| exec_err(graph, e))?;
        let mut written = HashMap::new();
        for n in &graph.nodes {
            if let Op::CacheAppend { name, .. } = &n.op {
                written.insert(
                    name.clone(),
                    kv.download(name).map_err(|e| exec_err(graph, e))?,
                );
            }
        }
        Ok(outputs(out, written))
    }

    fn new_kv(&self) -> Option<Box<dyn Any + Send>> {
        Some(Box::new(LazyKv(None)))
    }

    fn run_kv(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        kv: &mut (dyn Any + Send),
    ) -> Result<Outputs, ExecError> {
        let lazy = kv
            .downcast_mut::<LazyKv>()
            .ok_or_else(|| ExecError::Cache {
                name: "*".into(),
                message: "is not this engine's KV cache".into(),
            })?;
        if lazy.0.is_none() {
            lazy.0 = Some(self.store()?);
        }
        let store = lazy.0.as_mut().expect("just set");
        let out = self
            .program
            .run(graph, inputs, store)
            .map_err(|e| exec_err(graph, e))?;
        Ok(outputs(out, HashMap::new()))
    }
}

fn outputs(out: vl3c_cuda::run::RunOutputs, caches: HashMap<String, Tensor>) -> Outputs {
    Outputs {
        outputs: out.outputs,
        caches,
        symbols: out.symbols,
        peak_bytes: out.peak_bytes,
    }
}
