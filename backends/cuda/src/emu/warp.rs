//! Warp-wide operations: shuffles and the m16n8k16 bf16 tensor-core mma. A warp is 32 consecutive
//! linear thread ids, and every lane of a warp taking part must be active (the printer passes the
//! full mask `0xffffffff`).

use super::error::EmuError;
use super::exec::Exec;
use super::value::{as_i64, bf16_bits_to_f32};
use crate::kir::{Expr, Shfl, Ty, VarId};

/// Where element `e` (0..8) of a lane's A fragment sits in the 16×16 row-major A: registers
/// `a0..a3` hold elements (0,1), (2,3), (4,5), (6,7), the low half first (PTX ISA,
/// "Matrix Fragments for mma.m16n8k16", .bf16).
pub fn a_fragment(lane: usize, e: usize) -> (usize, usize) {
    let (group, in_group) = (lane >> 2, lane % 4);
    let (r, half) = (e / 2, e % 2);
    (group + 8 * (r & 1), in_group * 2 + half + 8 * (r >> 1))
}

/// Where element `e` (0..4) of a lane's B fragment sits in the 16×8 B, as (k, n).
pub fn b_fragment(lane: usize, e: usize) -> (usize, usize) {
    let (group, in_group) = (lane >> 2, lane % 4);
    (in_group * 2 + e % 2 + 8 * (e / 2), group)
}

/// Where element `e` (0..4) of a lane's C/D fragment sits in the 16×8 C, as (row, col).
pub fn c_fragment(lane: usize, e: usize) -> (usize, usize) {
    let (group, in_group) = (lane >> 2, lane % 4);
    (group + 8 * (e / 2), in_group * 2 + e % 2)
}

impl<'a> Exec<'a> {
    /// Fails unless every warp with an active lane has all 32 lanes active.
    fn check_warps(&self, mask: &[bool]) -> Result<(), EmuError> {
        for (w, lanes) in mask.chunks(32).enumerate() {
            let active = lanes.iter().filter(|&&m| m).count() as u32;
            if active > 0 && active != 32 {
                return Err(EmuError::DivergentWarpOp {
                    at: self.block_at(),
                    warp: w as u32,
                    active,
                });
            }
        }
        Ok(())
    }

    pub(super) fn shfl(
        &mut self,
        dst: VarId,
        value: &'a Expr,
        mode: &'a Shfl,
        mask: &[bool],
    ) -> Result<(), EmuError> {
        let v = self.eval_as(value, mask, self.k.var_ty(dst))?;
        let src = match mode {
            Shfl::Idx(e) => Some(self.eval(e, mask)?),
            _ => None,
        };
        let r = self.check_warps(mask);
        if r.is_ok() {
            let n = self.n;
            let reg = self.regs_mut(dst);
            for lane in 0..n {
                if !mask[lane] {
                    continue;
                }
                let base = lane & !31;
                let own = lane % 32;
                let from = match mode {
                    // Out of the warp, `shfl.bfly`/`shfl.down` return the lane's own value.
                    Shfl::Xor(m) => own ^ *m as usize,
                    Shfl::Down(d) => own + *d as usize,
                    Shfl::Idx(_) => {
                        let (s, sty) = src.as_ref().expect("evaluated above");
                        (as_i64(s[lane], *sty) & 31) as usize
                    }
                };
                reg[lane] = if from < 32 { v[base + from] } else { v[lane] };
            }
        }
        if let Some((s, _)) = src {
            self.give(s);
        }
        self.give(v);
        r
    }

    pub(super) fn mma(
        &mut self,
        d: &[VarId; 4],
        a: &'a [Expr; 4],
        b: &'a [Expr; 2],
        c: &'a [Expr; 4],
        mask: &[bool],
    ) -> Result<(), EmuError> {
        let mut regs: Vec<Vec<u64>> = Vec::with_capacity(10);
        for e in a.iter().chain(b) {
            regs.push(self.eval_as(e, mask, Ty::U32)?);
        }
        for e in c {
            regs.push(self.eval_as(e, mask, Ty::F32)?);
        }
        let r = self.check_warps(mask);
        let mut out = [self.take(), self.take(), self.take(), self.take()];
        if r.is_ok() {
            for warp in (0..self.n).step_by(32) {
                if !mask[warp] {
                    continue;
                }
                let mut am = [[0f32; 16]; 16];
                let mut bm = [[0f32; 8]; 16];
                let mut cm = [[0f32; 8]; 16];
                for lane in 0..32 {
                    let t = warp + lane;
                    for e in 0..8 {
                        let (row, col) = a_fragment(lane, e);
                        am[row][col] = bf16_bits_to_f32((regs[e / 2][t] >> (16 * (e % 2))) as u16);
                    }
                    for e in 0..4 {
                        let (k, col) = b_fragment(lane, e);
                        bm[k][col] =
                            bf16_bits_to_f32((regs[4 + e / 2][t] >> (16 * (e % 2))) as u16);
                    }
                    for e in 0..4 {
                        let (row, col) = c_fragment(lane, e);
                        cm[row][col] = f32::from_bits(regs[6 + e][t] as u32);
                    }
                }
                for lane in 0..32 {
                    for (e, o) in out.iter_mut().enumerate() {
                        let (row, col) = c_fragment(lane, e);
                        // bf16 products are exact in f64; summing the 16 there and rounding
                        // once to f32 is within the tensor core's own (unspecified-order)
                        // accumulation error.
                        let dot: f64 = (0..16).map(|k| am[row][k] as f64 * bm[k][col] as f64).sum();
                        o[warp + lane] = ((dot + cm[row][col] as f64) as f32).to_bits() as u64;
                    }
                }
            }
            for (e, o) in out.iter().enumerate() {
                let reg = self.regs_mut(d[e]);
                for (t, &m) in mask.iter().enumerate() {
                    if m {
                        reg[t] = o[t];
                    }
                }
            }
        }
        for v in regs.into_iter().chain(out) {
            self.give(v);
        }
        r
    }
}
