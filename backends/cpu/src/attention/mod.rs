//! Scaled dot-product attention for the CPU engine: `softmax(mask(q·kᵀ·scale))·v` per head,
//! over operands read in place through strides ([`View`]): a head-major `[h, len, d]` tensor,
//! the q/k/v columns of a fused projection's `[len, 3·h·d]` output, or a KV cache preallocated
//! as `[h, capacity, d]`. Two arithmetics ([`Precision`]): f32 throughout, and bf16 products
//! with f32 accumulation for bf16 checkpoints.
//!
//! The f32 arithmetic follows the reference executor's `attention` (`ir/reference/src/fused.rs`):
//! optional RoPE on q (and k) rows (`x·cos + rotate_half(x)·sin`, in f32, same order), scores
//! `(q·k)·scale` with f32 accumulation, masked entries `-inf`, a two-pass softmax (row max,
//! `exp(s − max)`, sum), and `p·v`. Two deliberate differences, each within an ulp or two per
//! element: the sum is accumulated in f32 lanes (the reference uses f64), and the division by
//! the sum is applied to the `p·v` row instead of to every `p` (one division per output element
//! rather than one per score). A row with no finite score, or a NaN score, is NaN, as the
//! reference's.
//!
//! The bf16 arithmetic (`bf16.rs`) is what a bf16 model's attention computes: q and k (after
//! RoPE in f32), v and the probabilities rounded to bf16, both products accumulated in f32 on
//! AMX tiles (`tdpbf16ps`, `amx.rs`) or with `vdpbf16ps`, the softmax in f32 (its `exp` a cheaper
//! polynomial, within 5e-5 where the probabilities are then rounded to 4e-3). Queries fewer
//! than [`BF16_MIN_QUERIES`] (a decode step) keep the f32 arithmetic.
//!
//! # Blocking
//!
//! The query heads that share a kv head (GQA) are stacked: for kv head `g`, the rows are
//! `(head, query)` pairs, `group · n` of them, and for each block of up to [`BLOCK_ROWS`] rows
//! the kernel computes the score block `S = Q·Kᵀ` over the keys any row of the block may see (a
//! causal block stops at its last row's position; a segment block spans its rows' segments),
//! the softmax in place, and `O = P·V`. On the f32 path, per kv head, `k` is transposed once
//! into `[d, keys]` and `v` copied into rows of `d` rounded up to 16, both zero-padded, so the
//! two products are the same register-blocked micro-kernel (8 rows × up to 48 columns, `A`
//! broadcast, `B` rows loaded) without edge masks; the bf16 path lays them out for its tiles
//! instead (see `bf16.rs`). Threads take contiguous ranges of (kv head, row block) units; small
//! problems (a decode step) run on the calling thread.

mod amx;
mod bf16;
mod simd;

use super::threads::{self, SyncPtr};
use super::Backend;
use bf16::Dot;

/// Rows of `Q` per block (a multiple of the micro-kernel's 8).
pub const BLOCK_ROWS: usize = 64;
/// Below this many multiply-adds the work stays on the calling thread (a fork-join costs about a
/// microsecond; a decode step's attention per layer, ~10⁶ multiply-adds, still splits).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A `[heads, len, d]` f32 operand read in place: element `(h, j, c)` is
/// `data[h * head_stride + j * row_stride + c]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub heads: usize,
    pub len: usize,
    pub d: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl<'a> View<'a> {
    /// A contiguous `[heads, len, d]` tensor.
    pub fn contiguous(data: &'a [f32], heads: usize, len: usize, d: usize) -> View<'a> {
        View {
            data,
            heads,
            len,
            d,
            head_stride: len * d,
            row_stride: d,
        }
    }

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        if self.heads == 0 || self.len == 0 || self.d == 0 {
            return true;
        }
        let last = (self.heads - 1) * self.head_stride + (self.len - 1) * self.row_stride + self.d;
        last <= self.data.len()
    }

    #[inline(always)]
    fn row(&self, h: usize, j: usize) -> &'a [f32] {
        let at = h * self.head_stride + j * self.row_stride;
        &self.data[at..at + self.d]
    }
}

