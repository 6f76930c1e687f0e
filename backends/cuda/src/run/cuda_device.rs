//! The GPU [`Device`], through cudarc. libcuda and libcublasLt are opened at run time (cudarc's
//! dynamic loading), so the one `vl3c` binary builds with no CUDA installed and runs on machines
//! without a GPU; [`CudaDevice::open`] is where their absence becomes an error to act on.
//!
//! Kernels come from the engine's `cuda/` directory: the cubin for the device's SM, or else the
//! PTX the driver JIT-compiles. GEMMs go to cuBLASLt exactly as their [`GemmCall`] describes
//! them, which is what `gemm::emulate` checked on the CPU.

use super::device::{DevArg, DevBuf, Device, DeviceError, GemmBuffers};
use crate::gemm::{ComputeType, DataType, Epilogue, GemmCall, Resolved, ResolvedLayout, Transpose};
use crate::kir::{launch_geometry, Kernel, Lit, ParamId, ParamKind, Ty};
use crate::templates::Sizes;
use cudarc::cublaslt::{result as lt, sys as lt_sys};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const NO_DRIVER: &str =
    "no NVIDIA driver (libcuda) on this machine; run the engine on the emulator with --device emu";
const NO_CUBLASLT: &str =
    "cuBLASLt (libcublasLt.so) not found: install the nvidia-cublas wheel or the CUDA toolkit";
/// NVIDIA's recommendation for Hopper (4 MiB suffices before it); one allocation for all calls.
const WORKSPACE_BYTES: usize = 32 << 20;
/// Dynamic shared memory a kernel may use without opting in to more.
const DEFAULT_DYNAMIC_SHARED: usize = 48 << 10;

/// One GPU: a context, one stream every launch, copy and GEMM is queued on (so work runs in the
/// order the executor issues it), the engine's module, and the buffers.
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    sm: u32,
    total_memory: usize,
    max_shared_per_block: usize,
    /// The image the module was loaded from: `sm_90.cubin` or `compute_80.ptx (JIT)`.
    image: String,
    functions: HashMap<String, Function>,
    /// Indexed by [`DevBuf`]; a freed slot is reused by the next `alloc`.
    buffers: Vec<Option<Buffer>>,
    vacant: Vec<usize>,
    /// Freed allocations by byte size: a decode step frees and allocates the same sizes as the
    /// step before, so after the first one it never reaches `cuMemAlloc`.
    pool: HashMap<usize, Vec<CudaSlice<u8>>>,
    /// Created at the first GEMM: a plan that never calls cuBLASLt does not need the library.
    blas: Option<Blas>,
    module: Arc<CudaModule>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

