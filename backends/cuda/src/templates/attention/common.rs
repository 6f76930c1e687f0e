//! Pieces every attention kernel shares: what an instance fixes (`AttnSpec`), reading q/k through
//! the rotary tables, the key range a tile of rows may attend to, and integer helpers.

use crate::kir::{Buf, Expr, KernelBuilder, Ty};
use vl3c_ir::AttentionMask;

/// What one attention instance fixes at compile time. Lengths stay scalar parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnSpec {
    /// `F32` (plain FMA, exact enough for f32 checkpoints) or `Bf16` (tensor cores).
    pub dtype: Ty,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    /// `Causal` (LLM prefill/decode) or `Segments` (vision); no graph uses `Full`.
    pub mask: AttentionMask,
    pub rope_q: bool,
    pub rope_k: bool,
}

impl AttnSpec {
    /// Query heads sharing one kv head.
    pub fn group(&self) -> usize {
        assert!(
            self.kv_heads > 0 && self.q_heads.is_multiple_of(self.kv_heads),
            "{} q heads over {} kv heads",
            self.q_heads,
            self.kv_heads
        );
        self.q_heads / self.kv_heads
    }

    pub fn dtype_name(&self) -> &'static str {
        match self.dtype {
            Ty::F32 => "f32",
            Ty::Bf16 => "bf16",
            other => panic!("attention over {other:?} elements"),
        }
    }

    pub fn rope(&self) -> bool {
        self.rope_q || self.rope_k
    }
}

/// The buffers of q, k, v and the rotary tables, as a kernel declares them.
pub struct Inputs {
    pub q: Buf,
    pub k: Buf,
    pub v: Buf,
    /// `(cos, sin)`, each `[1, n, d]`: row `i` rotates query `i` (and key `i` where keys rotate).
    pub rope: Option<(Buf, Buf)>,
}

pub fn declare_inputs(b: &mut KernelBuilder, spec: &AttnSpec) -> Inputs {
    use crate::kir::Access::Read;
    let q = b.buffer("q", spec.dtype, Read);
    let k = b.buffer("k", spec.dtype, Read);
    let v = b.buffer("v", spec.dtype, Read);
    let rope = spec.rope().then(|| {
        (
            b.buffer("cos", spec.dtype, Read),
            b.buffer("sin", spec.dtype, Read),
        )
    });
    Inputs { q, k, v, rope }
}

/// An element as f32, whatever the buffer holds.
pub fn load_f32(b: &KernelBuilder, buf: Buf, index: Expr) -> Expr {
    let e = Expr::load(buf, index);
    if b.kernel().buf_elem(buf) == Ty::F32 {
        e
    } else {
        e.cast(Ty::F32)
    }
}

/// Element `col` of the row starting at `row_base`, rotated by row `pos` of the rotary tables
/// when `tables` is given: `x[c]·cos[c] + rot(x)[c]·sin[c]` with `rot(x) = (-x[h..], x[..h])`, the
/// reference's `rope_in_place`. `col` may be a runtime value.
pub fn rotated(
    b: &KernelBuilder,
    x: Buf,
    row_base: &Expr,
    col: &Expr,
    pos: &Expr,
    d: usize,
    tables: Option<(Buf, Buf)>,
) -> Expr {
    let own = load_f32(b, x, row_base + col);
    let Some((cos, sin)) = tables else { return own };
    let half = Expr::i64(d as i64 / 2);
    let first_half = col.clone().lt(half.clone());
    let partner_col = Expr::select(first_half.clone(), col + &half, col - &half);
    let partner = load_f32(b, x, row_base + &partner_col);
    let rot = Expr::select(first_half, -partner.clone(), partner);
    let table_index = pos * &Expr::i64(d as i64) + col.clone();
    let c = load_f32(b, cos, table_index.clone());
    let s = load_f32(b, sin, table_index);
    Expr::fma(rot, s, own * c)
}

pub fn ceil_div(a: Expr, b: Expr) -> Expr {
    (a + b.clone() - Expr::i64(1)) / b
}

pub const NEG_INF: f32 = f32::NEG_INFINITY;

/// The key range `[lo, hi)` a tile of packed rows `[first_row, first_row + rows)` may attend to:
/// for causal masks every key up to the last row's position; for segments the segments of the
/// tile's first and last rows and all between (segment ids are non-decreasing, each segment a
/// contiguous run, as `segment_ids` makes them), found by binary search so no dense mask exists.
pub struct KeyRange {
    pub lo: Expr,
    pub hi: Expr,
}