/// The keys `[heads, t, d]`: rows like q and v, or stored transposed (a KV cache kept as
/// `[heads, d, capacity]`, so a decode step transposes nothing): in a `Transposed` view
/// element `(h, j, c)` is `data[h * head_stride + c * row_stride + j]`, and `row_stride` (the
/// capacity) leaves room for `t` rounded up to 16 (the kernel reads whole vectors of keys and
/// ignores the ones past `t`).
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    Rows(View<'a>),
    Transposed(View<'a>),
}

impl<'a> Keys<'a> {
    fn view(&self) -> &View<'a> {
        match self {
            Keys::Rows(v) | Keys::Transposed(v) => v,
        }
    }

    fn fits(&self) -> bool {
        match self {
            Keys::Rows(v) => v.fits(),
            Keys::Transposed(v) => {
                v.heads == 0
                    || v.d == 0
                    || (v.row_stride >= padded(v.len)
                        && (v.heads - 1) * v.head_stride + (v.d - 1) * v.row_stride + padded(v.len)
                            <= v.data.len())
            }
        }
    }
}

/// Where the output `[hq, n, d]` goes: element `(h, i, c)` at
/// `h * head_stride + i * row_stride + c` (`head_stride = n·d, row_stride = d` is the contiguous tensor; `head_stride = d,
/// row_stride = hq·d` writes the `[n, hq·d]` layout the output projection reads).
#[derive(Debug)]
pub struct OutView<'a> {
    pub data: &'a mut [f32],
    pub head_stride: usize,
    pub row_stride: usize,
}

/// Which keys a query may see.
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    Full,
    /// Query `i` sees keys `j ≤ past + i` (`past = keys − queries` for a prefill or decode step).
    Causal {
        past: usize,
    },
    /// Query `i` sees key `j` iff `segments[i] == segments[j]` (queries and keys are the same
    /// positions).
    Segments(&'a [i64]),
}

/// RoPE tables `[n, d]` (one row per query position, shared by the heads), applied to the q
/// rows and, with `keys`, to the k rows (then keys and queries are the same positions).
#[derive(Clone, Copy, Debug)]
pub struct Rope<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub queries: bool,
    pub keys: bool,
}

/// The arithmetic of the two products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands, f32 accumulation: the reference's arithmetic (see the module doc).
    #[default]
    F32,
    /// q and k (after RoPE), v and the probabilities rounded to bf16, f32 accumulation, the
    /// softmax in f32 (see the module doc). Problems of fewer than [`BF16_MIN_QUERIES`] queries
    /// (a decode step) still run in f32.
    Bf16,
}

/// Fewest queries the bf16 path takes: below a tile of rows, a step is bound by reading the
/// f32 keys and values, which rounding them would only add to.
pub const BF16_MIN_QUERIES: usize = 16;

/// `out = attention(q, k, v)`; `q` is `[hq, n, d]`, `k` and `v` are `[hk, t, d]` with `hk`
/// dividing `hq`. Errors name the first operand that does not fit. f32 products, AVX-512 where
/// the CPU has it.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: View,
    k: Keys,
    v: View,
    rope: Option<Rope>,
    mask: Mask,
    scale: f32,
    out: OutView,
    threads: usize,
) -> Result<(), String> {
    attention_with(
        q,
        k,
        v,
        rope,
        mask,
        scale,
        out,
        threads,
        Precision::F32,
        Backend::Auto,
    )
}

/// [`attention`] in a given arithmetic and implementation: with [`Backend::Auto`] the bf16
/// products run on AMX where the CPU has it, else with `vdpbf16ps`; [`Backend::Avx512`] never
/// uses AMX; [`Backend::Scalar`] is the portable code (tests compare them).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    q: View,
    k: Keys,
    v: View,
    rope: Option<Rope>,
    mask: Mask,
    scale: f32,
    out: OutView,
    threads: usize,
    precision: Precision,
    backend: Backend,
) -> Result<(), String> {
    let p = Problem::new(q, k, v, rope, mask, scale, &out)?;
    let simd = super::use_simd(backend);
    let path = match precision {
        Precision::Bf16 if p.q.len >= BF16_MIN_QUERIES => Path::Bf16(match backend {
            Backend::Auto if simd && super::amx::available() => Dot::Amx,
            _ if simd => Dot::Avx512,
            _ => Dot::Scalar,
        }),
        _ => Path::F32 { simd },
    };
    run(&p, out, threads, path);
    Ok(())
}

/// A checked attention problem.
struct Problem<'a> {
    q: View<'a>,
    k: Keys<'a>,
    /// The keys' extents (the view inside `k`, whatever its layout).
    kd: View<'a>,
    v: View<'a>,
    rope: Option<Rope<'a>>,
    mask: Mask<'a>,
    scale: f32,
    /// Query heads per kv head.
    group: usize,
    /// Per position, the first and one-past-last index of its segment (Segments masks).
    seg_range: Vec<(usize, usize)>,
    /// Whether every segment is one contiguous run (then the ranges are the whole mask).
    seg_contiguous: bool,
}

