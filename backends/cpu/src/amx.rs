//! AMX (`tdpbf16ps`) GEMM over the [`PackedBf16`] layout.
//!
//! The packed panel layout is already AMX's VNNI `B` layout: one k-pair step of a panel is
//! 32 columns × 2 bf16 = 128 bytes, so a `B` tile of 16 pair-rows × 16 columns is a
//! `tileloadd` from `panel + p0·128` with stride 128 (columns 0–15) or `+64` (columns 16–31).
//!
//! * `A` is rounded to bf16 (RNE, as [`GemmMode::Bf16Dot`](super::GemmMode::Bf16Dot)) and laid
//!   out row-major as bf16 pairs in a buffer of 64-byte lines kept per calling thread: rows
//!   padded with zeros to a multiple of 16 and each row to a multiple of 16 pairs (32 input
//!   features), the row stride nudged off multiples of 1 KiB. Every tile row is then one cache
//!   line (a row straddling two lines made each `tileloadd` a split load: 3× slower overall),
//!   and reusing the buffer spares a page fault per 4 KiB per call. `B` is read in place, so it
//!   should be 64-byte aligned too (an engine's `weights.bin` is).
//! * The micro-kernel holds a 32 × 32 block of `C` (one panel) in four 16 × 16 f32 tiles
//!   (tmm0–3) over all of `k`, loads two `A` tiles (tmm4–5) and two `B` tiles (tmm6–7) per 16
//!   k-pairs and issues four `tdpbf16ps`; a last row block of at most 16 rows uses one `A`
//!   tile and two accumulators. A partial last 16-pair chunk of `B` is copied into a zeroed
//!   scratch tile (reading past the panel would pick up the next panel's data, or run off the
//!   buffer). The tiles are stored to an L1 block and the [`Epilogue`] applied from there with
//!   AVX-512.
//! * Threads take contiguous ranges of panels; each configures its tiles (`ldtilecfg`) once per
//!   call. Panels are walked in groups whose `B` stays in L2 while every row block of `A`
//!   passes over it, so each weight byte comes from DRAM once per call; meanwhile the next
//!   group's `B` is prefetched into L2 a few lines per chunk. Groups are [`PANEL_GROUP`]
//!   panels where all of `A` fits in half of L2 (prefill: only `B` streams) and twice that
//!   where it does not (the encoder's 1024 rows: each row block then comes from L3 once per
//!   group). Where a group's `B` would not fit L2 (`k` = 8960), `k` is cut into blocks of
//!   1024 features, the accumulators going through one L1/L2 block per row block and panel.
//! * What bounds it: `tileloadd` into a tile that an in-flight `tdpbf16ps` still reads waits
//!   for it (tiles are not renamed), so the 2 × 2 kernel runs at ~80% of the register-only
//!   peak with its operands in L1 and ~60% from L2; storing the accumulators drains the
//!   pipeline once per panel and row block. At 300 rows a prefill weight is reused by only 10
//!   row blocks, so streaming it from DRAM (~14 GB/s on a 2-vCPU host) is a bound of its own.
//!
//! Linux needs the process to ask for the AMX state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) before
//! the first tile instruction; [`available`] does that once.

use super::gemm::Epilogue;
use super::pack::PackedBf16;
use std::mem::MaybeUninit;