pub struct Lengths {
    /// Query positions.
    pub n: Expr,
    /// Keys.
    pub t: Expr,
    /// Keys before the first query (`t - n`): query `i` sits at absolute position `past + i`.
    pub past: Expr,
    /// Rows per kv head in the k and v buffers (`>= t`): the LLM reads the engine's cache, which
    /// is allocated once at its maximum length.
    pub kv_rows: Expr,
}

/// The scalar parameters that carry the lengths: `n_patches` for vision (keys are the queries),
/// `seq_len` and `past_len` for the LLM (keys are the cache plus the new tokens) and
/// `kv_capacity`, the cache's rows per kv head.
pub fn declare_lengths(b: &mut KernelBuilder, spec: &AttnSpec) -> Lengths {
    match spec.mask {
        AttentionMask::Segments => {
            let n = b.scalar("n_patches", Ty::I64);
            Lengths {
                n: n.clone(),
                t: n.clone(),
                past: Expr::i64(0),
                kv_rows: n,
            }
        }
        AttentionMask::Causal => {
            let n = b.scalar("seq_len", Ty::I64);
            let past = b.scalar("past_len", Ty::I64);
            let kv_rows = b.scalar("kv_capacity", Ty::I64);
            Lengths {
                t: past.clone() + n.clone(),
                n,
                past,
                kv_rows,
            }
        }
        AttentionMask::Full => {
            panic!("no graph has full (unmasked) attention; its templates are not built")
        }
    }
}

/// `[lo, hi)` of the keys rows at positions `first_pos ..= last_pos` may see.
pub fn key_range(
    b: &mut KernelBuilder,
    spec: &AttnSpec,
    len: &Lengths,
    seg: Option<Buf>,
    first_pos: Expr,
    last_pos: Expr,
) -> KeyRange {
    match spec.mask {
        AttentionMask::Causal => {
            let hi = b.let_(
                "key_hi",
                len.t
                    .clone()
                    .min(len.past.clone() + last_pos + Expr::i64(1)),
            );
            KeyRange {
                lo: Expr::i64(0),
                hi,
            }
        }
        AttentionMask::Segments => {
            let seg = seg.expect("segment ids");
            let first_seg = b.let_("first_seg", Expr::load(seg, first_pos));
            let last_seg = b.let_("last_seg", Expr::load(seg, last_pos));
            let lo = search(b, "key_lo", seg, &len.t, first_seg, false);
            let hi = search(b, "key_hi", seg, &len.t, last_seg, true);
            KeyRange { lo, hi }
        }
        AttentionMask::Full => unreachable!("rejected by declare_lengths"),
    }
}

/// Binary search over the non-decreasing `seg[0..len)`: the first index whose id is `>= id`
/// (`upper == false`) or `> id` (`upper == true`). 63 halvings cover any i64 length.
fn search(b: &mut KernelBuilder, name: &str, seg: Buf, len: &Expr, id: Expr, upper: bool) -> Expr {
    let lo = b.var(&format!("{name}_lo"), Expr::i64(0));
    let hi = b.var(&format!("{name}_hi"), len.clone());
    b.for_(
        &format!("{name}_step"),
        Expr::i64(0),
        Expr::i64(63),
        Expr::i64(1),
        |b, _| {
            b.if_(Expr::Var(lo).lt(Expr::Var(hi)), |b| {
                let mid = b.let_("mid", (Expr::Var(lo) + Expr::Var(hi)) / Expr::i64(2));
                let at = Expr::load(seg, mid.clone());
                let go_right = if upper {
                    at.le(id.clone())
                } else {
                    at.lt(id.clone())
                };
                b.if_else(
                    go_right,
                    |b| b.assign(lo, mid.clone() + Expr::i64(1)),
                    |b| b.assign(hi, mid.clone()),
                );
            });
        },
    );
    Expr::Var(lo)
}

/// Whether query `pos` (with segment id `own_seg` for segment masks) may attend to `key`, given
/// `key < hi` already bounds the tile; `seg` reads are clamped so padded keys stay in bounds.
pub fn allowed(
    spec: &AttnSpec,
    len: &Lengths,
    seg: Option<Buf>,
    own_seg: Option<&Expr>,
    pos: &Expr,
    key: &Expr,
    hi: &Expr,
) -> Expr {
    let in_range = key.clone().lt(hi.clone());
    match spec.mask {
        AttentionMask::Causal => in_range.and(key.clone().le(len.past.clone() + pos.clone())),
        AttentionMask::Segments => {
            let key_seg = Expr::load(
                seg.expect("segment ids"),
                key.clone().min(len.t.clone() - Expr::i64(1)),
            );
            in_range.and(key_seg.eq(own_seg.expect("own segment").clone()))
        }
        AttentionMask::Full => unreachable!("rejected by declare_lengths"),
    }
}

