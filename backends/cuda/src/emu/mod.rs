//! The KIR emulator: executes kernels exactly on the CPU, block after block, with every thread of
//! a block in lockstep (as tinygrad's `ops_python.py`), and checks what a GPU would let pass:
//! out-of-bounds and negative indices, reads of never-written memory, races within a barrier
//! interval or across blocks, divergent barriers and warp ops, i32 overflow, misaligned vector
//! accesses, and outputs the launch left unwritten.

mod access;
mod error;
mod exec;
mod memory;
mod value;
mod warp;

pub use error::{At, BlockAt, EmuError, RaceKind};
pub use memory::DeviceBuffer;
pub(crate) use value::promote;
pub use value::{bf16_bits_to_f32, f32_to_bf16_bits};
pub use warp::{a_fragment, b_fragment, c_fragment};

use crate::kir::{Access, Kernel, Lit, ParamKind};
use exec::Exec;
use value::as_i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferId(pub usize);

/// A launch argument, in the order of the kernel's parameters.
#[derive(Clone, Debug)]
pub enum Arg {
    Buffer(BufferId),
    Scalar(Lit),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchStats {
    pub blocks: u64,
    pub threads: u64,
    /// Thread-statements executed (a statement run by 32 active lanes counts 32).
    pub statements: u64,
}

/// Hopper's limits a launch must respect.
const MAX_THREADS_PER_BLOCK: u32 = 1024;
const MAX_SHARED_BYTES: usize = 227 * 1024;
const MAX_GRID: [i64; 3] = [(1 << 31) - 1, 65535, 65535];

/// Device memory and the launches that run on it.
#[derive(Default)]
pub struct Emulator {
    buffers: Vec<DeviceBuffer>,
    /// The last stamp handed out (to a launch, or to one block's shared memory).
    clock: u32,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("buffers", &self.buffers.len())
            .field("clock", &self.clock)
            .finish()
    }
}

impl Emulator {
    /// An emulator with every check on.
    pub fn new() -> Self {
        Emulator::default()
    }

    pub fn alloc(&mut self, b: DeviceBuffer) -> BufferId {
        self.buffers.push(b);
        BufferId(self.buffers.len() - 1)
    }

    /// Panics on an id this emulator did not hand out.
    pub fn buffer(&self, id: BufferId) -> &DeviceBuffer {
        &self.buffers[id.0]
    }

    pub fn buffer_mut(&mut self, id: BufferId) -> &mut DeviceBuffer {
        &mut self.buffers[id.0]
    }

    /// Releases the buffer's memory; the id must not be used again (a later use sees an empty
    /// buffer, so any access is out of bounds).
    pub fn free(&mut self, id: BufferId) {
        let elem = self.buffers[id.0].elem();
        self.buffers[id.0] = DeviceBuffer::new(elem, 0);
    }