impl<'a> Problem<'a> {
    fn new(
        q: View<'a>,
        k: Keys<'a>,
        v: View<'a>,
        rope: Option<Rope<'a>>,
        mask: Mask<'a>,
        scale: f32,
        out: &OutView,
    ) -> Result<Problem<'a>, String> {
        let (hq, n, d) = (q.heads, q.len, q.d);
        let kd = *k.view();
        let (hk, t) = (kd.heads, kd.len);
        if kd.d != d || v.d != d || v.heads != hk || v.len != t {
            return Err(format!(
                "k [{hk}, {t}, {}] and v [{}, {}, {}] must match q's head_dim {d}",
                kd.d, v.heads, v.len, v.d
            ));
        }
        if hk == 0 || hq % hk != 0 {
            return Err(format!("{hq} query heads cannot share {hk} kv heads"));
        }
        for (what, fits, view) in [
            ("q", q.fits(), &q),
            ("k", k.fits(), &kd),
            ("v", v.fits(), &v),
        ] {
            if !fits {
                return Err(format!(
                    "{what} view [{}, {}, {}] runs past its {} elements",
                    view.heads,
                    view.len,
                    view.d,
                    view.data.len()
                ));
            }
        }
        let out_fits = hq == 0
            || n == 0
            || (hq - 1) * out.head_stride + (n - 1) * out.row_stride + d <= out.data.len();
        if !out_fits {
            return Err(format!(
                "output of [{hq}, {n}, {d}] does not fit {} elements",
                out.data.len()
            ));
        }
        if let Some(r) = &rope {
            if d % 2 != 0 || r.cos.len() != n * d || r.sin.len() != n * d {
                return Err(format!(
                    "rope tables must be [{n}, {d}] with an even head_dim"
                ));
            }
            if r.keys && t != n {
                return Err(format!(
                    "key rotation needs as many keys ({t}) as queries ({n})"
                ));
            }
            if r.keys && matches!(k, Keys::Transposed(_)) {
                return Err(
                    "stored (transposed) keys cannot be rotated here; rotate them when stored"
                        .into(),
                );
            }
        }
        let (mut seg_range, mut seg_contiguous) = (Vec::new(), true);
        match mask {
            Mask::Causal { past } if t < n || past != t - n => {
                return Err(format!(
                    "causal attention of {n} queries over {t} keys needs past = {}",
                    t.saturating_sub(n)
                ));
            }
            Mask::Segments(s) => {
                if s.len() != n || t != n {
                    return Err(format!(
                        "segments must have one entry per position ({n}), with as many keys ({t})"
                    ));
                }
                (seg_range, seg_contiguous) = segment_ranges(s);
            }
            _ => {}
        }
        Ok(Problem {
            q,
            k,
            kd,
            v,
            rope,
            mask,
            scale,
            group: hq / hk,
            seg_range,
            seg_contiguous,
        })
    }

    /// Keys query `i` may see, as a range (inside it, Segments masks may still exclude keys
    /// when a segment is not contiguous).
    #[inline]
    fn keys_of(&self, i: usize) -> (usize, usize) {
        match self.mask {
            Mask::Full => (0, self.kd.len),
            Mask::Causal { past } => (0, (past + i + 1).min(self.kd.len)),
            Mask::Segments(_) => self.seg_range[i],
        }
    }

    /// The keys any of rows `r0..r1` (of one kv head) sees: the first, and one past the last.
    fn key_span(&self, r0: usize, r1: usize) -> (usize, usize) {
        let n = self.q.len;
        let (mut lo, mut hi) = (usize::MAX, 0);
        for r in r0..r1 {
            let (a, b) = self.keys_of(r % n);
            lo = lo.min(a);
            hi = hi.max(b);
        }
        (lo, hi)
    }

    /// Whether query `i` sees key `j`, given `j` is inside `keys_of(i)`.
    #[inline]
    fn sees(&self, i: usize, j: usize) -> bool {
        match self.mask {
            Mask::Segments(s) if !self.seg_contiguous => s[i] == s[j],
            _ => true,
        }
    }
}

