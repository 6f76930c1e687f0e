//! AMX (`tdpbf16ps`) GEMM over the [`PackedBf16`] layout.
//!
//! The packed panel layout is already AMX's VNNI `B` layout: one k-pair step of a panel is
//! 32 columns × 2 bf16 = 128 bytes, so a `B` tile of 16 pair-rows × 16 columns is a
//! `tileloadd` from `panel + p0·128` with stride 128 (columns 0–15) or `+64` (columns 16–31).
//!
//! * `A` is rounded to bf16 (RNE, as [`GemmMode::Bf16Dot`](super::GemmMode::Bf16Dot)) and laid
//!   out row-major as bf16 pairs, rows padded with zeros to a multiple of 32 and each row to a
//!   multiple of 16 pairs (32 input features), the row stride nudged off multiples of 1 KiB.
//! * The micro-kernel holds a 32 × 32 block of `C` (one panel) in four 16 × 16 f32 tiles
//!   (tmm0–3), loads two `A` tiles (tmm4–5) and two `B` tiles (tmm6–7) per 16 k-pairs and
//!   issues four `tdpbf16ps`. A partial last 16-pair chunk of `B` is copied into a zeroed
//!   scratch tile (reading past the panel would pick up the next panel's data, or run off
//!   the buffer). The tiles are stored to a scratch block and the [`Epilogue`] applied there.
//! * Threads take contiguous ranges of panels; each configures its tiles (`ldtilecfg`) and
//!   releases them (`tilerelease`) around its share. Panels are walked in groups of
//!   [`PANEL_GROUP`] so that the group's `B` stays in L2 while every row block passes over it;
//!   within a row block, `k` is cut into blocks of 32 chunks (1024 features) so the `A` block
//!   stays close (L1/L2) across the group's panels, the accumulators going through a scratch block per
//!   panel (`tilestored` / `tileloadd`) between k-blocks.
//!
//! Linux needs the process to ask for the AMX state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) before
//! the first tile instruction; [`available`] does that once.

use super::gemm::Epilogue;
use super::pack::PackedBf16;

/// Panels per L2 block.
pub const PANEL_GROUP: usize = 4;

/// Whether the CPU has AMX-BF16 + AMX-TILE and the OS granted this process the tile state.
pub fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            let l0 = std::arch::x86_64::__cpuid(0);
            if l0.eax < 7 {
                return false;
            }
            let l7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (bf16, tile) = (l7.edx >> 22 & 1 == 1, l7.edx >> 24 & 1 == 1);
            if !(bf16 && tile && super::has_avx512_bf16()) {
                return false;
            }
            // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) only changes this
            // process's permitted xsave features.
            unsafe { imp::request_perm() }
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// `C = A·Wᵀ` (+ epilogue) on AMX. Callers checked the shapes and [`available`].
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn gemm(a: &[f32], w: &PackedBf16, c: &mut [f32], m: usize, threads: usize, epi: &Epilogue) {
    imp::gemm(a, w, c, m, threads, epi)
}

