//! AMX (`tdpbf16ps`) products of the bf16 attention path ([`super::bf16`]).
//!
//! Both products are `C[m, n] = A[m, k] · B[k, n]` with `A` bf16 rows (Q, or the
//! probabilities P) and `B` in AMX's VNNI layout, pair-rows of `n` (bf16, bf16) pairs (Kᵀ, or
//! V): exactly the operand layouts of `tdpbf16ps`, so every tile is one `tileloadd`. All eight
//! tiles are 16 rows × 64 bytes (the layout pads `m`, `n` to 16 and `k` to 32 with zeros): a
//! block of `C` up to 32 × 32 in tmm0–3, `A` rows 0–15 / 16–31 in tmm4–5, `B` columns 0–15 /
//! 16–31 in tmm6–7, four `tdpbf16ps` per 16 k-pairs.
//!
//! The tile state is per thread: [`Tiles`] configures it (`ldtilecfg`) for one attention call's
//! share and releases it (`tilerelease`) when dropped. The process-level permission is the one
//! [`crate::amx::available`] requests.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::arch::asm;

/// This thread's tiles, configured for [`products`] until dropped.
pub(super) struct Tiles(());

impl Tiles {
    /// # Safety
    /// AMX available and the tile permission granted ([`crate::amx::available`]).
    pub(super) unsafe fn configure() -> Tiles {
        unsafe {
            // Palette 1; tiles 0–7 all 16 rows × 64 bytes.
            #[repr(C, align(64))]
            struct Cfg([u8; 64]);
            let mut c = Cfg([0u8; 64]);
            c.0[0] = 1;
            for t in 0..8 {
                c.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c.0[48 + t] = 16;
            }
            asm!("ldtilecfg [{}]", in(reg) c.0.as_ptr(), options(nostack, readonly));
            Tiles(())
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure` on this thread.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

macro_rules! tload {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}]"), p = in(reg) $p, s = in(reg) $stride, options(nostack, readonly))
    };
}

macro_rules! tstore {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tilestored [{p} + {s}], tmm", $t), p = in(reg) $p, s = in(reg) $stride, options(nostack))
    };
}

macro_rules! tzero {
    ($t:literal) => {
        asm!(concat!("tilezero tmm", $t), options(nostack, nomem))
    };
}

macro_rules! tdp {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem)
        )
    };
}

/// `C[m, n] = A[m, 2·kp] · B[2·kp, n]`: `A` bf16 rows `lda` bytes apart, `B` `kp` pair-rows of
/// `n` pairs `ldb` bytes apart, `C` f32 rows `ldc` floats apart.
///
/// # Safety
/// Tiles configured by [`Tiles::configure`] on this thread; `m`, `n` and `kp` multiples of 16;
/// `A` holds `m` rows of `4·kp` bytes, `B` `kp` rows of `4·n` bytes, `C` `m` rows of `n` floats.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn products(
    a: *const u8,
    lda: usize,
    b: *const u8,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    n: usize,
    kp: usize,
) {
    unsafe {
        debug_assert!(m.is_multiple_of(16) && n.is_multiple_of(16) && kp.is_multiple_of(16));
        // Columns outer: a 32-column block of B (all of k) stays in L1 while the row blocks pass.
        let mut j = 0;
        while j < n {
            let wide = n - j >= 32;
            let mut i = 0;
            while i < m {
                let tall = m - i >= 32;
                let (ai, bj, cij) = (a.add(i * lda), b.add(j * 4), c.add(i * ldc + j));
                match (tall, wide) {
                    (true, true) => block::<true, true>(ai, lda, bj, ldb, cij, ldc, kp),
                    (true, false) => block::<true, false>(ai, lda, bj, ldb, cij, ldc, kp),
                    (false, true) => block::<false, true>(ai, lda, bj, ldb, cij, ldc, kp),
                    (false, false) => block::<false, false>(ai, lda, bj, ldb, cij, ldc, kp),
                }
                i += if tall { 32 } else { 16 };
            }
            j += if wide { 32 } else { 16 };
        }
    }
}

/// One block of `C`: 16 or 32 (`TALL`) rows × 16 or 32 (`WIDE`) columns.
///
/// # Safety
///
/// A tile configuration is loaded on a thread with AMX permission; `a`, `b` and `c` are valid for
/// the block's rows and `kp` pairs at the given strides (bytes for `a`/`b`, floats for `c`).
#[inline(always)]
unsafe fn block<const TALL: bool, const WIDE: bool>(
    a: *const u8,
    lda: usize,
    b: *const u8,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    kp: usize,
) {
    unsafe {
        tzero!(0);
        if WIDE {
            tzero!(1);
        }
        if TALL {
            tzero!(2);
            if WIDE {
                tzero!(3);
            }
        }
        for kc in 0..kp / 16 {
            let (ak, bk) = (a.add(kc * 64), b.add(kc * 16 * ldb));
            tload!(4, ak, lda);
            tload!(6, bk, ldb);
            tdp!(0, 4, 6);
            if WIDE {
                tload!(7, bk.add(64), ldb);
                tdp!(1, 4, 7);
            }
            if TALL {
                tload!(5, ak.add(16 * lda), lda);
                tdp!(2, 5, 6);
                if WIDE {
                    tdp!(3, 5, 7);
                }
            }
        }
        let ldc_b = ldc * 4;
        tstore!(0, c, ldc_b);
        if WIDE {
            tstore!(1, c.add(16), ldc_b);
        }
        if TALL {
            tstore!(2, c.add(16 * ldc), ldc_b);
            if WIDE {
                tstore!(3, c.add(16 * ldc + 16), ldc_b);
            }
        }
    }
}
