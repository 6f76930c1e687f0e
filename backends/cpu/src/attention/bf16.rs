//! The bf16 path of [`attention`](super): the f32 path's blocking, with both products on bf16
//! operands and f32 accumulation, as a bf16 model's scaled-dot-product attention computes them
//! (q, k and v are bf16 tensors there, and the probabilities are rounded to bf16 for `P·V`).
//!
//! Per kv head, `Kᵀ` (rotated first when the keys are) and `V` are rounded to bf16 once into
//! the VNNI layout of `tdpbf16ps` / `vdpbf16ps` (pair-rows of (bf16, bf16) pairs: `Kᵀ` pairs
//! two features of one key, `V` two keys of one feature), zero-padded to whole tiles: `d` to 32
//! features for `Q·Kᵀ` on AMX (to a pair elsewhere), 16 for `P·V`, keys to 32. Per block of rows, `Q` is rotated in f32 and
//! rounded; the scores `S = Q·Kᵀ` come back in f32; the softmax runs in f32 (scale, row max,
//! `exp(s·scale − max)`, the sum of the unrounded exponentials) and writes the probabilities
//! rounded to bf16; `O = P·V` is divided by the sum in f32. The key span of a block starts at a
//! multiple of 32, so it is a whole number of `P·V` k-steps.
//!
//! The products run on AMX tiles ([`super::amx`]), with `vdpbf16ps` ([`super::simd`]), or in
//! portable scalar code (the same roundings, f32 accumulation in another order).

use super::{Keys, Mask, Out, Problem, View, BLOCK_ROWS};
use half::bf16;

/// What runs the bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dot {
    Amx,
    Avx512,
    Scalar,
}

fn up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// A row stride of `elems` elements of `size` bytes, nudged off multiples of 1 KiB so the 16
/// rows of a tile load do not all fall into one L1 set.
fn stride(elems: usize, size: usize) -> usize {
    if (elems * size).is_multiple_of(1024) {
        elems + 64 / size
    } else {
        elems
    }
}

/// The padded extents and strides of one problem (strides in elements of the buffer's type).
#[derive(Clone, Copy)]
struct Geom {
    /// Features padded for `Q·Kᵀ` (k-steps of 32) and for `P·V` (column tiles of 16).
    dq: usize,
    dv: usize,
    /// Keys padded to 32.
    tq: usize,
    /// `Kᵀ` pair-rows (u32), `V` pair-rows (u32), scores (f32), probabilities (u32 pairs).
    ldk: usize,
    ldv: usize,
    lds: usize,
    ldp: usize,
}

impl Geom {
    fn of(p: &Problem, dot: Dot) -> Geom {
        let (d, t) = (p.q.d, p.kd.len);
        // Only AMX tiles need `Q·Kᵀ`'s k-steps whole (32 features): `vdpbf16ps` and the scalar
        // code step one pair at a time, so vision's head_dim 72 stays 72, not 96. The padding
        // is zeros either way, so the products are the same bits.
        let dq = match dot {
            Dot::Amx => up(d, 32),
            Dot::Avx512 | Dot::Scalar => up(d, 2),
        };
        let (dv, tq) = (up(d, 16), up(t, 32));
        Geom {
            dq,
            dv,
            tq,
            ldk: stride(tq, 4),
            ldv: stride(dv, 4),
            lds: stride(tq, 4),
            ldp: stride(tq / 2, 4),
        }
    }
}

/// A buffer of 4-byte elements starting on a 64-byte boundary: a tile row that straddles two
/// cache lines loads at well under half speed (AMX products measured 2.5× slower from the
/// 16-byte-aligned memory `Vec` gives).
#[derive(Default)]
struct Lines(Vec<Line>);

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u32; 16]);

impl Lines {
    fn grow(&mut self, elems: usize) {
        let lines = elems.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Line::default());
        }
    }

    fn u32s(&mut self) -> &mut [u32] {
        // SAFETY: `Line` is 16 u32s with no padding.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u32, self.0.len() * 16)
        }
    }

    fn f32s(&mut self) -> &mut [f32] {
        // SAFETY: as `u32s`; every bit pattern is an f32.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut f32, self.0.len() * 16)
        }
    }
}