    fn tick(&mut self) -> u32 {
        // Wrapping: stamps only need to differ from those of recent runs.
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    /// Runs `k` over its whole grid. On an error the buffers keep what the launch wrote so far.
    pub fn launch(&mut self, k: &Kernel, args: &[Arg]) -> Result<LaunchStats, EmuError> {
        let (scalars, bind) = self.bind(k, args)?;
        let bad_launch = |reason: String| EmuError::BadLaunch {
            kernel: k.name.clone(),
            reason,
        };
        let threads = k.threads_per_block();
        if threads == 0 || threads > MAX_THREADS_PER_BLOCK {
            return Err(bad_launch(format!("{threads} threads per block")));
        }
        for (p, param) in k.params.iter().enumerate() {
            if let ParamKind::Buffer {
                access: Access::Write | Access::ReadWrite,
                ..
            } = param.kind
            {
                self.buffers[bind[p]].track();
            }
        }
        let launch_run = self.tick();
        let mut ex = Exec::new(k, scalars, bind, &mut self.buffers, launch_run);

        // Launch geometry: formulas over the scalar arguments, evaluated as one thread would.
        let mut grid = [0u32; 3];
        ex.phase = "grid";
        for (axis, g) in k.grid.iter().enumerate() {
            let (v, ty) = ex.eval(g, &[true])?;
            let n = as_i64(v[0], ty);
            if !(1..=MAX_GRID[axis]).contains(&n) {
                return Err(bad_launch(format!("grid dimension {axis} is {n}")));
            }
            grid[axis] = n as u32;
        }
        ex.phase = "shared length";
        let mut shared_bytes = 0usize;
        for s in &k.shared {
            let (v, ty) = ex.eval(&s.len, &[true])?;
            let len = as_i64(v[0], ty);
            if len < 0 {
                return Err(bad_launch(format!(
                    "shared array {} has length {len}",
                    s.name
                )));
            }
            shared_bytes =
                shared_bytes.saturating_add((len as usize).saturating_mul(s.elem.size()));
            if shared_bytes > MAX_SHARED_BYTES {
                return Err(bad_launch(format!("{shared_bytes} bytes of shared memory")));
            }
            let mut buf = DeviceBuffer::new(s.elem, len as usize);
            buf.track();
            ex.shared.push(buf);
        }
        ex.grid = grid;
        ex.set_threads(k.block);

        let blocks = grid.iter().map(|&g| g as u64).product::<u64>();
        let mut clock = launch_run;
        for z in 0..grid[2] {
            for y in 0..grid[1] {
                for x in 0..grid[0] {
                    clock = clock.wrapping_add(1);
                    ex.shared_run = clock;
                    ex.block_idx = [x, y, z];
                    ex.block_linear = x + grid[0] * (y + grid[1] * z);
                    ex.run_block()?;
                }
            }
        }
        let statements = ex.statements;
        let bind = std::mem::take(&mut ex.bind);
        drop(ex);
        self.clock = clock;
        self.check_outputs(k, &bind, launch_run)?;
        Ok(LaunchStats {
            blocks,
            threads: blocks * threads as u64,
            statements,
        })
    }

    /// Each parameter's scalar bits and bound buffer index, or why the arguments do not fit.
    fn bind(&self, k: &Kernel, args: &[Arg]) -> Result<(Vec<u64>, Vec<usize>), EmuError> {
        let bad = |reason: String| EmuError::BadArguments {
            kernel: k.name.clone(),
            reason,
        };
        if args.len() != k.params.len() {
            return Err(bad(format!(
                "{} arguments for {} parameters",
                args.len(),
                k.params.len()
            )));
        }
        let mut scalars = vec![0; args.len()];
        let mut bind = vec![usize::MAX; args.len()];
        for (p, (param, arg)) in k.params.iter().zip(args).enumerate() {
            match (&param.kind, arg) {
                (ParamKind::Buffer { elem, .. }, Arg::Buffer(id)) => {
                    let b = self
                        .buffers
                        .get(id.0)
                        .ok_or_else(|| bad(format!("{}: no buffer {}", param.name, id.0)))?;
                    if b.elem() != *elem {
                        return Err(bad(format!(
                            "{}: a {:?} buffer where {:?} is expected",
                            param.name,
                            b.elem(),
                            elem
                        )));
                    }
                    bind[p] = id.0;
                }
                (ParamKind::Scalar(ty), Arg::Scalar(lit)) => {
                    if lit.ty() != *ty {
                        return Err(bad(format!(
                            "{}: a {:?} scalar where {:?} is expected",
                            param.name,
                            lit.ty(),
                            ty
                        )));
                    }
                    scalars[p] = match *lit {
                        Lit::Bool(b) => b as u64,
                        Lit::I32(v) => v as u32 as u64,
                        Lit::U32(v) => v as u64,
                        Lit::I64(v) => v as u64,
                        Lit::F32(v) => v.to_bits() as u64,
                    };
                }
                (ParamKind::Buffer { .. }, Arg::Scalar(_)) => {
                    return Err(bad(format!(
                        "{}: a scalar where a buffer is expected",
                        param.name
                    )))
                }
                (ParamKind::Scalar(_), Arg::Buffer(_)) => {
                    return Err(bad(format!(
                        "{}: a buffer where a scalar is expected",
                        param.name
                    )))
                }
            }
        }
        Ok((scalars, bind))
    }

    /// Every element of every `Write` parameter must have been written by this launch.
    fn check_outputs(&self, k: &Kernel, bind: &[usize], run: u32) -> Result<(), EmuError> {
        for (p, param) in k.params.iter().enumerate() {
            if let ParamKind::Buffer {
                access: Access::Write,
                ..
            } = param.kind
            {
                let b = &self.buffers[bind[p]];
                let mut unwritten = (0..b.len()).filter(|&i| !b.written_in(i, run));
                if let Some(index) = unwritten.next() {
                    return Err(EmuError::OutputNotWritten {
                        kernel: k.name.clone(),
                        buffer: param.name.clone(),
                        index,
                        unwritten: 1 + unwritten.count(),
                    });
                }
            }
        }
        Ok(())
    }
}
