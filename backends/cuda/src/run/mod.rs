//! Running a CUDA engine: the executor walks each graph's steps on a [`Device`].

mod device;

pub use device::{DevArg, DevBuf, Device, DeviceError, GemmBuffers};
