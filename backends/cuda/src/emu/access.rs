//! Memory accesses of a block: bounds, initialisation and race checks on every lane's load and
//! store, against the shadow state of the buffer (global) or the block's shared array.

use super::error::{EmuError, RaceKind};
use super::exec::Exec;
use super::memory::{Accessor, DeviceBuffer, Mark, MANY};
use super::value::as_i64;
use crate::kir::{Access, Buf, ParamKind, Ty};

/// Why one lane's access failed; turned into an [`EmuError`] once the buffer is released.
enum Denied {
    Negative(i64),
    OutOfBounds(i64, usize),
    Uninitialised(usize),
    Race(usize, RaceKind, Mark),
}

/// The element lane bits `idx` (of type `ity`) plus `offset` address in a buffer of `len`.
#[inline]
fn element(idx: u64, ity: Ty, offset: i64, len: usize) -> Result<usize, Denied> {
    let i = as_i64(idx, ity).saturating_add(offset);
    if i < 0 {
        Err(Denied::Negative(i))
    } else if i as u64 >= len as u64 {
        Err(Denied::OutOfBounds(i, len))
    } else {
        Ok(i as usize)
    }
}

impl<'a> Exec<'a> {
    /// The memory `buf` names and the stamp its accesses carry (thread left to the caller).
    fn resolve(&mut self, buf: Buf) -> (&mut DeviceBuffer, Accessor) {
        let (mem, run) = match buf {
            Buf::Param(p) => (&mut self.buffers[self.bind[p.0 as usize]], self.launch_run),
            Buf::Shared(s) => (&mut self.shared[s as usize], self.shared_run),
        };
        (
            mem,
            Accessor {
                run,
                block: self.block_linear,
                thread: 0,
                epoch: self.epoch,
            },
        )
    }

    fn denied(&self, buf: Buf, lane: usize, why: Denied) -> EmuError {
        let buffer = self.k.buf_name(buf).to_string();
        match why {
            Denied::Negative(index) => EmuError::NegativeIndex {
                at: self.at(lane),
                buffer,
                index,
            },
            Denied::OutOfBounds(index, len) => EmuError::OutOfBounds {
                at: self.at(lane),
                buffer,
                index,
                len,
            },
            Denied::Uninitialised(index) => EmuError::Uninitialised {
                at: self.at(lane),
                buffer,
                index,
            },
            Denied::Race(index, kind, other) => self.race(buf, lane, index, kind, other),
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
        let n = self.n;
        let (mem, mut who) = self.resolve(buf);
        let (len, tracked) = (mem.len(), mem.is_tracked());
        let mut denied = None;
        for lane in 0..n {
            if !mask[lane] {
                continue;
            }
            let i = match element(idx[lane], ity, offset, len) {
                Ok(i) => i,
                Err(why) => {
                    denied = Some((lane, why));
                    break;
                }
            };
            if !mem.is_init(i) || (output && !mem.written_in(i, who.run)) {
                denied = Some((lane, Denied::Uninitialised(i)));
                break;
            }
            if tracked {
                who.thread = lane as u32;
                if let Some((kind, other)) = mem.note_read(i, &who) {
                    denied = Some((lane, Denied::Race(i, kind, other)));
                    break;
                }
            }
            out[lane] = mem.bits(i);
        }
        match denied {
            Some((lane, why)) => Err(self.denied(buf, lane, why)),
            None => Ok(()),
        }
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
            let kind = &self.k.params[p.0 as usize].kind;
            if matches!(
                kind,
                ParamKind::Buffer {
                    access: Access::Read,
                    ..
                }
            ) {
                if let Some(lane) = mask.iter().position(|&m| m) {
                    let buffer = self.k.buf_name(buf).into();
                    return Err(EmuError::StoreToReadOnly {
                        at: self.at(lane),
                        buffer,
                    });
                }
            }
        }
        let n = self.n;
        let (mem, mut who) = self.resolve(buf);
        let len = mem.len();
        let mut denied = None;
        for lane in 0..n {
            if !mask[lane] {
                continue;
            }
            let i = match element(idx[lane], ity, offset, len) {
                Ok(i) => i,
                Err(why) => {
                    denied = Some((lane, why));
                    break;
                }
            };
            who.thread = lane as u32;
            if let Some((kind, other)) = mem.note_write(i, &who) {
                denied = Some((lane, Denied::Race(i, kind, other)));
                break;
            }
            mem.set_bits(i, vals[lane]);
        }
        match denied {
            Some((lane, why)) => Err(self.denied(buf, lane, why)),
            None => Ok(()),
        }
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