/// Per-thread buffers, kept for the thread's life like the f32 path's.
#[derive(Default)]
struct Scratch {
    /// kv head whose `kt` / `vt` are ready.
    loaded: Option<usize>,
    /// `Kᵀ`: pair-row `c / 2` (`dq / 2` of them), key `j` at `[c / 2 · ldk + j]`.
    kt: Lines,
    /// `V`: pair-row `j / 2` (`tq / 2` of them), feature `c` at `[j / 2 · ldv + c]`.
    vt: Lines,
    /// `Q` block, bf16 rows of `dq` (as pairs).
    qb: Lines,
    /// Scores, `[BLOCK_ROWS, lds]`.
    s: Lines,
    /// Probabilities, bf16 rows of `2·ldp` (as pairs).
    pb: Lines,
    /// `P·V`, `[BLOCK_ROWS, dv]`.
    o: Lines,
    /// One rotated row.
    row: Vec<f32>,
    /// One row in bf16 (as pairs).
    row16: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// A run of bf16 pairs as its bf16 elements.
fn halves(v: &mut [u32]) -> &mut [u16] {
    // SAFETY: u16 has a smaller alignment than u32 and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u16, v.len() * 2) }
}

/// One thread's share of (kv head, row block) units (see [`super::run`]).
///
/// # Safety
/// As [`super::run`]'s shares: the units of different threads are disjoint; with `Dot::Amx`,
/// AMX is available.
pub(super) unsafe fn share(
    p: &Problem,
    units: std::ops::Range<usize>,
    blocks: usize,
    out: Out,
    dot: Dot,
) {
    unsafe {
        let geo = Geom::of(p, dot);
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        let _tiles = (dot == Dot::Amx).then(|| super::amx::Tiles::configure());
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let d = p.q.d;
            sc.qb.grow(BLOCK_ROWS * geo.dq / 2);
            sc.s.grow(BLOCK_ROWS * geo.lds);
            sc.pb.grow(BLOCK_ROWS * geo.ldp);
            sc.o.grow(BLOCK_ROWS * geo.dv);
            grow(&mut sc.row, d);
            grow(&mut sc.row16, geo.dq / 2);
            sc.loaded = None;
            let rows = p.group * p.q.len;
            for unit in units {
                let (g, b) = (unit / blocks, unit % blocks);
                let r0 = b * BLOCK_ROWS;
                block(p, &geo, g, r0, (r0 + BLOCK_ROWS).min(rows), sc, out, dot);
            }
        });
    }
}

/// Rows `r0..r1` of kv head `g`, as [`super`]'s f32 block.
///
/// # Safety
///
/// The CPU has what `dot` uses (AVX-512 BF16, or AMX with permission); `out` is valid for the rows
/// `r0..r1` of kv head `g` and no other thread writes them.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    p: &Problem,
    geo: &Geom,
    g: usize,
    r0: usize,
    r1: usize,
    sc: &mut Scratch,
    out: Out,
    dot: Dot,
) {
    unsafe {
        let (n, d) = (p.q.len, p.q.d);
        if sc.loaded != Some(g) {
            load_kv(p, geo, g, sc, dot);
            sc.loaded = Some(g);
        }
        let m = r1 - r0;
        let mp = up(m, 16);
        // Q rows rotated in f32, rounded; zero rows up to whole tiles.
        for rr in 0..mp {
            let dst = halves(&mut sc.qb.u32s()[rr * geo.dq / 2..(rr + 1) * geo.dq / 2]);
            if rr >= m {
                dst.fill(0);
                continue;
            }
            let r = r0 + rr;
            let (h, i) = (g * p.group + r / n, r % n);
            if rr + AHEAD < m {
                let ra = r + AHEAD;
                prefetch(&p.q, g * p.group + ra / n, ra % n);
            }
            let mut src = p.q.row(h, i);
            if let Some(rope) = p.rope.filter(|r| r.queries) {
                rotate(
                    dot,
                    src,
                    &rope.cos[i * d..(i + 1) * d],
                    &rope.sin[i * d..(i + 1) * d],
                    &mut sc.row[..d],
                );
                src = &sc.row[..d];
            }
            to_bf16(dot, src, &mut dst[..d]);
            dst[d..].fill(0);
        }
        let (lo, end) = p.key_span(r0, r1);
        let lo = lo.min(end) / 32 * 32;
        let span = up(end - lo, 32);
        let (ptr_q, ptr_k) = (sc.qb.u32s().as_ptr(), sc.kt.u32s()[lo..].as_ptr());
        products(
            dot,
            ptr_q,
            geo.dq / 2,
            ptr_k,
            geo.ldk,
            sc.s.f32s().as_mut_ptr(),
            geo.lds,
            mp,
            span,
            geo.dq / 2,
        );
        let mut sums = [0f32; BLOCK_ROWS];
        for (rr, sum) in sums.iter_mut().enumerate().take(mp) {
            let prow = halves(&mut sc.pb.u32s()[rr * geo.ldp..rr * geo.ldp + span / 2]);
            if rr >= m {
                prow.fill(0);
                continue;
            }
            let i = (r0 + rr) % n;
            let (a, b) = p.keys_of(i);
            let (a, b) = (a.max(lo) - lo, b.min(lo + span).max(lo) - lo);
            let srow = &mut sc.s.f32s()[rr * geo.lds..rr * geo.lds + span];
            *sum = if p.seg_contiguous || !matches!(p.mask, Mask::Segments(_)) {
                softmax(dot, srow, a, b, p.scale, prow)
            } else {
                let sum = super::softmax_masked(srow, a, b, p.scale, |j| p.sees(i, lo + j));
                to_bf16(dot, srow, prow);
                sum
            };
        }
        let ptr_v = sc.vt.u32s()[lo / 2 * geo.ldv..].as_ptr();
        products(
            dot,
            sc.pb.u32s().as_ptr(),
            geo.ldp,
            ptr_v,
            geo.ldv,
            sc.o.f32s().as_mut_ptr(),
            geo.dv,
            mp,
            geo.dv,
            span / 2,
        );
        super::write_rows(p, g, r0, m, sc.o.f32s(), geo.dv, &sums, out, false);
    }
}