/// Per position the `[first, last + 1)` of the positions with its segment id, and whether each
/// id's positions are one contiguous run.
fn segment_ranges(s: &[i64]) -> (Vec<(usize, usize)>, bool) {
    let mut span: std::collections::HashMap<i64, (usize, usize, usize)> =
        std::collections::HashMap::new();
    for (j, &id) in s.iter().enumerate() {
        let e = span.entry(id).or_insert((j, j + 1, 0));
        e.1 = j + 1;
        e.2 += 1;
    }
    let contiguous = span.values().all(|&(a, b, count)| b - a == count);
    (
        s.iter().map(|id| (span[id].0, span[id].1)).collect(),
        contiguous,
    )
}

/// Per-thread buffers, grown as needed and kept for the thread's life (the kernel threads are
/// a persistent pool), so a decode step allocates nothing.
#[derive(Default)]
struct Scratch {
    /// kv head whose keys and values are ready (`kt` / `vp` when they had to be copied).
    loaded: Option<usize>,
    /// `Kᵀ` of the kv head, `[d, tp]` (keys given as rows).
    kt: Vec<f32>,
    /// `V` of the kv head, `[t, dp]` (when `d` is not a whole number of vectors).
    vp: Vec<f32>,
    /// Q block, `[BLOCK_ROWS, d]`.
    qb: Vec<f32>,
    /// Scores then probabilities, `[BLOCK_ROWS, tp]`.
    s: Vec<f32>,
    /// `P·V`, `[BLOCK_ROWS, dp]`.
    o: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// Keys rounded up to whole vectors.
fn padded(x: usize) -> usize {
    x.div_ceil(16) * 16
}

/// Which block kernel runs.
#[derive(Clone, Copy)]
enum Path {
    F32 { simd: bool },
    Bf16(Dot),
}

/// Where the output goes (an [`OutView`] the threads share).
#[derive(Clone, Copy)]
struct Out {
    ptr: SyncPtr<f32>,
    head_stride: usize,
    row_stride: usize,
}

fn run(p: &Problem, out: OutView, threads: usize, path: Path) {
    let (hk, n, t, d) = (p.kd.heads, p.q.len, p.kd.len, p.q.d);
    let rows = p.group * n;
    if rows == 0 || hk == 0 {
        return;
    }
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let units = hk * blocks;
    let macs = p.q.heads * n * t * d * 2;
    let threads = if macs < PARALLEL_MIN_MACS {
        1
    } else {
        threads.clamp(1, units)
    };
    let out = Out {
        ptr: SyncPtr(out.data.as_mut_ptr()),
        head_stride: out.head_stride,
        row_stride: out.row_stride,
    };
    threads::run(threads, |tid| {
        let units = threads::chunk(units, threads, tid);
        // SAFETY: output rows (head, query) are written by exactly one unit: units own disjoint
        // row ranges of disjoint kv heads, and the strides map distinct (head, query) pairs to
        // disjoint d-element runs (checked in `Problem::new` to fit). AMX was detected for
        // `Dot::Amx`.
        unsafe {
            match path {
                Path::F32 { simd } => share(p, units, blocks, out, simd),
                Path::Bf16(dot) => bf16::share(p, units, blocks, out, dot),
            }
        }
    });
}

/// One thread's share of (kv head, row block) units on the f32 path.
///
/// # Safety
///
/// Where `simd`, CPU must have AVX-512F (the caller checks it); `out` is valid for the whole `[hq,
/// n, d]` output and no other thread is given the same units.
unsafe fn share(p: &Problem, units: std::ops::Range<usize>, blocks: usize, out: Out, simd: bool) {
    unsafe {
        let (t, d) = (p.kd.len, p.q.d);
        let rows = p.group * p.q.len;
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let (tp, dp) = (padded(t), padded(d));
            grow(&mut sc.qb, BLOCK_ROWS * d);
            grow(&mut sc.s, BLOCK_ROWS * tp);
            grow(&mut sc.o, BLOCK_ROWS * dp);
            sc.loaded = None;
            for unit in units {
                let (g, b) = (unit / blocks, unit % blocks);
                let r0 = b * BLOCK_ROWS;
                block(p, g, r0, (r0 + BLOCK_ROWS).min(rows), sc, out, simd);
            }
        })
    }
}

