//! FlashAttention-2 on the tensor cores for bf16 checkpoints: `mma.m16n8k16` bf16 → f32, with the
//! softmax and the output accumulator in f32. Vision (segment mask) and LLM prefill (causal, GQA
//! packed into rows) share it.
//!
//! One CTA of four warps owns 64 packed rows (position-major (position, head of the group)) of one
//! kv head; each warp owns 16 rows and keeps its Q fragments in registers, read straight from
//! global memory and rotated on the way. Key tiles of 64 rows of K and V sit in shared memory,
//! rows padded so the fragment reads are free of bank conflicts.
//! S = Q·Kᵀ runs over head_dim rounded up to 16: since head_dim is a multiple of 8, padding is
//! whole 8-column halves of a k-step, which are constant zero fragments (72 → 80 costs nothing to
//! load). The S accumulators of two adjacent key blocks are exactly the A fragment of P for one
//! k-step of P·V (FA2's register reuse), so P never leaves registers; P·V needs no padding as
//! head_dim is a multiple of the n8 block.

use super::common::{
    allowed, ceil_div, conflict_free_stride, declare_inputs, declare_lengths, key_range,
    load_kv_tile, rotated, to_dtype, AttnSpec, KvTile, NEG_INF,
};
use super::flash_f32::mask_name;
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty, VarId};
use vl3c_ir::AttentionMask;

const WARPS: i64 = 4;
const ROWS: i64 = 16 * WARPS;
const THREADS: i64 = 32 * WARPS;
const KEYS: usize = 64;

/// Two f32 values as one bf16x2 operand register.
fn pack(lo: Expr, hi: Expr) -> Expr {
    Expr::pack_bf16x2(lo.cast(Ty::Bf16), hi.cast(Ty::Bf16))
}

/// Two bf16 elements of a buffer as one operand register.
fn pack_loads(buf: Buf, lo: Expr, hi: Expr) -> Expr {
    Expr::pack_bf16x2(Expr::load(buf, lo), Expr::load(buf, hi))
}

/// One of the two rows a lane holds in the C fragment (`groupID` and `groupID + 8`).
struct LaneRow {
    valid: Expr,
    pos: Expr,
    q_row: Expr,
    own_seg: Option<Expr>,
}

