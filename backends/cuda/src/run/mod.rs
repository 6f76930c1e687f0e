//! Running a CUDA engine: [`Program`] loads an engine's `cuda/` section onto a [`Device`] (the
//! emulator, or a GPU), and runs each graph's steps there (`exec.rs`) over the KV caches of a
//! sequence ([`KvStore`]), kept on the device.

mod cuda_device;
mod device;
mod emu_device;
mod exec;
mod limits;
mod program;
mod validate;

pub use cuda_device::{kernel_images, CudaDevice, KernelImage};
pub use device::{DevArg, DevBuf, Device, DeviceError, GemmBuffers};
pub use emu_device::EmuDevice;
pub use exec::RunOutputs;
pub use limits::{measure as measure_limits, DeviceLimits};
pub use program::{KvStore, Program, SharedDevice};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path} {message}")]
    File { path: String, message: String },
    #[error("input `{name}` {message}")]
    Input { name: String, message: String },
    #[error("cache `{name}` {message}")]
    Cache { name: String, message: String },
    #[error("graph `{graph}`, node %{node} ({op}): {message}")]
    Step {
        graph: String,
        node: usize,
        op: String,
        message: String,
    },
    #[error("{instance}: {message}")]
    Launch { instance: String, message: String },
    #[error("output `{name}`: {message}")]
    Output { name: String, message: String },
    #[error("context of {needed} positions exceeds the KV cache's {capacity} (--max-context)")]
    ContextOverflow { needed: usize, capacity: usize },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("{0}")]
    Context(String),
}