/// Panels per L2 group when all of `A` fits in half of L2 (twice this when it does not).
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
pub(crate) fn gemm(
    a: &[f32],
    w: &PackedBf16,
    c: &mut [MaybeUninit<f32>],
    m: usize,
    threads: usize,
    epi: &Epilogue,
) {
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
pub(crate) fn gemm(
    _: &[f32],
    _: &PackedBf16,
    _: &mut [MaybeUninit<f32>],
    _: usize,
    _: usize,
    _: &Epilogue,
) {
    unreachable!("AMX is never available off x86_64 Linux")
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::mem::MaybeUninit;

    use super::super::gemm::{convert_row, Epilogue};
    use super::super::pack::{PackedBf16, NR, STEP_BYTES};
    use super::super::threads::{self, SyncPtr};
    use super::PANEL_GROUP;

    /// Pairs per tile (16 rows of a B tile; 64 bytes of an A tile row).
    const TP: usize = 16;
    /// Rows per A / C block (two 16-row tiles).
    const MB: usize = 32;
    /// Bytes of `B` a panel group may take in L2 with `k` unblocked (L2 is 2 MiB; the `A` row
    /// block and the next group's prefetch share it).
    const L2_B: usize = 1 << 20;
    /// L2 per core.
    const L2: usize = 2 << 20;
    /// 16-pair chunks per k-block where a group's `B` is larger than [`L2_B`] (1024 features).
    const KB: usize = 32;

    /// # Safety
    ///
    /// Linux on x86-64 only: it issues the `arch_prctl` system call directly.
    pub unsafe fn request_perm() -> bool {
        unsafe {
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

    /// One 64-byte line of packed `A`.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Line([u32; TP]);

    /// A 32 × 32 f32 block of `C` (one panel, one row block), as four tiles store it.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Block([f32; MB * NR]);

    #[repr(C, align(64))]
    struct BTail([u8; TP * STEP_BYTES]);

    thread_local! {
        /// Packed `A` of the calling thread, kept between calls: a fresh multi-MiB buffer per
        /// call is fresh pages, and faulting them in cost as much as the conversion.
        static A_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
        /// Accumulator blocks of each thread (one, or one per row block × group panel when `k`
        /// is blocked), kept between calls for the same reason.
        static ACC: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }

    /// `A` as bf16 pairs: row `i`, pair `p` at u32 index `i * lda + p`. Rows start on 64-byte
    /// lines: a tile row that straddles two lines makes every `tileloadd` a split load, which
    /// measured 3× slower for the whole kernel.
    struct PackedA<'a> {
        data: &'a [Line],
        lda: usize,
    }

    /// Rounds `A` into `buf`, rows padded with zeros to a multiple of 16 (one A tile) and each
    /// row to a multiple of 16 pairs, the row stride nudged off multiples of 1 KiB (so the 16
    /// rows of a tile load do not share one cache set). Returns the row stride in u32.
    fn pack_a(a: &[f32], m: usize, k: usize, threads: usize, buf: &mut Vec<Line>) -> usize {
        let kp = k.div_ceil(2);
        let mut lda = kp.div_ceil(TP) * TP;
        if (lda * 4).is_multiple_of(1024) {
            lda += TP;
        }
        let rows = m.div_ceil(TP) * TP;
        if buf.len() < rows * lda / TP {
            buf.resize(rows * lda / TP, Line([0; TP]));
        }
        let dp = SyncPtr(buf.as_mut_ptr() as *mut u32);
        let threads = threads.clamp(1, rows);
        threads::run(threads, |t| {
            for i in threads::chunk(rows, threads, t) {
                // SAFETY: each row is written by exactly one thread; `buf` holds `rows` rows.
                let row = unsafe { std::slice::from_raw_parts_mut(dp.get().add(i * lda), lda) };
                if i < m {
                    convert_row(&a[i * k..][..k], &mut row[..kp]);
                    row[kp..].fill(0);
                } else {
                    row.fill(0);
                }
            }
        });
        lda
    }

    pub fn gemm(
        a: &[f32],
        w: &PackedBf16,
        c: &mut [MaybeUninit<f32>],
        m: usize,
        threads: usize,
        epi: &Epilogue,
    ) {
        A_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let lda = pack_a(a, m, w.k(), threads, &mut buf);
            let pa = PackedA { data: &buf, lda };
            let panels = w.panels();
            let threads = threads.clamp(1, panels);
            let cp = SyncPtr(c.as_mut_ptr() as *mut f32);
            threads::run(threads, |t| {
                let range = threads::chunk(panels, threads, t);
                ACC.with(|acc| {
                    // SAFETY: AMX permission granted (checked by the caller); each thread
                    // writes only the columns of its own panels.
                    unsafe { gemm_panels(&pa, w, cp.get(), m, range, epi, &mut acc.borrow_mut()) };
                });
            });
        });
    }

    /// The panels `range` of `C`, blocked as the [module docs](super) describe.
    ///
    /// # Safety
    ///
    /// The thread must have AMX tile permission ([`request_perm`]) and the CPU AMX-BF16 and
    /// AVX-512F; `c` must be valid for writes of `m` rows of `w.n()` f32 (row stride `w.n()`), and
    /// no other thread may touch the columns of the panels in `range` while this runs.
    unsafe fn gemm_panels(
        pa: &PackedA,
        w: &PackedBf16,
        c: *mut f32,
        m: usize,
        range: std::ops::Range<usize>,
        epi: &Epilogue,
        acc: &mut Vec<Block>,
    ) {
        unsafe {
            let (n, kp) = (w.n(), w.kp());
            let chunks = kp.div_ceil(TP);
            let (full, rem) = (kp / TP, kp % TP);
            let lda_b = pa.lda * 4;
            let blocks = m.div_ceil(MB);
            let pg = group(m, lda_b);
            let kb = if pg * kp * STEP_BYTES <= L2_B {
                chunks
            } else {
                KB
            };
            let kblocks = chunks.div_ceil(kb);
            let slots = if kblocks == 1 { 1 } else { blocks * pg };
            if acc.len() < slots {
                acc.resize(slots, Block([0.0; MB * NR]));
            }
            let cfg = tile_cfg();
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
            let mut tails: Vec<BTail> = Vec::new();
            let a_base = pa.data.as_ptr() as *const u8;
            let mut g0 = range.start;
            while g0 < range.end {
                let g1 = (g0 + pg).min(range.end);
                // Zero-padded copies of the partial last 16-pair chunk of each panel of the group
                // (reading past the panel would pick up the next panel, or run off the buffer).
                if rem > 0 {
                    tails.clear();
                    for panel in g0..g1 {
                        let mut t = BTail([0u8; TP * STEP_BYTES]);
                        let src = w.ptr().add((panel * kp + full * TP) * STEP_BYTES);
                        std::ptr::copy_nonoverlapping(src, t.0.as_mut_ptr(), rem * STEP_BYTES);
                        tails.push(t);
                    }
                }
                // The next group's B, pulled into L2 a few lines per chunk so that it has arrived
                // when this group is done instead of streaming from DRAM under the first row block.
                let next_end = (g1 + pg).min(range.end);
                let mut pf = w.ptr().add(g1 * kp * STEP_BYTES);
                let pf_end = w.ptr().add(next_end * kp * STEP_BYTES);
                let steps = blocks * (g1 - g0) * chunks;
                let pf_lines = (pf_end.offset_from(pf) as usize / 64).div_ceil(steps);
                for kbi in 0..kblocks {
                    let (j0, j1) = (kbi * kb, ((kbi + 1) * kb).min(chunks));
                    let last = kbi + 1 == kblocks;
                    for blk in 0..blocks {
                        let row0 = blk * MB;
                        let rows = MB.min(m - row0);
                        let two = rows > TP;
                        let a0 = a_base.add(row0 * lda_b);
                        for panel in g0..g1 {
                            let slot = if kblocks == 1 {
                                0
                            } else {
                                blk * pg + panel - g0
                            };
                            let s = acc[slot].0.as_mut_ptr() as *mut u8;
                            if kbi == 0 {
                                asm!(
                                    "tilezero tmm0",
                                    "tilezero tmm1",
                                    "tilezero tmm2",
                                    "tilezero tmm3",
                                    options(nostack, nomem)
                                );
                            } else {
                                c_tiles::<true>(s, two);
                            }
                            let b = w.ptr().add(panel * kp * STEP_BYTES);
                            for j in j0..j1 {
                                let bj = if j < full {
                                    b.add(j * TP * STEP_BYTES)
                                } else {
                                    tails[panel - g0].0.as_ptr()
                                };
                                if two {
                                    chunk2(a0.add(j * TP * 4), lda_b, bj);
                                } else {
                                    chunk1(a0.add(j * TP * 4), lda_b, bj);
                                }
                                for _ in 0..pf_lines {
                                    if pf < pf_end {
                                        _mm_prefetch::<_MM_HINT_T1>(pf as *const i8);
                                        pf = pf.add(64);
                                    }
                                }
                            }
                            c_tiles::<false>(s, two);
                            if last {
                                epilogue(&acc[slot], c, n, row0, rows, panel * NR, epi);
                            }
                        }
                    }
                }
                g0 = g1;
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// Panels per group: [`PANEL_GROUP`] where all of `A` fits in half of L2 (it stays there
    /// and only `B` streams), twice that where `A` does not (each `A` row block then comes
    /// from L3 once per group, and a larger group reads it fewer times).
    fn group(m: usize, lda_bytes: usize) -> usize {
        if m * lda_bytes <= L2 / 2 {
            PANEL_GROUP
        } else {
            2 * PANEL_GROUP
        }
    }

    /// `iters` rounds of four independent `tdpbf16ps` on zeroed tiles (the peak probe).
    ///
    /// # Safety
    ///
    /// The thread must have AMX tile permission ([`request_perm`]) and the CPU AMX-BF16.
    pub unsafe fn spin(iters: usize) {
        unsafe {
            let cfg = tile_cfg();
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
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
    }

    /// Loads (`LOAD`) or stores the C tiles from / to a 32 × 32 f32 block: all four, or
    /// (`two` false: a row block of at most 16 rows) the top two.
    ///
    /// # Safety
    ///
    /// A tile configuration is loaded; `s` is valid for reads and writes of a 32 × 32 f32 block (16
    /// rows where `two` is false).
    #[inline(always)]
    unsafe fn c_tiles<const LOAD: bool>(s: *mut u8, two: bool) {
        unsafe {
            let ld = NR * 4;
            if LOAD {
                asm!(
                    "tileloadd tmm0, [{s} + {ld}]",
                    "tileloadd tmm1, [{s1} + {ld}]",
                    s = in(reg) s,
                    s1 = in(reg) s.add(64),
                    ld = in(reg) ld,
                    options(nostack, readonly)
                );
                if two {
                    asm!(
                        "tileloadd tmm2, [{s2} + {ld}]",
                        "tileloadd tmm3, [{s3} + {ld}]",
                        s2 = in(reg) s.add(16 * ld),
                        s3 = in(reg) s.add(16 * ld + 64),
                        ld = in(reg) ld,
                        options(nostack, readonly)
                    );
                }
            } else {
                asm!(
                    "tilestored [{s} + {ld}], tmm0",
                    "tilestored [{s1} + {ld}], tmm1",
                    s = in(reg) s,
                    s1 = in(reg) s.add(64),
                    ld = in(reg) ld,
                    options(nostack)
                );
                if two {
                    asm!(
                        "tilestored [{s2} + {ld}], tmm2",
                        "tilestored [{s3} + {ld}], tmm3",
                        s2 = in(reg) s.add(16 * ld),
                        s3 = in(reg) s.add(16 * ld + 64),
                        ld = in(reg) ld,
                        options(nostack)
                    );
                }
            }
        }
    }

    /// 16 k-pairs: two A tiles (rows 0–15, 16–31) × two B tiles (columns 0–15, 16–31).
    ///
    /// # Safety
    ///
    /// A tile configuration is loaded; `a` is valid for reads of 32 rows of 64 bytes `lda` bytes
    /// apart and `b` of two 16 × 64-byte B tiles.
    #[inline(always)]
    unsafe fn chunk2(a: *const u8, lda: usize, b: *const u8) {
        unsafe {
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
    }

    /// [`chunk2`] for a row block of at most 16 rows: one A tile, half the work.
    ///
    /// # Safety
    ///
    /// As [`chunk2`], with 16 rows of `a`.
    #[inline(always)]
    unsafe fn chunk1(a: *const u8, lda: usize, b: *const u8) {
        unsafe {
            asm!(
                "tileloadd tmm4, [{a0} + {lda}]",
                "tileloadd tmm6, [{b0} + {ldb}]",
                "tileloadd tmm7, [{b1} + {ldb}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                a0 = in(reg) a,
                lda = in(reg) lda,
                b0 = in(reg) b,
                b1 = in(reg) b.add(64),
                ldb = in(reg) STEP_BYTES,
                options(nostack, readonly)
            );
        }
    }

    /// Writes the valid `rows` × (up to 32) part of an accumulator block to `C` with the
    /// [`Epilogue`], in the order the other kernels add: prior `C`, bias, residual.
    ///
    /// # Safety
    ///
    /// the CPU must have AVX-512F (the caller checks it); `c` is valid for writes of rows
    /// `row0..row0 + rows` of `n` f32 and columns `col0..` up to 32 of them are this thread's.
    #[target_feature(enable = "avx512f")]
    unsafe fn epilogue(
        acc: &Block,
        c: *mut f32,
        n: usize,
        row0: usize,
        rows: usize,
        col0: usize,
        epi: &Epilogue,
    ) {
        unsafe {
            let cols = NR.min(n - col0);
            let m0 = if cols >= 16 {
                0xffff
            } else {
                ((1u32 << cols) - 1) as __mmask16
            };
            let m1 = if cols >= 32 {
                0xffff
            } else if cols > 16 {
                ((1u32 << (cols - 16)) - 1) as __mmask16
            } else {
                0
            };
            let bias = epi.bias.map(|b| {
                let b = b.as_ptr().add(col0);
                (
                    _mm512_maskz_loadu_ps(m0, b),
                    _mm512_maskz_loadu_ps(m1, b.add(16)),
                )
            });
            for r in 0..rows {
                let at = (row0 + r) * n + col0;
                let dst = c.add(at);
                let mut v0 = _mm512_load_ps(acc.0.as_ptr().add(r * NR));
                let mut v1 = _mm512_load_ps(acc.0.as_ptr().add(r * NR + 16));
                if epi.accumulate {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, dst), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, dst.add(16)), v1);
                }
                if let Some((b0, b1)) = bias {
                    v0 = _mm512_add_ps(v0, b0);
                    v1 = _mm512_add_ps(v1, b1);
                }
                if let Some(res) = epi.residual {
                    let x = res.as_ptr().add(at);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, x));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, x.add(16)));
                }
                _mm512_mask_storeu_ps(dst, m0, v0);
                _mm512_mask_storeu_ps(dst.add(16), m1, v1);
            }
        }
    }
}
