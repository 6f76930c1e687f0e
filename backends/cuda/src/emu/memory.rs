//! Device memory and its shadow state. Every element carries whether it has been written, and,
//! for memory a launch may write, which thread last wrote it and which thread(s) read it since,
//! stamped with the launch (or, for shared memory, the block run) and the barrier epoch. Races are
//! decided from those stamps alone, so they are found whatever order the emulator runs threads in.

use super::value::{bf16_bits_to_f32, f32_to_bf16_bits};
use crate::emu::error::RaceKind;
use crate::kir::Ty;

/// `Mark::block` / `Mark::thread` when more than one block / thread read the element.
pub(crate) const MANY: u32 = u32::MAX;

/// One access stamp. `run` is the launch (global memory) or the block run (shared memory) the
/// access belongs to; a stamp from another run is history and never conflicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub run: u32,
    pub block: u32,
    pub thread: u32,
    pub epoch: u32,
}

/// Who is accessing: the current run, linear block and thread ids, and barrier epoch of the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accessor {
    pub run: u32,
    pub block: u32,
    pub thread: u32,
    pub epoch: u32,
}

impl Mark {
    /// Whether an earlier access stamped `self` is unordered with respect to `who`: another block
    /// of the same launch, or another thread of the same block within the same barrier epoch.
    fn conflicts(&self, who: &Accessor) -> bool {
        self.run == who.run
            && (self.block != who.block || (self.epoch == who.epoch && self.thread != who.thread))
    }
}

/// A buffer in device memory: its elements and their shadow state.
#[derive(Clone, Debug)]
pub struct DeviceBuffer {
    elem: Ty,
    bytes: Vec<u8>,
    init: Vec<bool>,
    /// Last write of each element; empty until a launch binds the buffer for writing.
    writes: Vec<Mark>,
    /// Reads since the last write, merged (`MANY`); empty until tracked like `writes`.
    reads: Vec<Mark>,
}

impl DeviceBuffer {
    /// `len` uninitialised elements: reading one before it is written is an error.
    pub fn new(elem: Ty, len: usize) -> Self {
        DeviceBuffer {
            elem,
            bytes: vec![0; len * elem.size()],
            init: vec![false; len],
            writes: Vec::new(),
            reads: Vec::new(),
        }
    }

    /// F32 values, or Bf16 rounded to nearest even (integer types convert as `Cast` does).
    pub fn from_f32(elem: Ty, v: &[f32]) -> Self {
        let mut b = DeviceBuffer::new(elem, v.len());
        for (i, &x) in v.iter().enumerate() {
            b.set_f32(i, x);
        }
        b
    }

    /// I32/U32/I64/Bool values (wrapping into the element type; float types convert).
    pub fn from_i64(elem: Ty, v: &[i64]) -> Self {
        let mut b = DeviceBuffer::new(elem, v.len());
        for (i, &x) in v.iter().enumerate() {
            b.set_i64(i, x);
        }
        b
    }

    /// Writes element `i` from the host (as a copy to the device would: it becomes initialised,
    /// and no launch's race stamps change). Converts as [`DeviceBuffer::from_f32`]. Panics if
    /// `i` is out of bounds.
    pub fn set_f32(&mut self, i: usize, x: f32) {
        let bits = match self.elem {
            Ty::F32 => x.to_bits() as u64,
            Ty::Bf16 => f32_to_bf16_bits(x) as u64,
            Ty::Bool => (x != 0.0) as u64,
            Ty::I32 => (x as i32) as u32 as u64,
            Ty::U32 => (x as u32) as u64,
            Ty::I64 => (x as i64) as u64,
        };
        self.set_bits(i, bits);
    }

    /// Writes element `i` from the host, converting as [`DeviceBuffer::from_i64`].
    pub fn set_i64(&mut self, i: usize, x: i64) {
        let bits = match self.elem {
            Ty::Bool => (x != 0) as u64,
            Ty::I32 | Ty::U32 => x as u32 as u64,
            Ty::I64 => x as u64,
            Ty::F32 => (x as f32).to_bits() as u64,
            Ty::Bf16 => f32_to_bf16_bits(x as f32) as u64,
        };
        self.set_bits(i, bits);
    }

