//! Compiled CPU engines: [`compile`] writes one through the compile driver (vl3c-driver; format
//! in `vl3c_engine` and `vl3c_cpu::plan`), [`Engine::load`] checks and reads it, and the
//! entry points run it.
//!
//! Loading never recompiles: the graphs are parsed and verified, `weights.bin` is read into
//! memory once (see `weights.rs` for why it is not mapped) and every file is checked against the
//! manifest's sha256. Execution is the reference executor's, with the engine claiming the
//! nodes its plan lists (see `runner.rs`), so the forward contract is [`Model`]'s exactly.

mod attention;
mod claims;
mod cuda;
mod gather;
mod kernels;
mod kv;
mod matmul;
mod runner;
mod weights;

pub use cuda::DeviceSpec;
pub use vl3c_driver::{Compiled, DriverError};
pub use vl3c_engine::{Progress, Target};

use crate::exec::Tensor;
use crate::model::{int_values, KvState, LogitsToKeep, Model, ModelError, NamedTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use vl3c_cpu::plan::{self as cpu_plan, Claim, Plan};
pub use vl3c_cpu::GemmMode;
use vl3c_cuda::lower::{KERNELS_FILE, PLAN_FILE, WEIGHTS_FILE};
use vl3c_cuda::run::Program;
use vl3c_cuda::CUDA_DIR;
use vl3c_engine::{self as fmt, EngineError, Manifest};
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_ir::{parse_graphs, verify, Graph};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

type Result<T> = std::result::Result<T, Error>;

pub struct Engine {
    dir: PathBuf,
    manifest: Manifest,
    /// Where the engine runs: "cpu (N threads)", "emu (…)", "cuda:0 (…)".
    device: String,
    /// A CUDA engine's device (the emulator or a GPU).
    cuda: Option<vl3c_cuda::run::SharedDevice>,
    model: Model,
    max_context: usize,
    gemm_mode: Arc<AtomicU8>,
    /// A CPU engine's weights (shared with its runner) and kernel threads, for
    /// [`Engine::weights_read_gbs`].
    cpu: Option<(Arc<weights::Weights>, usize)>,
}

/// The KV cache of one sequence, bounded by the engine's `--max-context`: prefill fills it and
/// every decode step extends it; going past the bound is an error, never a reallocation past it.
pub struct KvCache {
    state: Option<KvState>,
    max_context: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.state.as_ref().map_or(0, KvState::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.max_context
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Format(EngineError::file(path, message))
}

impl Engine {
    /// Loads `dir` (see the module docs for what is checked); the KV cache holds at most
    /// `max_context` positions; the matmul kernels use `threads` threads. A CUDA engine runs on
    /// its default device (the first GPU).
    pub fn load(
        dir: &Path,
        max_context: usize,
        threads: usize,
        progress: Progress,
    ) -> Result<Engine> {
        Engine::load_on(dir, max_context, threads, DeviceSpec::Default, progress)
    }

    /// [`Engine::load`] on `device`: the emulator or a GPU for a CUDA engine; a CPU engine
    /// accepts only the default.
    pub fn load_on(
        dir: &Path,
        max_context: usize,
        threads: usize,
        device: DeviceSpec,
        progress: Progress,
    ) -> Result<Engine> {
        const STEPS: usize = 5;
        progress("load", 0, STEPS);
        if engine_target(dir) == "cuda" {
            return Engine::load_cuda(dir, max_context, device, progress);
        }
        if device != DeviceSpec::Default {
            return Err(file_err(dir, "is a CPU engine; --device chooses where a CUDA engine runs (compile one with --target cuda)"));
        }
        let manifest = Manifest::read_and_check(dir, "cpu")?;
        manifest.require_files(dir, &[cpu_plan::PLAN, cpu_plan::WEIGHTS])?;
        let read = |name: &str| read_checked(dir, &manifest, name);
        progress("load", 1, STEPS);
        let graphs = read_graphs(dir, &manifest)?;
        progress("load", 3, STEPS);

        let path = dir.join(cpu_plan::PLAN);
        let plan: Plan = serde_json::from_slice(&read(cpu_plan::PLAN)?)
            .map_err(|e| file_err(&path, format!("is malformed: {e}")))?;
        let weights_len = manifest.files.get(cpu_plan::WEIGHTS).map_or(0, |f| f.bytes);
        check_tensors(&plan, weights_len, &path)?;
        // The decode step's matmul weights go first, in the order a step reads them.
        let mut first: Vec<(usize, u64)> = plan
            .graphs
            .get("decode")
            .map(|gp| {
                gp.claims
                    .iter()
                    .filter_map(|c| match c {
                        Claim::Matmul { node, tensor } => {
                            plan.tensors.get(tensor).map(|e| (*node, e.offset))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        first.sort_unstable();
        let first: Vec<u64> = first.into_iter().map(|(_, o)| o).collect();
        let map = Arc::new(weights::Weights::read(dir, &manifest, &plan, &first)?);
        progress("load", 2, STEPS);
        let config = read_config(dir, &manifest)?;
        let kernels = match (
            manifest.files.contains_key(cpu_plan::KERNELS),
            plan.kernels.is_empty(),
        ) {
            (true, _) => {
                let object = read(cpu_plan::KERNELS)?;
                let path = dir.join(cpu_plan::KERNELS);
                Some(
                    kernels::Kernels::load(&object, &plan.kernels)
                        .map_err(|m| file_err(&path, m))?,
                )
            }
            (false, true) => None,
            (false, false) => {
                return Err(file_err(
                    &dir.join(cpu_plan::PLAN),
                    "lists kernels but the engine has no kernels.o",
                ))
            }
        };
        progress("load", 4, STEPS);

        keep_freed_memory();
        let gemm_mode = Arc::new(AtomicU8::new(0));
        let runner = runner::Runner::new(
            map.clone(),
            plan,
            &graphs,
            threads,
            kernels,
            gemm_mode.clone(),
            max_context,
        )
        .map_err(|m| file_err(&dir.join(cpu_plan::PLAN), m))?;
        let model = Model::with_runner(config, graphs, Box::new(runner), Some(max_context));
        progress("load", STEPS, STEPS);
        let device = format!("cpu ({threads} threads)");
        Ok(Engine {
            dir: dir.to_path_buf(),
            manifest,
            device,
            cuda: None,
            model,
            max_context,
            gemm_mode,
            cpu: Some((map, threads.max(1))),
        })
    }

    fn load_cuda(
        dir: &Path,
        max_context: usize,
        device: DeviceSpec,
        progress: Progress,
    ) -> Result<Engine> {
        const STEPS: usize = 4;
        let manifest = Manifest::read_and_check(dir, "cuda")?;
        let files: Vec<String> = [PLAN_FILE, KERNELS_FILE, WEIGHTS_FILE]
            .iter()
            .map(|f| format!("{CUDA_DIR}/{f}"))
            .collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        manifest.require_files(dir, &names)?;
        let graphs = read_graphs(dir, &manifest)?;
        let config = read_config(dir, &manifest)?;
        progress("load", 1, STEPS);
        let cuda_dir = dir.join(CUDA_DIR);
        let dev = cuda::open_device(device, &cuda_dir)
            .map_err(|m| Error::Format(EngineError::Incompatible(m)))?;
        progress("load", 2, STEPS);
        let program = Program::load_with(
            &|name| {
                read_checked(dir, &manifest, &format!("{CUDA_DIR}/{name}"))
                    .map_err(|e| e.to_string())
            },
            dev,
        )
        .map_err(|e| file_err(&cuda_dir, e.to_string()))?;
        program
            .check_graphs(&graphs.all())
            .map_err(|e| file_err(&cuda_dir, e.to_string()))?;
        program
            .check_kv_fits(&graphs.decode, max_context)
            .map_err(|e| Error::Format(EngineError::Incompatible(e.to_string())))?;
        progress("load", 3, STEPS);
        let runner = cuda::CudaRunner::new(program, graphs.decode.clone(), max_context);
        let (device, cuda) = (runner.describe_device(), Some(runner.device()));
        let model = Model::with_runner(config, graphs, Box::new(runner), Some(max_context));
        progress("load", STEPS, STEPS);
        Ok(Engine {
            dir: dir.to_path_buf(),
            manifest,
            device,
            cuda,
            model,
            max_context,
            gemm_mode: Arc::new(AtomicU8::new(0)),
            cpu: None,
        })
    }

    /// A CPU engine's read bandwidth in GB/s over its own decode weights, as a decode step
    /// streams them (the first `max_bytes` in reading order, on the kernels' threads, best of
    /// `passes`; see [`vl3c_cpu::peak::read_words_gbs`]); `None` for a CUDA engine. It reads
    /// memory the engine holds anyway, so it can run between timed runs without adding to the
    /// process's peak RSS.
    pub fn weights_read_gbs(&self, max_bytes: usize, passes: usize) -> Option<f64> {
        let (weights, threads) = self.cpu.as_ref()?;
        let parts = weights.leading_words(max_bytes);
        Some(vl3c_cpu::peak::read_words_gbs(&parts, *threads, passes))
    }

    /// Where the engine runs.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// A CUDA engine's device limits, measured on it (`Ok(None)` on the emulator, whose time
    /// means nothing); `None` for a CPU engine, whose limits are the host's.
    pub fn device_limits(
        &self,
    ) -> Option<std::result::Result<Option<vl3c_cuda::run::DeviceLimits>, String>> {
        let dev = self.cuda.as_ref()?;
        let mut dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        Some(vl3c_cuda::run::measure_limits(dev.as_mut()).map_err(|e| e.to_string()))
    }

    /// The arithmetic of the bf16 GEMMs (prefill, vision): `Auto` (the default) picks per CPU;
    /// `Bf16Dot` rounds activations to bf16 for `vdpbf16ps` (scalar emulation without it).
    /// Attention follows it on a bf16 checkpoint: bf16 products wherever the GEMMs round to
    /// bf16, f32 under `Exact`; an f32 checkpoint's attention is f32 in every mode.
    pub fn set_gemm_mode(&self, mode: GemmMode) {
        let v = match mode {
            GemmMode::Auto => 0,
            GemmMode::Exact => 1,
            GemmMode::Bf16Dot => 2,
            GemmMode::Amx => 3,
        };
        self.gemm_mode.store(v, Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The engine as a [`Model`]: transformers' forward contract, generation (`StepModel`).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            state: None,
            max_context: self.max_context,
        }
    }

    /// Vision encoder + projector over images: the embeddings f32 [tokens, hidden].
    pub fn image_embed(
        &self,
        pixels: &Tensor,
        grid: &Tensor,
        merge: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self.model.image_embed(pixels, grid, merge)?)
    }

    /// Vision encoder + projector over videos: the embeddings before pruning and Differential
    /// Frame Pruning's keep-mask over them.
    pub fn video_embed(
        &self,
        pixels: &Tensor,
        grid: &Tensor,
        merge: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        Ok(self.model.video_embed(pixels, grid, merge)?)
    }

    /// The prompt `ids` i64 [1, L] with the embeddings of its image and video placeholders
    /// (`mask` selects the kept video rows): logits f32 [1, L, vocab]; `cache` restarts.
    pub fn prefill(
        &self,
        ids: &Tensor,
        image_embeds: Option<&Tensor>,
        video_embeds: Option<&Tensor>,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.model.config().text.hidden_size;
        let len = int_values(ids, "input_ids")?.len();
        let empty = Tensor::f32(vec![0, hidden], Vec::new());
        let mut inputs: NamedTensors = HashMap::from([
            ("input_ids".to_string(), ids.clone()),
            (
                "image_embeds".to_string(),
                image_embeds.cloned().unwrap_or_else(|| empty.clone()),
            ),
        ]);
        if self.model.config().video_token_id.is_some() {
            let v = video_embeds.cloned().unwrap_or(empty);
            let rows = v.shape.first().copied().unwrap_or(0);
            let mask = mask
                .cloned()
                .unwrap_or_else(|| Tensor::bool(vec![rows], vec![true; rows]));
            inputs.insert("video_embeds".into(), v);
            inputs.insert("video_compression_mask".into(), mask);
        }
        let (logits, state) = self.model.run_prefill(&inputs, len, 0, LogitsToKeep::All)?;
        cache.state = Some(state);
        Ok(logits)
    }

    /// One step at the next position: the logits of `token`'s position.
    pub fn decode(&self, token: i64, cache: &mut KvCache) -> Result<Vec<f32>> {
        let state = cache.state.as_mut().ok_or_else(|| {
            Error::Model(ModelError::BadInput {
                name: "cache".into(),
                message: "is empty: prefill first".into(),
            })
        })?;
        Ok(self.model.decode_step(state, token)?)
    }
}

/// The target the manifest in `dir` names ("cpu" when it cannot be read: the CPU loader then
/// reports what is wrong with it).
fn engine_target(dir: &Path) -> String {
    let limit = vl3c_frontends::limits::MAX_INDEX_BYTES;
    vl3c_frontends::limits::read_bounded(&dir.join(fmt::MANIFEST), limit, "manifest.json")
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("target").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "cpu".into())
}

/// `name` read and checked against the manifest's size and sha256. The size is checked before
/// the read, and the read is bounded by it (and, for anything but weights, by
/// `MAX_ENGINE_FILE_BYTES`), so a manifest or a file that lies about its size cannot exhaust
/// memory.
fn read_checked(dir: &Path, manifest: &Manifest, name: &str) -> Result<Vec<u8>> {
    use vl3c_frontends::limits::{check_file, read_bounded, MAX_ENGINE_FILE_BYTES};
    let path = dir.join(name);
    let listed = manifest
        .files
        .get(name)
        .ok_or_else(|| file_err(&path, "is not listed in manifest.json"))?
        .bytes;
    let limit = if name.ends_with(cpu_plan::WEIGHTS) {
        listed
    } else {
        listed.min(MAX_ENGINE_FILE_BYTES)
    };
    // A regular file first (a device or a pipe is refused before its size means anything).
    let len = check_file(&path, u64::MAX, name)
        .map_err(|e| file_err(&path, format!("cannot read: {e}")))?;
    manifest.check_size(dir, name, len)?;
    let bytes = read_bounded(&path, limit, name)
        .map_err(|e| file_err(&path, format!("cannot read: {e}")))?;
    manifest.check_file(dir, name, &bytes)?;
    Ok(bytes)
}

/// `graphs.vir`, parsed and verified: the five graphs every engine runs.
fn read_graphs(dir: &Path, manifest: &Manifest) -> Result<ModelGraphs> {
    let path = dir.join(fmt::GRAPHS);
    let text = String::from_utf8(read_checked(dir, manifest, fmt::GRAPHS)?)
        .map_err(|_| file_err(&path, "is not UTF-8"))?;
    let parsed =
        parse_graphs(&text).map_err(|e| file_err(&path, format!("does not parse: {e}")))?;
    let mut by_name: HashMap<String, Graph> = HashMap::new();
    for g in parsed {
        verify(&g)
            .map_err(|e| file_err(&path, format!("graph `{}` does not verify: {e}", g.name)))?;
        by_name.insert(g.name.clone(), g);
    }
    let mut take = |name: &str| {
        by_name
            .remove(name)
            .ok_or_else(|| file_err(&path, format!("has no graph `{name}`")))
    };
    Ok(ModelGraphs {
        vision_m1: take("vision_m1")?,
        vision_m2: take("vision_m2")?,
        projector: take("projector")?,
        prefill: take("prefill")?,
        decode: take("decode")?,
    })
}

fn read_config(dir: &Path, manifest: &Manifest) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = String::from_utf8(read_checked(dir, manifest, "config.json")?)
        .map_err(|_| file_err(&path, "is not UTF-8"))?;
    Ok(ModelConfig::from_json_str(&text, &path.display().to_string()).map_err(ModelError::from)?)
}

/// Has glibc's malloc serve buffers below 32 MiB from its heap and keep freed memory instead of
/// returning it to the kernel: every graph run allocates the same large activations (17 MB per
/// op in the vision encoder), and fresh pages from the kernel cost a page fault per 4 KiB, which
/// profiles showed as a tenth of the run. Peak RSS is unchanged (the same buffers are reused);
/// RSS stays at the peak instead of falling between runs.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tunables; it is safe to call at any time.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Every entry of `weights.bin`'s index must be what its shape, dtype and layout take, inside
/// the file and apart from the others (`vl3c_engine::check_index`); every raw weight a graph
/// reads must be indexed. The claims are checked against the graphs by the runner (`claims.rs`).
fn check_tensors(plan: &Plan, weights_len: u64, path: &Path) -> Result<()> {
    let packed = vl3c_cpu::checked_packed_len;
    fmt::check_index(path, &plan.tensors, weights_len, &packed)?;
    for (gname, gp) in &plan.graphs {
        if let Some(w) = gp.weights.iter().find(|w| !plan.tensors.contains_key(*w)) {
            return Err(file_err(
                path,
                format!("graph `{gname}` reads unknown tensor `{w}`"),
            ));
        }
    }
    Ok(())
}

/// Compiles the checkpoint `model_dir` for `target` into `out_dir` with the one compile driver,
/// from the graphs [`Model::open`] runs (the image processor's pixel limit bounds the
/// encoder's symbols); `config_only`: from config.json alone, no weights (targets that need
/// weights refuse).
pub fn compile(
    model_dir: &Path,
    target: &mut dyn Target,
    config_only: bool,
    out_dir: &Path,
    progress: Progress,
) -> Result<Compiled> {
    let checkpoint = if config_only {
        None
    } else {
        Some(vl3c_frontends::Checkpoint::open(model_dir).map_err(ModelError::from)?)
    };
    let mut source = match &checkpoint {
        Some(c) => vl3c_driver::ModelSource::checkpoint(model_dir, c),
        None => vl3c_driver::ModelSource::config_only(model_dir)?,
    };
    crate::model::apply_preprocessor_limits(&mut source.config, model_dir)?;
    Ok(vl3c_driver::compile(&source, target, out_dir, progress)?)
}
