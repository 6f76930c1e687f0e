//! The packed bf16 weight layout shared by [`gemv`](super::gemv) and [`gemm`](super::gemm).
//!
//! # Layout
//!
//! A weight `W` in torch `Linear` layout `[n, k]` (`n` outputs, `k` inputs) is cut into
//! *panels* of [`NR`] = 32 consecutive output rows; the last panel is zero-padded to 32 rows.
//! Along `k`, inputs are grouped in *pairs* `(2p, 2p+1)`, `p < kp = ceil(k / 2)`; an odd `k`
//! gets one zero column. Inside a panel the pairs are stored `p`-major, and each pair-step is
//! 32 rows × 2 bf16 = 128 bytes, which is exactly two zmm registers of the operand shape that
//! `vdpbf16ps` wants (lane `r` holds `(W[r, 2p], W[r, 2p+1])`, the even column in the low half):
//!
//! ```text
//! element (i, kk) with panel = i / 32, r = i % 32, p = kk / 2, h = kk % 2
//!   lives at bf16 index  ((panel * kp + p) * 32 + r) * 2 + h
//!   stored little-endian (the raw bf16 bits as u16)
//! total size = panels * kp * 128 bytes, panels = ceil(n / 32)
//! ```
//!
//! A `k`-block `[p0, p0 + kc)` of one panel is therefore one contiguous run of `kc * 128`
//! bytes, which the GEMM streams from L1, and a decode GEMV reads the whole buffer once, front
//! to back. The payload has no header: an engine stores `n` and `k` beside it and maps it back
//! with [`PackedBf16::from_bytes`] (zero-copy; no alignment requirement).

use std::borrow::Cow;
use std::fmt;

use half::bf16;

/// Output rows per panel.
pub const NR: usize = 32;
/// Bytes per (panel, k-pair) step: 32 rows × 2 bf16.
pub const STEP_BYTES: usize = NR * 2 * 2;

/// A `[n, k]` bf16 weight in the panel layout described in the [module docs](self).
#[derive(Clone)]
pub struct PackedBf16<'a> {
    n: usize,
    k: usize,
    data: Cow<'a, [u8]>,
}

/// Why [`PackedBf16::from_bytes`] refused a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub n: usize,
    pub k: usize,
    pub expected: usize,
    pub got: usize,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packed bf16 weight [{}, {}] needs {} bytes, got {}",
            self.n, self.k, self.expected, self.got
        )
    }
}

impl std::error::Error for LayoutError {}

/// Number of k-pairs, `ceil(k / 2)`.
pub const fn k_pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// Number of panels, `ceil(n / 32)`.
pub const fn panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// Size in bytes of the packed form of a `[n, k]` weight.
pub const fn packed_len(n: usize, k: usize) -> usize {
    panels(n) * k_pairs(k) * STEP_BYTES
}

/// [`packed_len`] for sizes read from a file: `None` where the product overflows.
pub fn checked_packed_len(n: usize, k: usize) -> Option<u64> {
    (panels(n) as u64)
        .checked_mul(k_pairs(k) as u64)?
        .checked_mul(STEP_BYTES as u64)
}

/// Packs `w` (`[n, k]` row-major, torch `Linear` layout).
pub fn pack(w: &[bf16], n: usize, k: usize) -> PackedBf16<'static> {
    assert_eq!(
        w.len(),
        n * k,
        "pack: weight has {} elements, expected {n}×{k}",
        w.len()
    );
    let data = pack_rows(n, k, |i| {
        let row = &w[i * k..][..k];
        move |kk: usize| row[kk].to_bits()
    });
    PackedBf16 {
        n,
        k,
        data: Cow::Owned(data),
    }
}

/// Packs the `[n, k]` weight whose rows are the rows of `parts` one after the other, each
/// part bf16 little-endian bytes `[n_i, k]` (a checkpoint's stored bytes, read in place): the
/// packed form of a merged projection (q, k, v stacked) with no intermediate copy.
pub fn pack_bf16_rows(parts: &[&[u8]], k: usize) -> PackedBf16<'static> {
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |row, p| {
            let start = *row;
            *row += p.len() / (2 * k);
            Some(start)
        })
        .collect();
    let n = parts.iter().map(|p| p.len() / (2 * k)).sum();
    for p in parts {
        assert_eq!(
            p.len() % (2 * k),
            0,
            "pack_bf16_rows: a part is not whole rows of {k}"
        );
    }
    let data = pack_rows(n, k, |i| {
        let part = starts.partition_point(|&s| s <= i) - 1;
        let row = &parts[part][(i - starts[part]) * 2 * k..][..2 * k];
        move |kk: usize| u16::from_le_bytes([row[2 * kk], row[2 * kk + 1]])
    });
    PackedBf16 {
        n,
        k,
        data: Cow::Owned(data),
    }
}