    /// The values as f32 (ints convert); uninitialised elements read as NaN.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.len())
            .map(|i| {
                if !self.init[i] {
                    return f32::NAN;
                }
                let bits = self.bits(i);
                match self.elem {
                    Ty::F32 => f32::from_bits(bits as u32),
                    Ty::Bf16 => bf16_bits_to_f32(bits as u16),
                    Ty::Bool | Ty::U32 | Ty::I64 => bits as i64 as f32,
                    Ty::I32 => bits as u32 as i32 as f32,
                }
            })
            .collect()
    }

    /// The values as i64 (floats truncate); uninitialised elements read as 0.
    pub fn to_i64(&self) -> Vec<i64> {
        (0..self.len())
            .map(|i| {
                if !self.init[i] {
                    return 0;
                }
                let bits = self.bits(i);
                match self.elem {
                    Ty::Bool | Ty::U32 | Ty::I64 => bits as i64,
                    Ty::I32 => bits as u32 as i32 as i64,
                    Ty::F32 => f32::from_bits(bits as u32) as i64,
                    Ty::Bf16 => bf16_bits_to_f32(bits as u16) as i64,
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.init.len()
    }

    pub fn is_empty(&self) -> bool {
        self.init.is_empty()
    }

    pub fn elem(&self) -> Ty {
        self.elem
    }

    /// Which elements have been written (or initialised from host data).
    pub fn written(&self) -> Vec<bool> {
        self.init.clone()
    }

    /// The raw element bytes, little-endian.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn is_init(&self, i: usize) -> bool {
        self.init[i]
    }

    /// Element `i`'s bits, zero-extended (whether initialised or not).
    #[inline]
    pub fn bits(&self, i: usize) -> u64 {
        let b = &self.bytes;
        match self.elem.size() {
            1 => b[i] as u64,
            2 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u64,
            4 => u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes")) as u64,
            _ => u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes")),
        }
    }

    /// Writes element `i`'s bits (truncated to the element size) from the host; it becomes
    /// initialised.
    #[inline]
    pub fn set_bits(&mut self, i: usize, bits: u64) {
        let b = &mut self.bytes;
        match self.elem.size() {
            1 => b[i] = bits as u8,
            2 => b[2 * i..2 * i + 2].copy_from_slice(&(bits as u16).to_le_bytes()),
            4 => b[4 * i..4 * i + 4].copy_from_slice(&(bits as u32).to_le_bytes()),
            _ => b[8 * i..8 * i + 8].copy_from_slice(&bits.to_le_bytes()),
        }
        self.init[i] = true;
    }

    /// Starts race tracking (a launch binds the buffer for writing). Stamps of earlier runs stay:
    /// they never conflict.
    pub(crate) fn track(&mut self) {
        if self.writes.len() != self.len() {
            self.writes = vec![Mark::default(); self.len()];
            self.reads = vec![Mark::default(); self.len()];
        }
    }

    pub(crate) fn is_tracked(&self) -> bool {
        !self.writes.is_empty() || self.is_empty()
    }

    /// Forgets every element's contents (shared memory at the start of a block).
    pub(crate) fn uninitialise(&mut self) {
        self.init.fill(false);
    }

    /// Whether element `i` was written in run `run` (outputs must be written by their launch).
    pub(crate) fn written_in(&self, i: usize, run: u32) -> bool {
        self.writes.get(i).is_some_and(|m| m.run == run)
    }

    /// Records a read of tracked element `i`; returns the race it completes, with the other
    /// access's stamp.
    pub(crate) fn note_read(&mut self, i: usize, who: &Accessor) -> Option<(RaceKind, Mark)> {
        let w = self.writes[i];
        if w.conflicts(who) {
            return Some((RaceKind::WriteRead, w));
        }
        let r = &mut self.reads[i];
        if r.run != who.run {
            *r = Mark {
                run: who.run,
                block: who.block,
                thread: who.thread,
                epoch: who.epoch,
            };
        } else if r.block != who.block {
            r.block = MANY;
        } else if r.epoch != who.epoch {
            // The earlier reads are ordered before this one by a barrier of the same block.
            r.thread = who.thread;
            r.epoch = who.epoch;
        } else if r.thread != who.thread {
            r.thread = MANY;
        }
        None
    }

    /// Records a write of tracked element `i` (the value is stored separately); returns the race
    /// it completes.
    pub(crate) fn note_write(&mut self, i: usize, who: &Accessor) -> Option<(RaceKind, Mark)> {
        let w = self.writes[i];
        if w.conflicts(who) {
            return Some((RaceKind::WriteWrite, w));
        }
        let r = self.reads[i];
        if r.conflicts(who) {
            return Some((RaceKind::ReadWrite, r));
        }
        self.writes[i] = Mark {
            run: who.run,
            block: who.block,
            thread: who.thread,
            epoch: who.epoch,
        };
        None
    }
}