/// `Kᵀ` and `V` of kv head `g` in bf16 pairs, zero-padded (see the module doc).
fn load_kv(p: &Problem, geo: &Geom, g: usize, sc: &mut Scratch, dot: Dot) {
    let (t, d) = (p.kd.len, p.q.d);
    let (kp, tq) = (geo.dq / 2, geo.tq);
    sc.kt.grow(kp * geo.ldk);
    sc.vt.grow(tq / 2 * geo.ldv);
    let (kt, vt) = (sc.kt.u32s(), sc.vt.u32s());
    match p.k {
        Keys::Rows(k) => {
            // Each key's features, rounded to pairs, go down one column of pair-rows.
            for j in 0..tq {
                let pairs = &mut sc.row16[..kp];
                prefetch(&k, g, j + AHEAD);
                if j < t {
                    let mut krow = k.row(g, j);
                    if let Some(rope) = p.rope.filter(|r| r.keys) {
                        rotate(
                            dot,
                            krow,
                            &rope.cos[j * d..(j + 1) * d],
                            &rope.sin[j * d..(j + 1) * d],
                            &mut sc.row[..d],
                        );
                        krow = &sc.row[..d];
                    }
                    let h = halves(pairs);
                    to_bf16(dot, krow, &mut h[..d]);
                    h[d..].fill(0);
                } else {
                    pairs.fill(0);
                }
                for (c2, &x) in pairs.iter().enumerate() {
                    kt[c2 * geo.ldk + j] = x;
                }
            }
        }
        Keys::Transposed(k) => {
            // Feature rows are contiguous over keys: pair-row c / 2 interleaves rows c, c + 1.
            let feature = |c: usize| -> &[f32] {
                if c < d {
                    &k.data[g * k.head_stride + c * k.row_stride..][..t]
                } else {
                    &[]
                }
            };
            for c2 in 0..kp {
                interleave(
                    dot,
                    feature(2 * c2),
                    feature(2 * c2 + 1),
                    &mut kt[c2 * geo.ldk..c2 * geo.ldk + tq],
                );
            }
        }
    }
    for j2 in 0..tq / 2 {
        prefetch(&p.v, g, 2 * j2 + AHEAD);
        prefetch(&p.v, g, 2 * j2 + AHEAD + 1);
        let key = |j: usize| if j < t { p.v.row(g, j) } else { &[] };
        interleave(
            dot,
            key(2 * j2),
            key(2 * j2 + 1),
            &mut vt[j2 * geo.ldv..j2 * geo.ldv + geo.dv],
        );
    }
}

/// [`super::rotate`], vectorized where the CPU has AVX-512.
fn rotate(dot: Dot, x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if dot != Dot::Scalar {
        // SAFETY: AVX-512 detected (`dot`).
        return unsafe { super::simd::rotate(x, cos, sin, out) };
    }
    super::rotate(x, cos, sin, out)
}

