//! Loading a CUDA engine onto a device (`vl3c_cuda::run`): what is refused at load, with a line
//! that says what to do, rather than failing mid-answer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vl3c_cuda::gemm::GemmCall;
use vl3c_cuda::kir::{Kernel, Ty};
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::run::{DevArg, DevBuf, Device, DeviceError, EmuDevice, GemmBuffers, Program};
use vl3c_cuda::templates::Sizes;
use vl3c_cuda::{CudaTarget, CUDA_DIR};
use vl3c_driver::{compile, ModelSource};
use vl3c_frontends::Checkpoint;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn compile_engine(model: &Path, config_only: bool, out: &Path) {
    let mut target = CudaTarget::new(vec![Sm::Sm90]);
    let checkpoint = (!config_only).then(|| Checkpoint::open(model).unwrap());
    let source = match &checkpoint {
        Some(c) => ModelSource::checkpoint(model, c),
        None => ModelSource::config_only(model).unwrap(),
    };
    compile(&source, &mut target, out, &mut |_, _, _| {}).unwrap();
}

/// The emulator, reporting the free memory of a small GPU (which the test sets).
struct SmallGpu(EmuDevice, Arc<AtomicUsize>);

impl Device for SmallGpu {
    fn describe(&self) -> String {
        "a small GPU".into()
    }
    fn alloc(&mut self, elem: Ty, len: usize) -> Result<DevBuf, DeviceError> {
        self.0.alloc(elem, len)
    }
    fn free(&mut self, buf: DevBuf) {
        self.0.free(buf)
    }
    fn write(&mut self, buf: DevBuf, at: usize, bytes: &[u8]) -> Result<(), DeviceError> {
        self.0.write(buf, at, bytes)
    }
    fn read(&mut self, buf: DevBuf, at: usize, len: usize) -> Result<Vec<u8>, DeviceError> {
        self.0.read(buf, at, len)
    }
    fn copy(&mut self, src: DevBuf, dst: DevBuf, len: usize) -> Result<(), DeviceError> {
        self.0.copy(src, dst, len)
    }
    fn launch(&mut self, kernel: &Kernel, args: &[DevArg]) -> Result<(), DeviceError> {
        self.0.launch(kernel, args)
    }
    fn gemm(
        &mut self,
        call: &GemmCall,
        sizes: &Sizes,
        bufs: GemmBuffers,
    ) -> Result<(), DeviceError> {
        self.0.gemm(call, sizes, bufs)
    }
    fn memory(&self) -> Option<(usize, usize)> {
        Some((self.1.load(Ordering::Relaxed), 80 << 30))
    }
}

#[test]
fn a_kv_cache_larger_than_the_free_memory_is_refused_at_load() {
    let out = tempfile::tempdir().unwrap();
    compile_engine(&fixture("image_tied_f32"), false, out.path());
    let graphs =
        vl3c_ir::parse_graphs(&std::fs::read_to_string(out.path().join("graphs.vir")).unwrap())
            .unwrap();
    let decode = graphs.iter().find(|g| g.name == "decode").unwrap();
    let per_position = Program::kv_bytes(decode, 1);
    assert!(per_position > 0);
    assert_eq!(Program::kv_bytes(decode, 1000), 1000 * per_position);

    let free = Arc::new(AtomicUsize::new(1000));
    let err = Program::load(
        &out.path().join(CUDA_DIR),
        Box::new(SmallGpu(EmuDevice::new(), free.clone())),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("the engine's weights need"), "{err}");

    free.store(1 << 30, Ordering::Relaxed);
    let program = Program::load(
        &out.path().join(CUDA_DIR),
        Box::new(SmallGpu(EmuDevice::new(), free.clone())),
    )
    .unwrap();
    free.store(100 * per_position, Ordering::Relaxed);
    program.check_kv_fits(decode, 100).unwrap();
    let err = program.check_kv_fits(decode, 101).unwrap_err().to_string();
    assert!(
        err.contains("--max-context 101") && err.contains("lower --max-context"),
        "{err}"
    );
}

#[test]
fn a_config_only_engine_is_refused_with_the_reason() {
    let out = tempfile::tempdir().unwrap();
    compile_engine(&fixture("image_tied_f32"), true, out.path());
    let err = Program::load(&out.path().join(CUDA_DIR), Box::new(EmuDevice::new()))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("--config-only"), "{err}");
}