/// The panel layout of `n` rows of `k` bf16 bits, row `i`'s element `kk` given by `row(i)(kk)`;
/// panels are filled in parallel (each is its own contiguous run of bytes).
fn pack_rows<R, F>(n: usize, k: usize, row: R) -> Vec<u8>
where
    R: Fn(usize) -> F + Sync,
    F: Fn(usize) -> u16,
{
    use rayon::prelude::*;
    let kp = k_pairs(k);
    let mut out = vec![0u8; packed_len(n, k)];
    out.par_chunks_mut(kp * STEP_BYTES)
        .enumerate()
        .for_each(|(panel, dst)| {
            let rows = (n - panel * NR).min(NR);
            for r in 0..rows {
                let src = row(panel * NR + r);
                for kk in 0..k {
                    let at = (((kk / 2) * NR + r) * 2 + (kk & 1)) * 2;
                    dst[at..at + 2].copy_from_slice(&src(kk).to_le_bytes());
                }
            }
        });
    out
}

impl<'a> PackedBf16<'a> {
    /// Wraps an already packed buffer (e.g. a memory-mapped section) without copying.
    pub fn from_bytes(bytes: &'a [u8], n: usize, k: usize) -> Result<Self, LayoutError> {
        let expected = packed_len(n, k);
        if bytes.len() != expected {
            return Err(LayoutError {
                n,
                k,
                expected,
                got: bytes.len(),
            });
        }
        Ok(PackedBf16 {
            n,
            k,
            data: Cow::Borrowed(bytes),
        })
    }

    /// The packed payload (no header), as written by [`pack`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_owned(self) -> PackedBf16<'static> {
        PackedBf16 {
            n: self.n,
            k: self.k,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// Output features (rows of the torch weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the torch weight).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `ceil(k / 2)`.
    pub fn kp(&self) -> usize {
        k_pairs(self.k)
    }

    /// `ceil(n / 32)`.
    pub fn panels(&self) -> usize {
        panels(self.n)
    }

    /// Element `(i, kk)` of the original weight.
    pub fn get(&self, i: usize, kk: usize) -> bf16 {
        assert!(i < self.n && kk < self.k);
        let idx = ((i / NR * self.kp() + kk / 2) * NR + i % NR) * 2 + (kk & 1);
        bf16::from_bits(u16::from_le_bytes([
            self.data[2 * idx],
            self.data[2 * idx + 1],
        ]))
    }

    /// Row `i` of the original weight widened to f32 (exact), into `out` (`k` values): how a
    /// tied embedding lookup reads the LM head's packed weight.
    pub fn row_f32(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.n && out.len() == self.k);
        let base = (i / NR * self.kp() * NR + i % NR) * 4;
        for (p, pair) in out.chunks_mut(2).enumerate() {
            let at = base + p * NR * 4;
            for (h, o) in pair.iter_mut().enumerate() {
                *o = bf16_bits_to_f32(u16::from_le_bytes([
                    self.data[at + 2 * h],
                    self.data[at + 2 * h + 1],
                ]));
            }
        }
    }

    /// Unpacks back to `[n, k]` row-major.
    pub fn unpack(&self) -> Vec<bf16> {
        let mut w = Vec::with_capacity(self.n * self.k);
        for i in 0..self.n {
            for kk in 0..self.k {
                w.push(self.get(i, kk));
            }
        }
        w
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    /// Raw bf16 bits of pair-step `(panel, p)` lane `r`, half `h` (scalar kernels).
    #[inline(always)]
    pub(crate) fn bits(&self, panel: usize, p: usize, r: usize, h: usize) -> u16 {
        let idx = (((panel * self.kp() + p) * NR + r) * 2 + h) * 2;
        u16::from_le_bytes([self.data[idx], self.data[idx + 1]])
    }
}

impl fmt::Debug for PackedBf16<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedBf16")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// Widens raw bf16 bits to f32 (exact).
#[inline(always)]
pub(crate) fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Rounds f32 to bf16 bits, round-to-nearest-even (what `vcvtne2ps2bf16` does for finite values).
#[inline(always)]
pub(crate) fn f32_to_bf16_bits(v: f32) -> u16 {
    bf16::from_f32(v).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing stacked parts straight from their stored bytes is packing the stacked matrix.
    #[test]
    fn rows_of_parts_pack_like_the_stacked_matrix() {
        for (rows, k) in [
            (vec![32], 64),
            (vec![5, 40, 1], 7),
            (vec![33, 31], 1),
            (vec![70], 129),
        ] {
            let n: usize = rows.iter().sum();
            let all: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(((i * 7919) % 1013) as f32 - 500.0))
                .collect();
            let bytes: Vec<u8> = all.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut parts = Vec::new();
            let mut at = 0;
            for r in &rows {
                parts.push(&bytes[at * 2 * k..(at + r) * 2 * k]);
                at += r;
            }
            let stacked = pack(&all, n, k);
            let direct = pack_bf16_rows(&parts, k);
            assert_eq!((direct.n(), direct.k()), (n, k));
            assert_eq!(
                direct.as_bytes(),
                stacked.as_bytes(),
                "rows {rows:?}, k {k}"
            );
        }
    }
}