pub fn kernel(spec: &AttnSpec) -> Kernel {
    assert_eq!(spec.dtype, Ty::Bf16, "the tensor-core kernel takes bf16");
    let d = spec.head_dim;
    assert!(
        d.is_multiple_of(8),
        "head_dim {d} must be a multiple of the n8 block"
    );
    let k_steps = d.div_ceil(16);
    let n_blocks = d / 8;
    let group = spec.group() as i64;
    let name = format!(
        "attention_{}_bf16_h{}_kv{}_d{}",
        mask_name(spec),
        spec.q_heads,
        spec.kv_heads,
        d
    );
    let mut b = KernelBuilder::new(name, [THREADS as u32, 1, 1]);
    let inp = declare_inputs(&mut b, spec);
    let seg =
        (spec.mask == AttentionMask::Segments).then(|| b.buffer("segments", Ty::I64, Access::Read));
    let out = b.buffer("out", spec.dtype, Access::Write);
    let len = declare_lengths(&mut b, spec);
    let packed_rows = len.n.clone() * Expr::i64(group);
    b.grid(
        ceil_div(packed_rows.clone(), Expr::i64(ROWS)),
        Expr::i64(spec.kv_heads as i64),
        Expr::i64(1),
    );
    let stride = conflict_free_stride(d);
    let ks = b.shared("k_tile", Ty::Bf16, KEYS * stride);
    let vs = b.shared("v_tile", Ty::Bf16, KEYS * stride);

    let tid = b.let_("tid", b.thread_idx(0).cast(Ty::I64));
    let lane = b.let_("lane", tid.clone() % Expr::i64(32));
    let g = b.let_("grp", lane.clone() / Expr::i64(4));
    let tig = b.let_("tig", lane % Expr::i64(4));
    let kvh = b.let_("kvh", b.block_idx(1).cast(Ty::I64));
    let tile_row = b.let_("tile_row", b.block_idx(0).cast(Ty::I64) * Expr::i64(ROWS));
    let warp_row = b.let_(
        "warp_row",
        tile_row.clone() + (tid.clone() / Expr::i64(32)) * Expr::i64(16) + g.clone(),
    );

    let rows: Vec<LaneRow> = (0..2)
        .map(|r| {
            let packed = b.let_(&format!("packed{r}"), warp_row.clone() + Expr::i64(8 * r));
            let valid = b.let_(&format!("valid{r}"), packed.clone().lt(packed_rows.clone()));
            let clamped = b.let_(
                &format!("clamped{r}"),
                packed.min(packed_rows.clone() - Expr::i64(1)),
            );
            let pos = b.let_(&format!("pos{r}"), clamped.clone() / Expr::i64(group));
            let head = kvh.clone() * Expr::i64(group) + clamped % Expr::i64(group);
            let q_row = b.let_(
                &format!("q_row{r}"),
                (head * len.n.clone() + pos.clone()) * Expr::i64(d as i64),
            );
            let own_seg = seg.map(|s| b.let_(&format!("own_seg{r}"), Expr::load(s, pos.clone())));
            LaneRow {
                valid,
                pos,
                q_row,
                own_seg,
            }
        })
        .collect();

    // A fragments of Q: a0 (row g, cols 2·tig..), a1 (row g+8), a2 (row g, cols +8), a3 (row g+8, +8).
    let q_tables = if spec.rope_q { inp.rope } else { None };
    let zero = Expr::u32(0);
    let q_frag: Vec<[Expr; 4]> = (0..k_steps)
        .map(|kk| {
            [(0, 0), (1, 0), (0, 8), (1, 8)].map(|(r, off)| {
                if kk * 16 + off + 8 > d {
                    return zero.clone();
                }
                let col = Expr::i64((kk * 16 + off) as i64) + tig.clone() * Expr::i64(2);
                let row = &rows[r];
                let lo = rotated(&b, inp.q, &row.q_row, &col, &row.pos, d, q_tables);
                let hi = rotated(
                    &b,
                    inp.q,
                    &row.q_row,
                    &(col.clone() + Expr::i64(1)),
                    &row.pos,
                    d,
                    q_tables,
                );
                b.let_(&format!("qa{kk}_{r}_{off}_"), pack(lo, hi))
            })
        })
        .collect();

    let first_pos = tile_row.clone() / Expr::i64(group);
    let last_pos = ((tile_row.clone() + Expr::i64(ROWS - 1)) / Expr::i64(group))
        .min(len.n.clone() - Expr::i64(1));
    let range = key_range(&mut b, spec, &len, seg, first_pos, last_pos);

    let m: Vec<VarId> = (0..2)
        .map(|r| b.var(&format!("m{r}"), Expr::f32(NEG_INF)))
        .collect();
    let l: Vec<VarId> = (0..2)
        .map(|r| b.var(&format!("l{r}"), Expr::f32(0.0)))
        .collect();
    let o: Vec<[VarId; 4]> = (0..n_blocks)
        .map(|nb| [0, 1, 2, 3].map(|e| b.var(&format!("o{nb}_{e}"), Expr::f32(0.0))))
        .collect();
    let k_tables = if spec.rope_k { inp.rope } else { None };
    let tile = KvTile {
        ks,
        vs,
        keys: KEYS,
        stride,
        threads: THREADS,
        k_tables,
    };
    let kv_head_base = kvh * len.kv_rows.clone();
    let scale = Expr::f32(spec.scale as f32);

    b.for_(
        "kb",
        range.lo.clone(),
        range.hi.clone(),
        Expr::i64(KEYS as i64),
        |b, kb| {
            b.barrier();
            load_kv_tile(b, &inp, &tile, d, &kb, &kv_head_base, &len.t, &tid);
            b.barrier();

            // S = Q·Kᵀ: B of key block nb is Kᵀ, i.e. K rows read row-major: (k = dim, n = key g).
            let mut s: Vec<[Expr; 4]> = Vec::with_capacity(KEYS / 8);
            for nb in 0..KEYS / 8 {
                let key_row = Expr::i64((nb * 8) as i64) + g.clone();
                let mut acc = [0, 1, 2, 3].map(|_| Expr::f32(0.0));
                for (kk, a) in q_frag.iter().enumerate() {
                    let frag = |off: usize| {
                        if kk * 16 + off + 8 > d {
                            return zero.clone();
                        }
                        let at = key_row.clone() * Expr::i64(stride as i64)
                            + Expr::i64((kk * 16 + off) as i64)
                            + tig.clone() * Expr::i64(2);
                        pack_loads(ks, at.clone(), at + Expr::i64(1))
                    };
                    acc = b.mma(&format!("s{nb}_{kk}_"), a.clone(), [frag(0), frag(8)], acc);
                }
                // C layout: c0/c1 row g, keys 2·tig, 2·tig+1; c2/c3 the same keys of row g+8.
                let masked = [0, 1, 2, 3].map(|e| {
                    let row = &rows[e / 2];
                    let key = kb.clone()
                        + Expr::i64((nb * 8 + e % 2) as i64)
                        + tig.clone() * Expr::i64(2);
                    let ok = allowed(
                        spec,
                        &len,
                        seg,
                        row.own_seg.as_ref(),
                        &row.pos,
                        &key,
                        &range.hi,
                    );
                    b.let_(
                        &format!("sc{nb}_{e}_"),
                        Expr::select(ok, acc[e].clone() * scale.clone(), Expr::f32(NEG_INF)),
                    )
                });
                s.push(masked);
            }

            // Online softmax per row; a row's 64 scores are spread over its quad (lanes 4g..4g+3).
            let mut p: Vec<[Expr; 4]> = vec![[0, 1, 2, 3].map(|_| Expr::f32(0.0)); KEYS / 8];
            let mut alpha = Vec::new();
            for r in 0..2 {
                let mine = s
                    .iter()
                    .flat_map(|blk| [blk[2 * r].clone(), blk[2 * r + 1].clone()]);
                let lane_max = mine
                    .clone()
                    .skip(1)
                    .fold(s[0][2 * r].clone(), |a, x| a.max(x));
                let lane_max = b.let_(&format!("lane_max{r}_"), lane_max);
                let x1 = b.shfl_xor(&format!("max{r}_x1_"), lane_max.clone(), 1);
                let m1 = b.let_(&format!("max{r}_1_"), lane_max.max(x1));
                let x2 = b.shfl_xor(&format!("max{r}_x2_"), m1.clone(), 2);
                let m_new = b.let_(&format!("m_new{r}_"), Expr::Var(m[r]).max(m1.max(x2)));
                // A row with no allowed key yet keeps m = -inf; exponents then subtract 0, not -inf.
                let base = b.let_(
                    &format!("base{r}_"),
                    Expr::select(
                        m_new.clone().eq(Expr::f32(NEG_INF)),
                        Expr::f32(0.0),
                        m_new.clone(),
                    ),
                );
                let a = b.let_(
                    &format!("alpha{r}_"),
                    (Expr::Var(m[r]) - base.clone()).exp(),
                );
                let mut sum = None::<Expr>;
                for (nb, blk) in s.iter().enumerate() {
                    for e in [2 * r, 2 * r + 1] {
                        let pe = b.let_(
                            &format!("p{nb}_{e}_"),
                            (blk[e].clone() - base.clone()).exp(),
                        );
                        sum = Some(match sum {
                            None => pe.clone(),
                            Some(acc) => acc + pe.clone(),
                        });
                        p[nb][e] = pe;
                    }
                }
                // l stays a per-lane partial sum (every lane's share rescales alike); the quad adds
                // its four shares at the end.
                b.assign(
                    l[r],
                    Expr::fma(Expr::Var(l[r]), a.clone(), sum.expect("keys in a tile")),
                );
                b.assign(m[r], m_new);
                alpha.push(a);
            }

            // O = O·alpha + P·V, k-step kk over keys 16kk..16kk+15.
            let mut acc: Vec<[Expr; 4]> = o
                .iter()
                .map(|blk| [0, 1, 2, 3].map(|e| Expr::Var(blk[e]) * alpha[e / 2].clone()))
                .collect();
            for kk in 0..KEYS / 16 {
                let (lo, hi) = (&p[2 * kk], &p[2 * kk + 1]);
                let a = [
                    b.let_(&format!("pa{kk}_0_"), pack(lo[0].clone(), lo[1].clone())),
                    b.let_(&format!("pa{kk}_1_"), pack(lo[2].clone(), lo[3].clone())),
                    b.let_(&format!("pa{kk}_2_"), pack(hi[0].clone(), hi[1].clone())),
                    b.let_(&format!("pa{kk}_3_"), pack(hi[2].clone(), hi[3].clone())),
                ];
                for (nb, blk) in acc.iter_mut().enumerate() {
                    // B = V (k = key, n = dim): keys 2·tig, 2·tig+1 (and +8) of dim column g.
                    let at = |key_off: i64| {
                        (Expr::i64(kk as i64 * 16 + key_off) + tig.clone() * Expr::i64(2))
                            * Expr::i64(stride as i64)
                            + Expr::i64((nb * 8) as i64)
                            + g.clone()
                    };
                    let b0 = pack_loads(vs, at(0), at(1));
                    let b1 = pack_loads(vs, at(8), at(9));
                    *blk = b.mma(&format!("pv{kk}_{nb}_"), a.clone(), [b0, b1], blk.clone());
                }
            }
            for (blk, vars) in acc.iter().zip(&o) {
                for e in 0..4 {
                    b.assign(vars[e], blk[e].clone());
                }
            }
        },
    );

    // C layout of O: c0/c1 row g, dims 8nb + 2·tig (+1); c2/c3 row g+8.
    for (r, row) in rows.iter().enumerate() {
        let x1 = b.shfl_xor(&format!("l{r}_x1_"), Expr::Var(l[r]), 1);
        let l1 = b.let_(&format!("l{r}_1_"), Expr::Var(l[r]) + x1);
        let x2 = b.shfl_xor(&format!("l{r}_x2_"), l1.clone(), 2);
        let inv = b.let_(&format!("inv_l{r}_"), Expr::f32(1.0) / (l1 + x2));
        b.if_(row.valid.clone(), |b| {
            for (nb, vars) in o.iter().enumerate() {
                for e in 0..2 {
                    let col = Expr::i64((nb * 8 + e) as i64) + tig.clone() * Expr::i64(2);
                    b.store(
                        out,
                        row.q_row.clone() + col,
                        to_dtype(Expr::Var(vars[2 * r + e]) * inv.clone(), spec.dtype),
                    );
                }
            }
        });
    }
    b.finish()
}