/// Rows `r0..r1` of kv head `g` (row `r` is query head `g·group + r / n`, query `r % n`).
///
/// # Safety
///
/// Where `simd`, CPU must have AVX-512F (the caller checks it); `out` is valid for the rows
/// `r0..r1` of kv head `g` and no other thread writes them.
unsafe fn block(
    p: &Problem,
    g: usize,
    r0: usize,
    r1: usize,
    sc: &mut Scratch,
    out: Out,
    simd: bool,
) {
    unsafe {
        let (n, t, d) = (p.q.len, p.kd.len, p.q.d);
        let (tp, dp) = (padded(t), padded(d));
        if sc.loaded != Some(g) {
            load_kv(p, g, sc, tp, dp);
            sc.loaded = Some(g);
        }
        // Kᵀ `[d, ≥ tp]` and V `[t, dp]` of this kv head, with their row strides.
        let (kt, ldk): (&[f32], usize) = match p.k {
            Keys::Transposed(v) => (&v.data[g * v.head_stride..], v.row_stride),
            Keys::Rows(_) => (&sc.kt, tp),
        };
        let (vv, ldv): (&[f32], usize) = if d == dp {
            (&p.v.data[g * p.v.head_stride..], p.v.row_stride)
        } else {
            (&sc.vp, dp)
        };
        let m = r1 - r0;
        let mp = m.div_ceil(8) * 8;
        // Q rows (rotated), zero rows up to the micro-kernel's multiple of 8.
        for (rr, dst) in sc.qb.chunks_mut(d).take(mp).enumerate() {
            if rr >= m {
                dst.fill(0.0);
                continue;
            }
            let r = r0 + rr;
            let (h, i) = (g * p.group + r / n, r % n);
            let src = p.q.row(h, i);
            match p.rope.filter(|r| r.queries) {
                Some(rope) => rotate(
                    src,
                    &rope.cos[i * d..(i + 1) * d],
                    &rope.sin[i * d..(i + 1) * d],
                    dst,
                ),
                None => dst.copy_from_slice(src),
            }
        }
        // The keys any row of the block sees; the scores cover them widened to whole vectors.
        let (lo, hi) = p.key_span(r0, r1);
        let lo = lo.min(hi) / 16 * 16;
        let end = hi;
        let hi = padded(hi).min(tp);
        let span = hi - lo;
        // S = Q·Kᵀ over keys lo..hi.
        products(simd, &sc.qb, d, &kt[lo..], ldk, &mut sc.s, tp, mp, span, d);
        // Softmax rows in place (unnormalized: the sum divides the output row).
        let mut sums = [0f32; BLOCK_ROWS];
        for (rr, sum) in sums.iter_mut().enumerate().take(mp) {
            let row = &mut sc.s[rr * tp..rr * tp + span];
            if rr >= m {
                row.fill(0.0);
                continue;
            }
            let i = (r0 + rr) % n;
            let (a, b) = p.keys_of(i);
            let (a, b) = (a.max(lo) - lo, b.min(hi).max(lo) - lo);
            let allowed = |j: usize| p.sees(i, lo + j);
            *sum = if p.seg_contiguous || !matches!(p.mask, Mask::Segments(_)) {
                softmax_range(simd, row, a, b, p.scale)
            } else {
                softmax_masked(row, a, b, p.scale, allowed)
            };
        }
        // O = P·V over the keys that exist (no value row past `t` is read).
        products(
            simd,
            &sc.s,
            tp,
            &vv[lo * ldv..],
            ldv,
            &mut sc.o,
            dp,
            mp,
            dp,
            end - lo,
        );
        write_rows(p, g, r0, m, &sc.o, dp, &sums, out, true);
    }
}

/// `out` rows of block rows `r0..r0 + m` of kv head `g`: row `rr` of `o` (`ldo` apart) over
/// its softmax sum, divided (`exact`) or multiplied by the reciprocal (the bf16 path, where an
/// ulp is far below its rounding and a division per element is not).
///
/// # Safety
/// The rows are this unit's (see [`run`]).
#[allow(clippy::too_many_arguments)]
unsafe fn write_rows(
    p: &Problem,
    g: usize,
    r0: usize,
    m: usize,
    o: &[f32],
    ldo: usize,
    sums: &[f32],
    out: Out,
    exact: bool,
) {
    unsafe {
        let (n, d) = (p.q.len, p.q.d);
        for rr in 0..m {
            let r = r0 + rr;
            let (h, i) = (g * p.group + r / n, r % n);
            let dst = std::slice::from_raw_parts_mut(
                out.ptr.get().add(h * out.head_stride + i * out.row_stride),
                d,
            );
            let (sum, src) = (sums[rr], &o[rr * ldo..rr * ldo + d]);
            if exact {
                for (o, &x) in dst.iter_mut().zip(src) {
                    *o = x / sum;
                }
            } else {
                let inv = 1.0 / sum;
                for (o, &x) in dst.iter_mut().zip(src) {
                    *o = x * inv;
                }
            }
        }
    }
}

