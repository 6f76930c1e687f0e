//! What a device must do to run an engine's plan: hold buffers, copy bytes in and out, launch a
//! kernel of the engine's module and make a cuBLASLt call. Two devices implement it: the emulator
//! (`EmuDevice`, every check on) and a GPU through cudarc (`cuda_device`). The executor
//! (`exec.rs`) is written once against this trait, so what runs on the emulator in CI is the very
//! sequence of launches and calls a GPU runs.

use crate::gemm::GemmCall;
use crate::kir::{Kernel, Lit, Ty};
use crate::templates::Sizes;

/// A buffer on a device, as the device numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevBuf(pub usize);

/// A launch argument, in the order of the kernel's parameters.
#[derive(Clone, Debug)]
pub enum DevArg {
    Buffer(DevBuf),
    Scalar(Lit),
}

/// The buffers of one cuBLASLt call (see [`GemmCall`]): `c` only when beta ≠ 0, `bias` only with
/// the bias epilogue.
#[derive(Clone, Copy, Debug)]
pub struct GemmBuffers {
    pub a: DevBuf,
    pub b: DevBuf,
    pub c: Option<DevBuf>,
    pub bias: Option<DevBuf>,
    pub d: DevBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A check of the emulator failed: treated as a GPU crash.
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("out of device memory: {wanted} bytes requested, {free} free of {total}")]
    OutOfMemory {
        wanted: usize,
        free: usize,
        total: usize,
    },
    #[error("{0}")]
    Driver(String),
    #[error("{0}")]
    Unsupported(String),
}

pub trait Device {
    /// "emu", "cuda:0 (NVIDIA H200, sm_90)".
    fn describe(&self) -> String;
    /// `len` elements of `elem`, uninitialised (the emulator reports a read before a write).
    fn alloc(&mut self, elem: Ty, len: usize) -> Result<DevBuf, DeviceError>;
    fn free(&mut self, buf: DevBuf);
    /// Copies `bytes` (little-endian elements of the buffer's type) into `buf` from element `at`.
    fn write(&mut self, buf: DevBuf, at: usize, bytes: &[u8]) -> Result<(), DeviceError>;
    /// `len` elements of the buffer from element `at`, as little-endian bytes.
    fn read(&mut self, buf: DevBuf, at: usize, len: usize) -> Result<Vec<u8>, DeviceError>;
    /// Copies the first `len` elements of `src` into `dst`, on the device.
    fn copy(&mut self, src: DevBuf, dst: DevBuf, len: usize) -> Result<(), DeviceError>;
    /// Launches `kernel` (one of the module's: the GPU finds it by name) with `args`.
    fn launch(&mut self, kernel: &Kernel, args: &[DevArg]) -> Result<(), DeviceError>;
    /// `call` at `sizes` on `bufs`.
    fn gemm(
        &mut self,
        call: &GemmCall,
        sizes: &Sizes,
        bufs: GemmBuffers,
    ) -> Result<(), DeviceError>;
    /// Waits for queued work (a GPU's stream); errors of asynchronous work surface here.
    fn synchronize(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Free and total device memory in bytes, where the device has a limit (a GPU).
    fn memory(&self) -> Option<(usize, usize)> {
        None
    }
    /// Whether wall-clock time on this device says anything about a GPU's (not the emulator's).
    fn is_timed(&self) -> bool {
        true
    }
}