/// AMX bf16 throughput in GFLOP/s on `threads` threads (`tdpbf16ps` on tiles kept in
/// registers: the ceiling of the AMX GEMM, which also has to move `A`, `B` and `C`); `None`
/// without AMX.
pub fn peak_gflops(threads: usize) -> Option<f64> {
    if !available() {
        return None;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const ITERS: usize = 200_000;
        let threads = threads.max(1);
        // Best of a few short runs: a shared host's noise only ever slows a run down.
        let best = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                // SAFETY: AMX is available and the process has the tile permission.
                super::threads::run(threads, |_| unsafe { imp::spin(ITERS) });
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        // 4 tdpbf16ps per iteration, each 16 × 16 outputs × 32 bf16 products × 2 FLOPs.
        let flops = (threads * ITERS * 4 * 16 * 16 * 32 * 2) as f64;
        Some(flops / best / 1e9)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = threads;
        None
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn gemm(_: &[f32], _: &PackedBf16, _: &mut [f32], _: usize, _: usize, _: &Epilogue) {
    unreachable!("AMX is never available off x86_64 Linux")
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;

    use super::super::gemm::{convert_row, Epilogue};
    use super::super::pack::{PackedBf16, NR, STEP_BYTES};
    use super::super::threads::{self, SyncPtr};
    use super::PANEL_GROUP;

    /// Pairs per tile (16 rows of a B tile; 64 bytes of an A tile row).
    const TP: usize = 16;
    /// Rows per A / C block (two 16-row tiles).
    const MB: usize = 32;
    /// 16-pair chunks per k-block (A block 32 rows × 1024 features = 64 KiB, B 64 KiB per
    /// panel). 8, 16, 32 and unblocked measured within the noise of a loaded 2-vCPU host.
    const KB: usize = 32;

    pub unsafe fn request_perm() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        ret == 0
    }

    /// Palette 1, tiles 0–7 all 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileCfg([u8; 64]);

    fn tile_cfg() -> TileCfg {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = 16;
        }
        TileCfg(c)
    }

    /// `A` as bf16 pairs: row `i`, pair `p` at u32 index `i * lda + p`.
    struct PackedA {
        data: Vec<u32>,
        lda: usize,
    }

    fn pack_a(a: &[f32], m: usize, k: usize, threads: usize) -> PackedA {
        let kp = k.div_ceil(2);
        let mut lda = kp.div_ceil(TP) * TP;
        if (lda * 4).is_multiple_of(1024) {
            lda += TP; // keep the 16 rows of a tile load off one cache set
        }
        let rows = m.div_ceil(MB) * MB;
        let mut data = vec![0u32; rows * lda];
        let dp = SyncPtr(data.as_mut_ptr());
        let threads = threads.clamp(1, m);
        threads::run(threads, |t| {
            for i in threads::chunk(m, threads, t) {
                // SAFETY: each row is written by exactly one thread.
                let row = unsafe { std::slice::from_raw_parts_mut(dp.get().add(i * lda), kp) };
                convert_row(&a[i * k..][..k], row);
            }
        });
        PackedA { data, lda }
    }

    pub fn gemm(a: &[f32], w: &PackedBf16, c: &mut [f32], m: usize, threads: usize, epi: &Epilogue) {
        let k = w.k();
        let pa = pack_a(a, m, k, threads);
        let panels = w.panels();
        let threads = threads.clamp(1, panels);
        let cp = SyncPtr(c.as_mut_ptr());
        threads::run(threads, |t| {
            let range = threads::chunk(panels, threads, t);
            // SAFETY: AMX permission granted (checked by the caller); each thread writes only
            // the columns of its own panels.
            unsafe { gemm_panels(&pa, w, cp.get(), m, range, epi) };
        });
    }

    #[repr(C, align(64))]
    struct Scratch([f32; MB * NR]);
    #[repr(C, align(64))]
    struct BTail([u8; TP * STEP_BYTES]);

    unsafe fn gemm_panels(
        pa: &PackedA,
        w: &PackedBf16,
        c: *mut f32,
        m: usize,
        range: std::ops::Range<usize>,
        epi: &Epilogue,
    ) {
        let (n, kp) = (w.n(), w.kp());
        let full = kp / TP;
        let rem = kp % TP;
        let lda_b = pa.lda * 4;
        let cfg = tile_cfg();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let chunks = kp.div_ceil(TP);
        let mut acc: Vec<Scratch> = (0..PANEL_GROUP).map(|_| Scratch([0f32; MB * NR])).collect();
        let mut tails: Vec<BTail> = Vec::new();
        let blocks = m.div_ceil(MB);
        let mut g0 = range.start;
        while g0 < range.end {
            let g1 = (g0 + PANEL_GROUP).min(range.end);
            // Zero-padded copies of the partial last 16-pair chunk of each panel of the group.
            if rem > 0 {
                tails.clear();
                for panel in g0..g1 {
                    let mut t = BTail([0u8; TP * STEP_BYTES]);
                    let src = w.ptr().add((panel * kp + full * TP) * STEP_BYTES);
                    std::ptr::copy_nonoverlapping(src, t.0.as_mut_ptr(), rem * STEP_BYTES);
                    tails.push(t);
                }
            }
            for blk in 0..blocks {
                let row0 = blk * MB;
                let a0 = (pa.data.as_ptr() as *const u8).add(row0 * lda_b);
                // k-blocks of KB chunks: the A block (32 rows × KB chunks) stays close across
                // the panels of the group; the 32 × 32 accumulators go through `acc`.
                let mut j0 = 0;
                while j0 < chunks {
                    let j1 = (j0 + KB).min(chunks);
                    for panel in g0..g1 {
                        let s = acc[panel - g0].0.as_mut_ptr() as *mut u8;
                        if j0 == 0 {
                            asm!(
                                "tilezero tmm0",
                                "tilezero tmm1",
                                "tilezero tmm2",
                                "tilezero tmm3",
                                options(nostack, nomem)
                            );
                        } else {
                            c_tiles::<true>(s);
                        }
                        let b = w.ptr().add(panel * kp * STEP_BYTES);
                        for j in j0..j1 {
                            let bj = if j < full {
                                b.add(j * TP * STEP_BYTES)
                            } else {
                                tails[panel - g0].0.as_ptr()
                            };
                            chunk(a0.add(j * TP * 4), lda_b, bj);
                        }
                        c_tiles::<false>(s);
                    }
                    j0 = j1;
                }
                for panel in g0..g1 {
                    epilogue(&acc[panel - g0].0, c, n, m, row0, panel * NR, epi);
                }
            }
            g0 = g1;
        }
        asm!("tilerelease", options(nostack, nomem));
    }

    /// `iters` rounds of four independent `tdpbf16ps` on zeroed tiles (the peak probe).
    pub unsafe fn spin(iters: usize) {
        let cfg = tile_cfg();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        asm!(
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
            options(nostack, nomem)
        );
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        asm!("tilerelease", options(nostack, nomem));
    }

    /// Loads (`LOAD`) or stores the four C tiles from / to a 32 × 32 f32 block.
    #[inline(always)]
    unsafe fn c_tiles<const LOAD: bool>(s: *mut u8) {
        if LOAD {
            asm!(
                "tileloadd tmm0, [{s} + {ld}]",
                "tileloadd tmm1, [{s1} + {ld}]",
                "tileloadd tmm2, [{s2} + {ld}]",
                "tileloadd tmm3, [{s3} + {ld}]",
                s = in(reg) s,
                s1 = in(reg) s.add(64),
                s2 = in(reg) s.add(16 * NR * 4),
                s3 = in(reg) s.add(16 * NR * 4 + 64),
                ld = in(reg) NR * 4,
                options(nostack, readonly)
            );
        } else {
            asm!(
                "tilestored [{s} + {ld}], tmm0",
                "tilestored [{s1} + {ld}], tmm1",
                "tilestored [{s2} + {ld}], tmm2",
                "tilestored [{s3} + {ld}], tmm3",
                s = in(reg) s,
                s1 = in(reg) s.add(64),
                s2 = in(reg) s.add(16 * NR * 4),
                s3 = in(reg) s.add(16 * NR * 4 + 64),
                ld = in(reg) NR * 4,
                options(nostack)
            );
        }
    }

    /// 16 k-pairs: two A tiles (rows 0–15, 16–31) × two B tiles (columns 0–15, 16–31).
    #[inline(always)]
    unsafe fn chunk(a: *const u8, lda: usize, b: *const u8) {
        asm!(
            "tileloadd tmm4, [{a0} + {lda}]",
            "tileloadd tmm6, [{b0} + {ldb}]",
            "tileloadd tmm7, [{b1} + {ldb}]",
            "tileloadd tmm5, [{a1} + {lda}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a,
            a1 = in(reg) a.add(16 * lda),
            lda = in(reg) lda,
            b0 = in(reg) b,
            b1 = in(reg) b.add(64),
            ldb = in(reg) STEP_BYTES,
            options(nostack, readonly)
        );
    }

    /// Writes the valid part of a 32 × 32 accumulator block to `C` with the [`Epilogue`].
    #[inline(always)]
    unsafe fn epilogue(
        acc: &[f32; MB * NR],
        c: *mut f32,
        n: usize,
        m: usize,
        row0: usize,
        col0: usize,
        epi: &Epilogue,
    ) {
        let rows = MB.min(m - row0);
        let cols = NR.min(n - col0);
        for r in 0..rows {
            let i = row0 + r;
            let src = &acc[r * NR..][..cols];
            let dst = std::slice::from_raw_parts_mut(c.add(i * n + col0), cols);
            if epi.accumulate {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += *s;
                }
            } else {
                dst.copy_from_slice(src);
            }
            if let Some(bias) = epi.bias {
                for (d, b) in dst.iter_mut().zip(&bias[col0..col0 + cols]) {
                    *d += *b;
                }
            }
            if let Some(res) = epi.residual {
                for (d, x) in dst.iter_mut().zip(&res[i * n + col0..][..cols]) {
                    *d += *x;
                }
            }
        }
    }
}