/// `value` as the output buffer's element type.
pub fn to_dtype(value: Expr, dtype: Ty) -> Expr {
    if dtype == Ty::F32 {
        value
    } else {
        value.cast(dtype)
    }
}

/// `x` (of type `from`) as `to`.
fn convert(x: Expr, from: Ty, to: Ty) -> Expr {
    if from == to {
        x
    } else {
        x.cast(to)
    }
}

/// Where a key tile comes from and goes.
pub struct KvTile {
    /// Shared `[keys, stride]` arrays (`stride >= d`); their element type is what the kernel
    /// computes with.
    pub ks: Buf,
    pub vs: Buf,
    pub keys: usize,
    pub stride: usize,
    /// Threads of the CTA, all of which take part.
    pub threads: i64,
    /// Rotary tables when keys rotate while loading.
    pub k_tables: Option<(Buf, Buf)>,
}

/// The row stride of a bf16 `[keys, d]` tile whose rows the mma fragments read eight at a time
/// (lanes `groupID` 0..7): `≡ 8 (mod 64)` elements puts those rows 4 banks apart, so the 32 lanes
/// hit 32 banks. d = 72 already is; 128 becomes 136.
pub fn conflict_free_stride(d: usize) -> usize {
    d + (8 + 64 - d % 64) % 64
}

/// Loads keys `kb .. kb + keys` (rows of `[.., d]` from `kv_head_base`) into shared memory, four
/// consecutive elements per step (d is a multiple of 4, so a step never crosses a row) with
/// vector loads and stores; keys past `t` are zeros, so no lane reads uninitialised memory.
#[allow(clippy::too_many_arguments)]
pub fn load_kv_tile(
    b: &mut KernelBuilder,
    inp: &Inputs,
    tile: &KvTile,
    d: usize,
    kb: &Expr,
    kv_head_base: &Expr,
    t: &Expr,
    tid: &Expr,
) {
    const WIDTH: usize = 4;
    assert!(
        d.is_multiple_of(WIDTH),
        "head_dim {d} must split into vectors of {WIDTH}"
    );
    let src = b.kernel().buf_elem(inp.k);
    let dst = b.kernel().buf_elem(tile.ks);
    let d64 = Expr::i64(d as i64);
    let step = Expr::i64(tile.threads * WIDTH as i64);
    b.for_(
        "e",
        tid.clone() * Expr::i64(WIDTH as i64),
        Expr::i64((tile.keys * d) as i64),
        step,
        |b, e| {
            let key = b.let_("key", kb.clone() + e.clone() / d64.clone());
            let col = b.let_("col", e.clone() % d64.clone());
            let slot = b.let_(
                "slot",
                (e.clone() / d64.clone()) * Expr::i64(tile.stride as i64) + col.clone(),
            );
            let at = b.let_(
                "kv_at",
                (kv_head_base.clone() + key.clone()) * d64.clone() + col.clone(),
            );
            b.if_else(
                key.clone().lt(t.clone()),
                |b| {
                    let kvals: Vec<Expr> = match tile.k_tables {
                        Some(tables) => {
                            let row = at.clone() - col.clone();
                            (0..WIDTH)
                                .map(|i| {
                                    let x = rotated(
                                        b,
                                        inp.k,
                                        &row,
                                        &(col.clone() + Expr::i64(i as i64)),
                                        &key,
                                        d,
                                        Some(tables),
                                    );
                                    convert(x, Ty::F32, dst)
                                })
                                .collect()
                        }
                        None => b
                            .load_vec("kv_k", inp.k, at.clone(), WIDTH)
                            .into_iter()
                            .map(|x| convert(x, src, dst))
                            .collect(),
                    };
                    b.store_vec(tile.ks, slot.clone(), kvals);
                    let vvals = b
                        .load_vec("kv_v", inp.v, at.clone(), WIDTH)
                        .into_iter()
                        .map(|x| convert(x, src, dst))
                        .collect();
                    b.store_vec(tile.vs, slot.clone(), vvals);
                },
                |b| {
                    let zero = convert(Expr::f32(0.0), Ty::F32, dst);
                    b.store_vec(tile.ks, slot.clone(), vec![zero.clone(); WIDTH]);
                    b.store_vec(tile.vs, slot.clone(), vec![zero; WIDTH]);
                },
            );
        },
    );
}