struct Function {
    function: CudaFunction,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` as set so far.
    dynamic_shared_limit: usize,
}

struct Buffer {
    memory: CudaSlice<u8>,
    elem: Ty,
    len: usize,
}

impl CudaDevice {
    /// Opens GPU `ordinal` and loads the kernels of the engine directory `cuda_dir`.
    pub fn open(ordinal: usize, cuda_dir: &Path) -> Result<CudaDevice, DeviceError> {
        Self::open_with(ordinal, |ctx, sm, what| {
            load_module(ctx, cuda_dir, sm, what)
        })
    }

    /// Opens GPU `ordinal` with kernels made for it at run time: `images(sm)` gives, for the
    /// device's SM, the images to try in order (`test-kernels` compiles them with NVRTC). It is
    /// called only once the device is open, so a machine without a driver fails first.
    pub fn open_images(
        ordinal: usize,
        images: impl FnOnce(u32) -> Result<Vec<KernelImage>, DeviceError>,
    ) -> Result<CudaDevice, DeviceError> {
        Self::open_with(ordinal, |ctx, sm, what| {
            load_images(ctx, images(sm)?).map_err(|rejected| {
                DeviceError::Driver(format!(
                    "{what} cannot load the kernels ({})",
                    rejected.join("; ")
                ))
            })
        })
    }

    fn open_with(
        ordinal: usize,
        load: impl FnOnce(
            &Arc<CudaContext>,
            u32,
            &str,
        ) -> Result<(Arc<CudaModule>, String), DeviceError>,
    ) -> Result<CudaDevice, DeviceError> {
        if !Self::driver_present() {
            return Err(DeviceError::Unsupported(NO_DRIVER.into()));
        }
        let count = CudaContext::device_count().map_err(|e| {
            DeviceError::Unsupported(format!(
                "the NVIDIA driver finds no usable GPU ({}); run the engine on the emulator with --device emu",
                error_text(e)
            ))
        })?;
        if ordinal >= count.max(0) as usize {
            let message = format!("no GPU cuda:{ordinal}: this machine has {count} CUDA device(s)");
            return Err(DeviceError::Unsupported(message));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: called before any allocation, and all work goes to the one stream below, in
        // order, so cudarc's per-buffer events would only cost two event records per argument.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let sm = (major * 10 + minor) as u32;
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let total_memory = ctx.total_mem().map_err(driver("cuDeviceTotalMem"))?;
        let max_shared_per_block = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver("cuDeviceGetAttribute"))? as usize;
        let what = format!("cuda:{ordinal} ({name}, sm_{sm})");
        let (module, image) = load(&ctx, sm, &what)?;
        Ok(CudaDevice {
            ordinal,
            name,
            sm,
            total_memory,
            max_shared_per_block,
            image,
            functions: HashMap::new(),
            buffers: Vec::new(),
            vacant: Vec::new(),
            pool: HashMap::new(),
            blas: None,
            module,
            stream,
            ctx,
        })
    }

    /// Whether libcuda can be opened at all (never panics, unlike cudarc's first driver call).
    pub fn driver_present() -> bool {
        // SAFETY: opening libcuda runs only its initialisers.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }

    /// Which of the engine's files the kernels were loaded from.
    pub fn image(&self) -> &str {
        &self.image
    }

    fn buffer(&self, buf: DevBuf) -> Result<&Buffer, DeviceError> {
        self.buffers
            .get(buf.0)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                DeviceError::Driver(format!(
                    "buffer {} is not allocated on cuda:{}",
                    buf.0, self.ordinal
                ))
            })
    }

    /// A new device allocation, refused up front when the device has too little free memory.
    fn fresh(&mut self, bytes: usize) -> Result<CudaSlice<u8>, DeviceError> {
        let (mut free, mut total) = self.ctx.mem_get_info().map_err(driver("cuMemGetInfo"))?;
        if bytes > free && !self.pool.is_empty() {
            // Give the cached allocations back; the stream-ordered allocator returns them to the
            // device at the next synchronization.
            self.pool.clear();
            self.stream
                .synchronize()
                .map_err(driver("cuStreamSynchronize"))?;
            (free, total) = self.ctx.mem_get_info().map_err(driver("cuMemGetInfo"))?;
        }
        if bytes > free {
            return Err(DeviceError::OutOfMemory {
                wanted: bytes,
                free,
                total,
            });
        }
        // SAFETY: the bytes are uninitialised, as `Device::alloc` promises.
        match unsafe { self.stream.alloc::<u8>(bytes) } {
            Ok(memory) => Ok(memory),
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => Err(DeviceError::OutOfMemory {
                wanted: bytes,
                free,
                total,
            }),
            Err(e) => Err(driver("cuMemAllocAsync")(e)),
        }
    }

    /// The kernel's function, loaded at its first launch, allowed `dynamic_shared` bytes.
    fn prepare(&mut self, kernel: &Kernel, dynamic_shared: usize) -> Result<(), DeviceError> {
        if !self.functions.contains_key(&kernel.name) {
            if kernel.name.contains('\0') {
                return Err(DeviceError::Driver(format!(
                    "kernel name {:?} has a NUL",
                    kernel.name
                )));
            }
            let function = self.module.load_function(&kernel.name).map_err(|e| {
                DeviceError::Driver(format!(
                    "kernel {} is not in {} ({}): the engine's kernels.kir.json and its kernels disagree",
                    kernel.name,
                    self.image,
                    error_text(e)
                ))
            })?;
            let entry = Function {
                function,
                dynamic_shared_limit: DEFAULT_DYNAMIC_SHARED,
            };
            self.functions.insert(kernel.name.clone(), entry);
        }
        let f = self
            .functions
            .get_mut(&kernel.name)
            .expect("inserted above");
        if dynamic_shared > f.dynamic_shared_limit {
            let attribute = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            f.function
                .set_attribute(attribute, dynamic_shared as i32)
                .map_err(driver(format!(
                    "cuFuncSetAttribute({}, {dynamic_shared} bytes)",
                    kernel.name
                )))?;
            f.dynamic_shared_limit = dynamic_shared;
        }
        Ok(())
    }

    /// Checks `args` against the kernel's parameters; the scalar values, for the geometry.
    fn bind(&self, kernel: &Kernel, args: &[DevArg]) -> Result<Vec<(ParamId, Lit)>, DeviceError> {
        let bad = |why: String| DeviceError::Driver(format!("launch of {}: {why}", kernel.name));
        if args.len() != kernel.params.len() {
            return Err(bad(format!(
                "{} arguments for {} parameters",
                args.len(),
                kernel.params.len()
            )));
        }
        let mut scalars = Vec::new();
        for (i, (param, arg)) in kernel.params.iter().zip(args).enumerate() {
            match (&param.kind, arg) {
                (ParamKind::Buffer { elem, .. }, DevArg::Buffer(b)) => {
                    let held = self.buffer(*b)?.elem;
                    if held != *elem {
                        return Err(bad(format!(
                            "{}: a {held:?} buffer where {elem:?} is expected",
                            param.name
                        )));
                    }
                }
                (ParamKind::Scalar(ty), DevArg::Scalar(lit)) if lit.ty() == *ty => {
                    scalars.push((ParamId(i as u32), *lit));
                }
                (kind, arg) => {
                    return Err(bad(format!(
                        "{}: {arg:?} for a {kind:?} parameter",
                        param.name
                    )))
                }
            }
        }
        Ok(scalars)
    }

    /// cuBLASLt, opened at the first GEMM.
    fn open_blas(&mut self) -> Result<(), DeviceError> {
        if self.blas.is_none() {
            // SAFETY: opening libcublasLt runs only its initialisers.
            if !unsafe { lt_sys::is_culib_present() } {
                return Err(DeviceError::Unsupported(NO_CUBLASLT.into()));
            }
            let workspace = self.fresh(WORKSPACE_BYTES)?;
            self.ctx
                .bind_to_thread()
                .map_err(driver("cuCtxSetCurrent"))?;
            let handle = lt::create_handle().map_err(blas_error("cublasLtCreate"))?;
            self.blas = Some(Blas {
                handle,
                workspace,
                plans: HashMap::new(),
            });
        }
        Ok(())
    }

    /// The pointer and checked extent of one GEMM operand.
    fn operand(
        &self,
        name: &str,
        buf: DevBuf,
        layout: &ResolvedLayout,
        batch: i64,
    ) -> Result<u64, DeviceError> {
        let b = self.buffer(buf)?;
        let fail = |why: String| Err(DeviceError::Driver(format!("cuBLASLt {name}: {why}")));
        if !matches!(
            (b.elem, layout.ty),
            (Ty::Bf16, DataType::Bf16) | (Ty::F32, DataType::F32)
        ) {
            return fail(format!(
                "a {:?} buffer where the call declares {:?}",
                b.elem, layout.ty
            ));
        }
        // What the emulator checks: the last element the call touches must be in the buffer.
        let (span, ld, stride) = (layout.span(batch), layout.ld, layout.batch_stride);
        if span > b.len as i64 {
            return fail(format!(
                "reaches element {} (ld {ld}, batch stride {stride}) of a buffer of {}",
                span - 1,
                b.len
            ));
        }
        Ok(b.memory.device_ptr(&self.stream).0)
    }
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Queued work may still use the buffers and cuBLASLt's workspace being released.
        let _ = self.stream.synchronize();
    }
}

impl Device for CudaDevice {
    fn describe(&self) -> String {
        let gib = self.total_memory as f64 / (1u64 << 30) as f64;
        format!(
            "cuda:{} ({}, sm_{}, {gib:.1} GiB)",
            self.ordinal, self.name, self.sm
        )
    }

    fn alloc(&mut self, elem: Ty, len: usize) -> Result<DevBuf, DeviceError> {
        // cuMemAlloc refuses zero bytes; an empty buffer still needs an address to bind.
        let bytes = len
            .checked_mul(elem.size())
            .ok_or(DeviceError::OutOfMemory {
                wanted: usize::MAX,
                free: 0,
                total: self.total_memory,
            })?;
        let bytes = bytes.max(1);
        let memory = match self.pool.get_mut(&bytes).and_then(Vec::pop) {
            Some(memory) => memory,
            None => self.fresh(bytes)?,
        };
        let buffer = Some(Buffer { memory, elem, len });
        Ok(match self.vacant.pop() {
            Some(slot) => {
                self.buffers[slot] = buffer;
                DevBuf(slot)
            }
            None => {
                self.buffers.push(buffer);
                DevBuf(self.buffers.len() - 1)
            }
        })
    }

    fn free(&mut self, buf: DevBuf) {
        if let Some(b) = self.buffers.get_mut(buf.0).and_then(Option::take) {
            self.pool.entry(b.memory.len()).or_default().push(b.memory);
            self.vacant.push(buf.0);
        }
    }

    fn write(&mut self, buf: DevBuf, at: usize, bytes: &[u8]) -> Result<(), DeviceError> {
        let b = self.buffer(buf)?;
        let (size, room) = (b.elem.size(), b.len * b.elem.size());
        let start = at * size;
        if start + bytes.len() > room {
            return Err(DeviceError::Driver(format!(
                "write of {} bytes at byte {start} into buffer {} of {room}",
                bytes.len(),
                buf.0
            )));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let memory = &mut self.buffers[buf.0].as_mut().expect("checked above").memory;
        let mut view = memory.slice_mut(start..start + bytes.len());
        self.stream
            .memcpy_htod(bytes, &mut view)
            .map_err(driver("cuMemcpyHtoDAsync"))
    }

    fn read(&mut self, buf: DevBuf, at: usize, len: usize) -> Result<Vec<u8>, DeviceError> {
        let b = self.buffer(buf)?;
        if at + len > b.len {
            return Err(DeviceError::Driver(format!(
                "read of {len} elements at {at} of buffer {} of {}",
                buf.0, b.len
            )));
        }
        let size = b.elem.size();
        let mut out = vec![0u8; len * size];
        if !out.is_empty() {
            let view = b.memory.slice(at * size..at * size + out.len());
            self.stream
                .memcpy_dtoh(&view, &mut out)
                .map_err(driver("cuMemcpyDtoHAsync"))?;
        }
        // The bytes are the host's only once the copy (and all work before it) is done; an
        // earlier launch's fault surfaces here too.
        self.synchronize()?;
        Ok(out)
    }

    fn memory(&self) -> Option<(usize, usize)> {
        // Freed buffers wait in the pool: they count as free for whoever asks.
        let pooled: usize = self.pool.iter().map(|(bytes, v)| bytes * v.len()).sum();
        self.ctx
            .mem_get_info()
            .ok()
            .map(|(free, total)| (free + pooled, total))
    }

    fn copy(&mut self, src: DevBuf, dst: DevBuf, len: usize) -> Result<(), DeviceError> {
        let (s, d) = (self.buffer(src)?, self.buffer(dst)?);
        let bytes = len * s.elem.size();
        if s.elem != d.elem || len > s.len || len > d.len {
            return Err(DeviceError::Driver(format!(
                "copy of {len} elements from buffer {} ({} × {:?}) to {} ({} × {:?})",
                src.0, s.len, s.elem, dst.0, d.len, d.elem
            )));
        }
        if bytes == 0 || src == dst {
            return Ok(());
        }
        // Two slots of the slab: take the destination out while the source is borrowed.
        let mut to = self.buffers[dst.0].take().expect("checked above");
        let from = &self.buffers[src.0].as_ref().expect("checked above").memory;
        let result = self
            .stream
            .memcpy_dtod(&from.slice(..bytes), &mut to.memory.slice_mut(..bytes))
            .map_err(driver("cuMemcpyDtoDAsync"));
        self.buffers[dst.0] = Some(to);
        result
    }

    fn launch(&mut self, kernel: &Kernel, args: &[DevArg]) -> Result<(), DeviceError> {
        let scalars = self.bind(kernel, args)?;
        let g = launch_geometry(kernel, &scalars).map_err(DeviceError::Driver)?;
        let shared = kernel.static_shared_bytes() + g.dynamic_shared_bytes;
        if shared > self.max_shared_per_block {
            return Err(DeviceError::Driver(format!(
                "kernel {} needs {shared} bytes of shared memory per block; sm_{} allows {}",
                kernel.name, self.sm, self.max_shared_per_block
            )));
        }
        self.prepare(kernel, g.dynamic_shared_bytes)?;
        let function = &self.functions[&kernel.name].function;
        let mut builder = self.stream.launch_builder(function);
        for arg in args {
            match arg {
                DevArg::Buffer(b) => {
                    builder.arg(&self.buffers[b.0].as_ref().expect("bound above").memory)
                }
                DevArg::Scalar(Lit::Bool(v)) => builder.arg(v),
                DevArg::Scalar(Lit::I32(v)) => builder.arg(v),
                DevArg::Scalar(Lit::U32(v)) => builder.arg(v),
                DevArg::Scalar(Lit::I64(v)) => builder.arg(v),
                DevArg::Scalar(Lit::F32(v)) => builder.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: g.grid.into(),
            block_dim: g.block.into(),
            shared_mem_bytes: g.dynamic_shared_bytes as u32,
        };
        // SAFETY: the arguments are in the order of the printed kernel's parameters and of the
        // types it declares (`bind` checked both), and every buffer outlives the queued launch
        // (a freed one goes to the pool, and is only released in stream order).
        unsafe { builder.launch(config) }
            .map_err(driver(format!("cuLaunchKernel({})", kernel.name)))?;
        Ok(())
    }

    fn gemm(
        &mut self,
        call: &GemmCall,
        sizes: &Sizes,
        bufs: GemmBuffers,
    ) -> Result<(), DeviceError> {
        let r = call
            .resolve(sizes)
            .map_err(|e| DeviceError::Driver(format!("cuBLASLt call: {e}")))?;
        if r.m == 0 || r.n == 0 {
            return Ok(());
        }
        let batch = r.batch_count;
        let a = self.operand("A", bufs.a, &r.a, batch)?;
        let b = self.operand("B", bufs.b, &r.b, batch)?;
        let d = self.operand("D", bufs.d, &r.d, batch)?;
        let c = match (call.beta != 0.0, bufs.c) {
            (false, _) => d,
            (true, Some(c)) => self.operand("C", c, &r.c, batch)?,
            (true, None) => {
                return Err(DeviceError::Driver(
                    "cuBLASLt: beta ≠ 0 reads C, but no C buffer was given".into(),
                ))
            }
        };
        let bias = match (call.epilogue, bufs.bias) {
            (Epilogue::Default, _) => None,
            (Epilogue::Bias { ty }, Some(bias)) => {
                let vector = ResolvedLayout {
                    ty,
                    rows: r.m,
                    cols: 1,
                    ld: r.m.max(1),
                    batch_stride: 0,
                };
                Some(self.operand("bias", bias, &vector, 1)?)
            }
            (Epilogue::Bias { .. }, None) => {
                return Err(DeviceError::Driver(
                    "cuBLASLt: the bias epilogue has no bias buffer".into(),
                ))
            }
        };
        self.ctx
            .bind_to_thread()
            .map_err(driver("cuCtxSetCurrent"))?;
        let stream = self.stream.cu_stream() as lt_sys::cudaStream_t;
        self.open_blas()?;
        let blas = self.blas.as_mut().expect("opened above");
        // cuBLASLt assumes 256-byte aligned operands unless told otherwise.
        let align = [a, b, c, d].map(|p| 1u32 << p.trailing_zeros().min(8));
        let plan = blas.plan(call, &r, align)?;
        if let Some(bias) = bias {
            // The pointer changes from call to call; everything else about the descriptor is the
            // shape's.
            let attribute =
                lt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER;
            // SAFETY: the descriptor is alive (the plan owns it) and the value is a device pointer.
            unsafe {
                lt::set_matmul_desc_attribute(plan.desc, attribute, ptr_to(&bias), size_of::<u64>())
            }
            .map_err(blas_error("cublasLtMatmulDescSetAttribute(BIAS_POINTER)"))?;
        }
        let (desc, layouts, algo) = (plan.desc, plan.layouts, plan.algo);
        let workspace = blas.workspace.device_ptr(&self.stream).0;
        let (alpha, beta) = (call.alpha, call.beta);
        // SAFETY: every pointer was checked above to hold the span its layout reaches, with the
        // declared element type; alpha and beta are host f32, the scale type of every plan.
        unsafe {
            lt::matmul(
                blas.handle,
                desc,
                ptr_to(&alpha),
                ptr_to(&beta),
                a as *const c_void,
                layouts[0],
                b as *const c_void,
                layouts[1],
                c as *const c_void,
                layouts[2],
                d as *mut c_void,
                layouts[3],
                &algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
        }
        .map_err(blas_error(format!(
            "cublasLtMatmul(m={}, n={}, k={}, batch={batch})",
            r.m, r.n, r.k
        )))
    }

    fn synchronize(&mut self) -> Result<(), DeviceError> {
        self.stream.synchronize().map_err(|e| {
            DeviceError::Driver(format!(
                "cuStreamSynchronize: {} (raised by queued work: a kernel or cuBLASLt call since the last synchronization)",
                error_text(e)
            ))
        })?;
        // Errors of work released in drops (frees) are recorded rather than returned.
        self.ctx.check_err().map_err(driver("a deferred free"))
    }
}

fn ptr_to<T>(v: &T) -> *const c_void {
    v as *const T as *const c_void
}

/// A driver error as `CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered`.
fn error_text(e: DriverError) -> String {
    match (e.error_name(), e.error_string()) {
        (Ok(name), Ok(text)) => format!("{}: {}", name.to_string_lossy(), text.to_string_lossy()),
        _ => format!("{:?}", e.0),
    }
}

fn driver(call: impl Into<String>) -> impl FnOnce(DriverError) -> DeviceError {
    let call = call.into();
    move |e| DeviceError::Driver(format!("{call}: {}", error_text(e)))
}

fn blas_error(call: impl Into<String>) -> impl FnOnce(lt::CublasError) -> DeviceError {
    let call = call.into();
    move |e| DeviceError::Driver(format!("{call}: {:?}", e.0))
}

/// A module's code as the driver takes it, with the label [`CudaDevice::image`] reports.
#[derive(Clone, Debug)]
pub enum KernelImage {
    /// Machine code for one SM (`sm_90.cubin`).
    Cubin { label: String, bytes: Vec<u8> },
    /// PTX the driver JIT-compiles (`compute_80.ptx (JIT)`).
    Ptx { label: String, text: String },
}

/// The first of `images` the driver loads, or why each was rejected.
fn load_images(
    ctx: &Arc<CudaContext>,
    images: Vec<KernelImage>,
) -> Result<(Arc<CudaModule>, String), Vec<String>> {
    let mut rejected = Vec::new();
    for image in images {
        let (ptx, label) = match image {
            KernelImage::Cubin { label, bytes } => (Ptx::from_binary(bytes), label),
            KernelImage::Ptx { label, text } => {
                // cuModuleLoadData reads PTX up to its NUL; one inside the text would cut it short.
                let text = text.trim_end_matches('\0');
                if text.contains('\0') {
                    rejected.push(format!("{label}: not PTX text"));
                    continue;
                }
                (Ptx::from_src(text), label)
            }
        };
        match ctx.load_module(ptx) {
            Ok(module) => return Ok((module, label)),
            Err(e) => rejected.push(format!("{label}: {}", error_text(e))),
        }
    }
    Err(rejected)
}

/// The engine's kernels, as the device can run them: the cubin of its SM, else the newest PTX
/// not above it (the driver compiles it; slower to load, same kernels).
fn load_module(
    ctx: &Arc<CudaContext>,
    dir: &Path,
    sm: u32,
    what: &str,
) -> Result<(Arc<CudaModule>, String), DeviceError> {
    let mut images = Vec::new();
    for path in kernel_images(dir, sm).map_err(DeviceError::Unsupported)? {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let bytes = std::fs::read(&path)
            .map_err(|e| DeviceError::Driver(format!("{}: {e}", path.display())))?;
        images.push(if file.ends_with(".cubin") {
            KernelImage::Cubin { label: file, bytes }
        } else {
            KernelImage::Ptx {
                label: format!("{file} (JIT)"),
                text: String::from_utf8_lossy(&bytes).into_owned(),
            }
        });
    }
    load_images(ctx, images).map_err(|rejected| {
        DeviceError::Driver(format!(
            "{what} cannot load the engine's kernels in {} ({}); recompile with `vl3c compile --target cuda --sm {sm}`",
            dir.display(),
            rejected.join("; ")
        ))
    })
}

/// The files of an engine's `cuda/` directory that can run on an `sm` GPU, in the order to try
/// them: `sm_{sm}.cubin`, then every `compute_XX.ptx` with XX ≤ sm, newest first. None is an
/// error naming the SMs the engine has and the one it needs.
pub fn kernel_images(dir: &Path, sm: u32) -> Result<Vec<PathBuf>, String> {
    let mut cubins = Vec::new();
    let mut ptx = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = |prefix: &str, suffix: &str| {
                name.strip_prefix(prefix)?
                    .strip_suffix(suffix)?
                    .parse::<u32>()
                    .ok()
            };
            if let Some(n) = number("sm_", ".cubin") {
                cubins.push(n);
            } else if let Some(n) = number("compute_", ".ptx") {
                ptx.push(n);
            }
        }
    }
    let mut images = Vec::new();
    if cubins.contains(&sm) {
        images.push(dir.join(format!("sm_{sm}.cubin")));
    }
    ptx.sort_unstable_by(|a, b| b.cmp(a));
    images.extend(
        ptx.iter()
            .filter(|&&n| n <= sm)
            .map(|n| dir.join(format!("compute_{n}.ptx"))),
    );
    if !images.is_empty() {
        return Ok(images);
    }
    let (dir, recompile) = (
        dir.display(),
        format!("recompile with `vl3c compile --target cuda --sm {sm}`"),
    );
    if cubins.is_empty() && ptx.is_empty() {
        return Err(format!(
            "{dir} holds no kernels (no sm_XX.cubin nor compute_XX.ptx): {recompile}"
        ));
    }
    cubins.sort_unstable();
    let files: Vec<String> = cubins
        .iter()
        .map(|n| format!("sm_{n}.cubin"))
        .chain(ptx.iter().rev().map(|n| format!("compute_{n}.ptx")))
        .collect();
    Err(format!(
        "the engine's kernels ({} in {dir}) do not run on this sm_{sm} GPU: {recompile}",
        files.join(", ")
    ))
}

/// cuBLASLt: a handle, its workspace, and a plan per call shape. Creating descriptors and asking
/// the heuristic for an algorithm costs more than a small decode-time GEMM itself, and every
/// step repeats the shapes of the one before, so each shape pays it once.
struct Blas {
    handle: lt_sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<PlanKey, Plan>,
}

// SAFETY: cuBLASLt handles and descriptors may be used from any thread, one at a time, which
// `&mut CudaDevice` guarantees.
unsafe impl Send for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created by `create_handle` and destroyed only here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// Everything a plan depends on: the resolved call without alpha, beta and pointers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    pedantic: bool,
    trans: [bool; 2],
    bias: Option<bool>,
    mnkb: [i64; 4],
    /// (bf16, rows, cols, ld, batch stride) of A, B, C, D.
    layouts: [(bool, i64, i64, i64, i64); 4],
    /// Of the A, B, C, D pointers, up to 256 bytes.
    align: [u32; 4],
}

/// `cublasLtMatmulDesc` + the four `cublasLtMatrixLayout`s + the heuristic's algorithm.
struct Plan {
    desc: lt_sys::cublasLtMatmulDesc_t,
    layouts: [lt_sys::cublasLtMatrixLayout_t; 4],
    algo: lt_sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each non-null handle was created for this plan and is destroyed only here.
        unsafe {
            for layout in self.layouts.into_iter().filter(|l| !l.is_null()) {
                let _ = lt::destroy_matrix_layout(layout);
            }
            if !self.desc.is_null() {
                let _ = lt::destroy_matmul_desc(self.desc);
            }
        }
    }
}

/// With beta = 0, C is D's own memory (never read), and cuBLASLt wants an in-place C laid out as D.
fn c_layout<'a>(call: &GemmCall, r: &'a Resolved) -> &'a ResolvedLayout {
    if call.beta == 0.0 {
        &r.d
    } else {
        &r.c
    }
}

fn cuda_type(t: DataType) -> lt_sys::cudaDataType {
    match t {
        DataType::Bf16 => lt_sys::cudaDataType::CUDA_R_16BF,
        DataType::F32 => lt_sys::cudaDataType::CUDA_R_32F,
    }
}

impl Blas {
    fn plan(
        &mut self,
        call: &GemmCall,
        r: &Resolved,
        align: [u32; 4],
    ) -> Result<&Plan, DeviceError> {
        let layout =
            |l: &ResolvedLayout| (l.ty == DataType::Bf16, l.rows, l.cols, l.ld, l.batch_stride);
        let key = PlanKey {
            pedantic: call.compute == ComputeType::F32Pedantic,
            trans: [call.transa == Transpose::T, call.transb == Transpose::T],
            bias: match call.epilogue {
                Epilogue::Default => None,
                Epilogue::Bias { ty } => Some(ty == DataType::Bf16),
            },
            mnkb: [r.m, r.n, r.k, r.batch_count],
            layouts: [
                layout(&r.a),
                layout(&r.b),
                layout(c_layout(call, r)),
                layout(&r.d),
            ],
            align,
        };
        if !self.plans.contains_key(&key) {
            let plan = self.new_plan(call, r, align).map_err(|(what, e)| {
                DeviceError::Driver(format!(
                    "cuBLASLt plan for m={}, n={}, k={}: {what}: {:?}",
                    r.m, r.n, r.k, e.0
                ))
            })?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    fn new_plan(
        &self,
        call: &GemmCall,
        r: &Resolved,
        align: [u32; 4],
    ) -> Result<Plan, (&'static str, lt::CublasError)> {
        use lt_sys::cublasLtMatmulDescAttributes_t as D;
        use lt_sys::cublasLtMatrixLayoutAttribute_t as L;
        let compute = match call.compute {
            ComputeType::F32 => lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ComputeType::F32Pedantic => lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
        };
        let desc = lt::create_matmul_desc(compute, lt_sys::cudaDataType::CUDA_R_32F)
            .map_err(|e| ("desc", e))?;
        // Owned from here on, so an error below releases what was created.
        let mut plan = Plan {
            desc,
            layouts: [std::ptr::null_mut(); 4],
            algo: lt_sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        let op = |t: Transpose| (t == Transpose::T) as i32; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
        let epilogue = match call.epilogue {
            Epilogue::Default => lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
            Epilogue::Bias { .. } => lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        } as u32;
        // SAFETY (every block below): the handles are alive and each value has the type and size
        // cuBLASLt documents for its attribute.
        unsafe {
            let set = |attr, value: *const c_void, size| {
                lt::set_matmul_desc_attribute(desc, attr, value, size)
                    .map_err(|e| ("desc attribute", e))
            };
            set(D::CUBLASLT_MATMUL_DESC_TRANSA, ptr_to(&op(call.transa)), 4)?;
            set(D::CUBLASLT_MATMUL_DESC_TRANSB, ptr_to(&op(call.transb)), 4)?;
            set(D::CUBLASLT_MATMUL_DESC_EPILOGUE, ptr_to(&epilogue), 4)?;
            if let Epilogue::Bias { ty } = call.epilogue {
                set(
                    D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    ptr_to(&(cuda_type(ty) as i32)),
                    4,
                )?;
            }
        }
        for (slot, l) in plan
            .layouts
            .iter_mut()
            .zip([&r.a, &r.b, c_layout(call, r), &r.d])
        {
            let (rows, cols) = (l.rows as u64, l.cols as u64);
            *slot = lt::create_matrix_layout(cuda_type(l.ty), rows, cols, l.ld)
                .map_err(|e| ("layout", e))?;
            let batch = r.batch_count as i32;
            unsafe {
                let set = |attr, value: *const c_void, size| {
                    lt::set_matrix_layout_attribute(*slot, attr, value, size)
                        .map_err(|e| ("layout attribute", e))
                };
                set(L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, ptr_to(&batch), 4)?;
                set(
                    L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    ptr_to(&l.batch_stride),
                    8,
                )?;
            }
        }
        let preference = lt::create_matmul_pref().map_err(|e| ("preference", e))?;
        let workspace = WORKSPACE_BYTES as u64;
        let [a, b, c, d] = plan.layouts;
        let heuristic = unsafe {
            use lt_sys::cublasLtMatmulPreferenceAttributes_t as P;
            let set = |attr, value: *const c_void, size| {
                lt::set_matmul_pref_attribute(preference, attr, value, size)
            };
            let found = set(
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                ptr_to(&workspace),
                8,
            )
            .and_then(|()| {
                set(
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    ptr_to(&align[0]),
                    4,
                )
            })
            .and_then(|()| {
                set(
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    ptr_to(&align[1]),
                    4,
                )
            })
            .and_then(|()| {
                set(
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    ptr_to(&align[2]),
                    4,
                )
            })
            .and_then(|()| {
                set(
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                    ptr_to(&align[3]),
                    4,
                )
            })
            .and_then(|()| {
                lt::get_matmul_algo_heuristic(self.handle, desc, a, b, c, d, preference)
            });
            let _ = lt::destroy_matmul_pref(preference);
            found.map_err(|e| ("no algorithm (cublasLtMatmulAlgoGetHeuristic)", e))?
        };
        plan.algo = heuristic.algo;
        Ok(plan)
    }
}
