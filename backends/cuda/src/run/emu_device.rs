//! The emulator as a [`Device`]: kernels run on the KIR emulator with every check on and GEMMs
//! through `gemm::emulate`, which reads the cuBLASLt call's fields literally. A check that fails
//! is an error of the run, as a GPU fault would be.

use super::device::{DevArg, DevBuf, Device, DeviceError, GemmBuffers};
use crate::emu::{Arg, BufferId, DeviceBuffer, Emulator};
use crate::gemm::{emulate, GemmCall};
use crate::kir::{Kernel, Ty};
use crate::templates::Sizes;

#[derive(Default)]
pub struct EmuDevice {
    emu: Emulator,
    /// Thread-statements executed so far (the emulator's measure of work).
    pub statements: u64,
    pub launches: u64,
    pub gemms: u64,
}

impl EmuDevice {
    pub fn new() -> EmuDevice {
        EmuDevice::default()
    }
}

fn id(b: DevBuf) -> BufferId {
    BufferId(b.0)
}

impl Device for EmuDevice {
    fn describe(&self) -> String {
        "emu (kernel-IR emulator, every check on)".into()
    }

    fn alloc(&mut self, elem: Ty, len: usize) -> Result<DevBuf, DeviceError> {
        Ok(DevBuf(self.emu.alloc(DeviceBuffer::new(elem, len)).0))
    }

    fn free(&mut self, buf: DevBuf) {
        self.emu.free(id(buf));
    }

    fn write(&mut self, buf: DevBuf, at: usize, bytes: &[u8]) -> Result<(), DeviceError> {
        let b = self.emu.buffer_mut(id(buf));
        let size = b.elem().size();
        if !bytes.len().is_multiple_of(size) || at + bytes.len() / size > b.len() {
            return Err(DeviceError::Emulator(format!(
                "a copy of {} bytes at element {at} into a buffer of {} × {:?}",
                bytes.len(),
                b.len(),
                b.elem()
            )));
        }
        for (i, chunk) in bytes.chunks_exact(size).enumerate() {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(chunk);
            b.set_bits(at + i, u64::from_le_bytes(le));
        }
        Ok(())
    }

    fn read(&mut self, buf: DevBuf, at: usize, len: usize) -> Result<Vec<u8>, DeviceError> {
        let b = self.emu.buffer(id(buf));
        if at + len > b.len() {
            return Err(DeviceError::Emulator(format!(
                "a read of {len} elements at {at} from a buffer of {}",
                b.len()
            )));
        }
        if let Some(i) = (at..at + len).find(|&i| !b.written()[i]) {
            return Err(DeviceError::Emulator(format!(
                "element {i} is copied to the host but was never written"
            )));
        }
        let size = b.elem().size();
        Ok(b.bytes()[at * size..(at + len) * size].to_vec())
    }

    fn copy(&mut self, src: DevBuf, dst: DevBuf, len: usize) -> Result<(), DeviceError> {
        let bytes = self.read(src, 0, len)?;
        self.write(dst, 0, &bytes)
    }

    fn is_timed(&self) -> bool {
        false
    }

    fn launch(&mut self, kernel: &Kernel, args: &[DevArg]) -> Result<(), DeviceError> {
        let args: Vec<Arg> = args
            .iter()
            .map(|a| match a {
                DevArg::Buffer(b) => Arg::Buffer(id(*b)),
                DevArg::Scalar(l) => Arg::Scalar(*l),
            })
            .collect();
        let stats = self
            .emu
            .launch(kernel, &args)
            .map_err(|e| DeviceError::Emulator(e.to_string()))?;
        self.statements += stats.statements;
        self.launches += 1;
        Ok(())
    }

    fn gemm(
        &mut self,
        call: &GemmCall,
        sizes: &Sizes,
        bufs: GemmBuffers,
    ) -> Result<(), DeviceError> {
        // `emulate` reads A, B, C and bias while writing D: D gets its own copy for the call.
        let mut d = self.emu.buffer(id(bufs.d)).clone();
        let (a, b) = (self.emu.buffer(id(bufs.a)), self.emu.buffer(id(bufs.b)));
        let c = bufs.c.map(|c| self.emu.buffer(id(c)));
        let bias = bufs.bias.map(|x| self.emu.buffer(id(x)));
        emulate(call, sizes, a, b, c, bias, &mut d)
            .map_err(|e| DeviceError::Emulator(format!("cuBLASLt call: {e}")))?;
        *self.emu.buffer_mut(id(bufs.d)) = d;
        self.gemms += 1;
        Ok(())
    }
}
