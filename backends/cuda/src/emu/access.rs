//! Memory accesses of a block: bounds, initialisation and race checks on every lane's load and
//! store, against the shadow state of the buffer (global) or the block's shared array.

use super::error::{EmuError, RaceKind};
use super::exec::Exec;
use super::memory::{Accessor, DeviceBuffer, Mark, MANY};
use super::value::as_i64;
use crate::kir::{Access, Buf, ParamKind, Ty};

impl<'a> Exec<'a> {
    /// The element index of each active lane, or the error for the first lane whose index is
    /// negative or past the end.
    fn element(
        &self,
        buf: Buf,
        idx: u64,
        ity: Ty,
        offset: i64,
        lane: usize,
    ) -> Result<usize, EmuError> {
        let i = as_i64(idx, ity) + offset;
        let len = self.mem(buf).len();
        if i < 0 {
            return Err(EmuError::NegativeIndex {
                at: self.at(lane),
                buffer: self.k.buf_name(buf).into(),
                index: i,
            });
        }
        if i as u64 >= len as u64 {
            return Err(EmuError::OutOfBounds {
                at: self.at(lane),
                buffer: self.k.buf_name(buf).into(),
                index: i,
                len,
            });
        }
        Ok(i as usize)
    }

    fn mem(&self, buf: Buf) -> &DeviceBuffer {
        match buf {
            Buf::Param(p) => &self.buffers[self.bind[p.0 as usize]],
            Buf::Shared(s) => &self.shared[s as usize],
        }
    }

    fn accessor(&self, buf: Buf, lane: usize) -> Accessor {
        let run = if matches!(buf, Buf::Shared(_)) {
            self.shared_run
        } else {
            self.launch_run
        };
        Accessor {
            run,
            block: self.block_linear,
            thread: lane as u32,
            epoch: self.epoch,
        }
    }

    pub(super) fn load(
        &mut self,
        buf: Buf,
        idx: &[u64],
        ity: Ty,
        offset: i64,
        out: &mut [u64],
        mask: &[bool],
    ) -> Result<(), EmuError> {
        // Outputs must be written by this launch before they are read, whatever they held.
        let output = matches!(buf, Buf::Param(p) if matches!(self.k.params[p.0 as usize].kind, ParamKind::Buffer { access: Access::Write, .. }));
        for lane in 0..self.n {
            if !mask[lane] {
                continue;
            }
            let i = self.element(buf, idx[lane], ity, offset, lane)?;
            let who = self.accessor(buf, lane);
            let mem = match buf {
                Buf::Param(p) => &mut self.buffers[self.bind[p.0 as usize]],
                Buf::Shared(s) => &mut self.shared[s as usize],
            };
            if !mem.is_init(i) || (output && !mem.written_in(i, who.run)) {
                return Err(EmuError::Uninitialised {
                    at: self.at(lane),
                    buffer: self.k.buf_name(buf).into(),
                    index: i,
                });
            }
            if mem.is_tracked() {
                if let Some((kind, other)) = mem.note_read(i, &who) {
                    return Err(self.race(buf, lane, i, kind, other));
                }
            }
            out[lane] = mem.bits(i);
        }
        Ok(())
    }

    pub(super) fn store(
        &mut self,
        buf: Buf,
        idx: &[u64],
        ity: Ty,
        offset: i64,
        vals: &[u64],
        mask: &[bool],
    ) -> Result<(), EmuError> {
        if let Buf::Param(p) = buf {
            if matches!(
                self.k.params[p.0 as usize].kind,
                ParamKind::Buffer {
                    access: Access::Read,
                    ..
                }
            ) {
                if let Some(lane) = mask.iter().position(|&m| m) {
                    return Err(EmuError::StoreToReadOnly {
                        at: self.at(lane),
                        buffer: self.k.buf_name(buf).into(),
                    });
                }
            }
        }
        for lane in 0..self.n {
            if !mask[lane] {
                continue;
            }
            let i = self.element(buf, idx[lane], ity, offset, lane)?;
            let who = self.accessor(buf, lane);
            let mem = match buf {
                Buf::Param(p) => &mut self.buffers[self.bind[p.0 as usize]],
                Buf::Shared(s) => &mut self.shared[s as usize],
            };
            if let Some((kind, other)) = mem.note_write(i, &who) {
                return Err(self.race(buf, lane, i, kind, other));
            }
            mem.set_bits(i, vals[lane]);
        }
        Ok(())
    }

    pub(super) fn check_aligned(
        &self,
        buf: Buf,
        idx: &[u64],
        ity: Ty,
        width: usize,
        mask: &[bool],
    ) -> Result<(), EmuError> {
        for lane in 0..self.n {
            let i = as_i64(idx[lane], ity);
            if mask[lane] && i.rem_euclid(width as i64) != 0 {
                return Err(EmuError::Misaligned {
                    at: self.at(lane),
                    buffer: self.k.buf_name(buf).into(),
                    index: i,
                    width,
                });
            }
        }
        Ok(())
    }

    fn race(&self, buf: Buf, lane: usize, index: usize, kind: RaceKind, other: Mark) -> EmuError {
        let block = if other.block == MANY {
            "several blocks".to_string()
        } else {
            let [x, y, z] = self.block_coords(other.block);
            format!("block ({x},{y},{z})")
        };
        let thread = if other.thread == MANY {
            "several threads".to_string()
        } else {
            let [x, y, z] = self.thread_coords(other.thread as usize);
            format!("thread ({x},{y},{z})")
        };
        EmuError::Race {
            at: self.at(lane),
            buffer: self.k.buf_name(buf).into(),
            index,
            kind,
            other: format!("{block} {thread}"),
        }
    }

    fn block_coords(&self, linear: u32) -> [u32; 3] {
        let [gx, gy, _] = self.grid;
        [linear % gx, (linear / gx) % gy, linear / (gx * gy)]
    }

    pub(super) fn thread_coords(&self, t: usize) -> [u32; 3] {
        [
            self.tid[0][t] as u32,
            self.tid[1][t] as u32,
            self.tid[2][t] as u32,
        ]
    }
}