/// Rows ahead that [`prefetch`] asks for.
const AHEAD: usize = 8;

/// Asks for row `(h, j)` of `v` (when there is one) ahead of its use: rows read out of a fused
/// projection are a whole projection row apart, too far for the hardware prefetcher, and
/// reading them one by one waits on memory (it was the costliest part of a vision layer's
/// attention before).
#[inline(always)]
fn prefetch(v: &View, h: usize, j: usize) {
    #[cfg(target_arch = "x86_64")]
    if j < v.len {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let row = v.row(h, j);
        for c in (0..row.len()).step_by(16).chain([row.len() - 1]) {
            // SAFETY: a prefetch of an address inside `row`; it never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row[c..].as_ptr() as *const i8) };
        }
    }
}

/// `dst = bf16(src)` (RNE), equal lengths.
fn to_bf16(dot: Dot, src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if dot != Dot::Scalar {
        // SAFETY: AVX-512 BF16 detected (`dot`).
        return unsafe { super::simd::to_bf16(src, dst) };
    }
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = bf16::from_f32(x).to_bits();
    }
}

/// `dst[i] = (bf16(x0[i]), bf16(x1[i]))` as a pair (low half first), entries past a slice's
/// end 0.
fn interleave(dot: Dot, x0: &[f32], x1: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if dot != Dot::Scalar {
        // SAFETY: AVX-512 BF16 detected (`dot`).
        return unsafe { super::simd::interleave(x0, x1, dst) };
    }
    let bits = |x: &[f32], i: usize| x.get(i).map_or(0, |&v| bf16::from_f32(v).to_bits() as u32);
    for (i, d) in dst.iter_mut().enumerate() {
        *d = bits(x0, i) | bits(x1, i) << 16;
    }
}

/// The softmax of `row[a..b]` (scaled) as bf16 probabilities in `p` (0 outside `a..b`, `p`
/// no longer than `row`); returns the sum of the f32 exponentials (NaN when no entry is finite
/// or one is NaN).
fn softmax(dot: Dot, row: &mut [f32], a: usize, b: usize, scale: f32, p: &mut [u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if dot != Dot::Scalar {
        // SAFETY: AVX-512 BF16 detected (`dot`); `a ≤ b ≤ p.len() ≤ row.len()`, a multiple of 16.
        return unsafe { super::simd::softmax_bf16(row, a, b, scale, p) };
    }
    let sum = super::softmax_masked(&mut row[..p.len()], a, b, scale, |_| true);
    to_bf16(dot, &row[..p.len()], p);
    sum
}

/// `C[m, n] = A[m, 2·kp] · B[2·kp, n]` on bf16 pairs (`A` rows `lda` pairs apart, `B` pair-rows
/// `ldb` apart, `C` rows `ldc` floats apart); `m`, `n` and `kp` multiples of 16.
///
/// # Safety
///
/// The CPU has what `dot` uses; `a`, `b` and `c` are valid for `m` × `kp`, `kp` × `n` and `m` × `n`
/// elements at their strides.
#[allow(clippy::too_many_arguments)]
unsafe fn products(
    dot: Dot,
    a: *const u32,
    lda: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    n: usize,
    kp: usize,
) {
    unsafe {
        match dot {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Dot::Amx => super::amx::products(
                a as *const u8,
                lda * 4,
                b as *const u8,
                ldb * 4,
                c,
                ldc,
                m,
                n,
                kp,
            ),
            #[cfg(target_arch = "x86_64")]
            Dot::Avx512 => super::simd::products_bf16(a, lda, b, ldb, c, ldc, m, n, kp),
            _ => {
                let wide = |x: u32| (f32::from_bits(x << 16), f32::from_bits(x & 0xffff_0000));
                for i in 0..m {
                    let crow = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
                    crow.fill(0.0);
                    for kk in 0..kp {
                        let (a0, a1) = wide(*a.add(i * lda + kk));
                        let brow = std::slice::from_raw_parts(b.add(kk * ldb), n);
                        for (cv, &bv) in crow.iter_mut().zip(brow) {
                            let (b0, b1) = wide(bv);
                            *cv += a0 * b0 + a1 * b1;
                        }
                    }
                }
            }
        }
    }
}

// A block's rows are whole tiles of 16 (and mostly pairs of them).
const _: () = assert!(BLOCK_ROWS.is_multiple_of(32));
