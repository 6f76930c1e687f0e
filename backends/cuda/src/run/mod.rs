//! Running a CUDA engine: the executor walks each graph's steps on a [`Device`].

mod cuda_device;
mod device;

pub use cuda_device::{kernel_images, CudaDevice};
pub use device::{DevArg, DevBuf, Device, DeviceError, GemmBuffers};