/// `Kᵀ` (rotated when the keys are) and `V` of kv head `g` into the padded scratch layouts,
/// where the kernel cannot read them in place.
fn load_kv(p: &Problem, g: usize, sc: &mut Scratch, tp: usize, dp: usize) {
    let (t, d) = (p.kd.len, p.q.d);
    if let Keys::Rows(k) = p.k {
        grow(&mut sc.kt, d * tp);
        let mut rotated = vec![0f32; if p.rope.is_some_and(|r| r.keys) { d } else { 0 }];
        for j in 0..tp {
            if j >= t {
                for c in 0..d {
                    sc.kt[c * tp + j] = 0.0;
                }
                continue;
            }
            let mut krow = k.row(g, j);
            if let Some(rope) = p.rope.filter(|r| r.keys) {
                rotate(
                    krow,
                    &rope.cos[j * d..(j + 1) * d],
                    &rope.sin[j * d..(j + 1) * d],
                    &mut rotated,
                );
                krow = &rotated;
            }
            for (c, &x) in krow.iter().enumerate() {
                sc.kt[c * tp + j] = x;
            }
        }
    }
    if d != dp {
        grow(&mut sc.vp, t * dp);
        for j in 0..t {
            let vrow = &mut sc.vp[j * dp..(j + 1) * dp];
            vrow[..d].copy_from_slice(p.v.row(g, j));
            vrow[d..].fill(0.0);
        }
    }
}

/// `x·cos + rotate_half(x)·sin`, `rotate_half(x) = concat(−x[d/2..], x[..d/2])`, as the
/// reference's `rope_in_place` rounds it (`x`, the tables and `out` have the same even length).
#[inline(always)]
pub fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    // Two branch-free halves, so the loops vectorize.
    let h = x.len() / 2;
    let (x0, x1) = x.split_at(h);
    let (o0, o1) = out.split_at_mut(h);
    for j in 0..h {
        o0[j] = x0[j] * cos[j] + -x1[j] * sin[j];
        o1[j] = x1[j] * cos[h + j] + x0[j] * sin[h + j];
    }
}

/// `C[m, n] = A[m, kc] · B[kc, n]` (row-major with leading dims; `m` a multiple of 8, `n` of 16).
#[allow(clippy::too_many_arguments)]
fn products(
    simd: bool,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    m: usize,
    n: usize,
    kc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the AVX-512 features were detected (`simd`), and the extents are in bounds:
        // callers pass buffers of at least `m` rows of their leading dims, `n ≤ ldb, ldc`.
        unsafe { simd::products(a, lda, b, ldb, c, ldc, m, n, kc) };
        return;
    }
    let _ = simd;
    for i in 0..m {
        let crow = &mut c[i * ldc..i * ldc + n];
        crow.fill(0.0);
        for kk in 0..kc {
            let x = a[i * lda + kk];
            for (cv, &bv) in crow.iter_mut().zip(&b[kk * ldb..kk * ldb + n]) {
                *cv += x * bv;
            }
        }
    }
}

/// Scales `row[a..b]`, takes its max, writes `exp(s − max)` there and 0 elsewhere; returns the
/// sum (NaN when no entry is finite or one is NaN, which makes the output row NaN).
fn softmax_range(simd: bool, row: &mut [f32], a: usize, b: usize, scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX-512 detected; `a ≤ b ≤ row.len()`.
        return unsafe { simd::softmax_range(row, a, b, scale) };
    }
    let _ = simd;
    softmax_masked(row, a, b, scale, |_| true)
}

/// [`softmax_range`] with a per-key mask inside `a..b`, on the scalar path.
fn softmax_masked(
    row: &mut [f32],
    a: usize,
    b: usize,
    scale: f32,
    allowed: impl Fn(usize) -> bool,
) -> f32 {
    let mut max = f32::NEG_INFINITY;
    let mut nan = false;
    for (j, s) in row.iter_mut().enumerate() {
        if j >= a && j < b && allowed(j) {
            *s *= scale;
            nan |= s.is_nan();
            max = max.max(*s);
        } else {
            *s = f32::NEG_INFINITY;
        }
    }
    if nan || max == f32::NEG_INFINITY {
        return f32::NAN;
    }
    let mut sum = 0f32;
    for s in row.iter_mut() {
        *s = if *s == f32::NEG_INFINITY {
            0.0
        } else {
            ((*s - max) as f64).exp() as f32
        };
        sum += *s;
    }
    sum
}
