//! FlashAttention-2 in plain f32 FMA, for f32 checkpoints (no tensor-core rounding): vision
//! (segment mask) and LLM prefill (causal, GQA packed into rows).
//!
//! One CTA owns 64 packed rows of one kv head; a packed row is (position, head of the group),
//! position-major, so the group's heads share every K/V tile the CTA loads. Four consecutive
//! threads (a quad) share a row, each holding every fourth column of q and of the output
//! accumulator (so a quad reads four consecutive shared words: no bank conflicts, whatever
//! head_dim is); a score is the quad's partial dot products summed by two shuffles. Key tiles of 32 sit in shared
//! memory; the online softmax rescales per tile.

use super::common::{
    allowed, ceil_div, declare_inputs, declare_lengths, key_range, load_kv_tile, rotated, to_dtype,
    AttnSpec, KvTile, NEG_INF,
};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::AttentionMask;

const ROWS: i64 = 64;
const QUAD: i64 = 4;
const THREADS: i64 = ROWS * QUAD;
const KEYS: usize = 32;

pub fn kernel(spec: &AttnSpec) -> Kernel {
    let d = spec.head_dim;
    assert!(
        d.is_multiple_of(QUAD as usize),
        "head_dim {d} must split over a quad"
    );
    let dq = d / QUAD as usize;
    let group = spec.group() as i64;
    let name = format!(
        "attention_{}_f32_h{}_kv{}_d{}",
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
    let ks = b.shared("k_tile", Ty::F32, KEYS * d);
    let vs = b.shared("v_tile", Ty::F32, KEYS * d);

    let tid = b.let_("tid", b.thread_idx(0).cast(Ty::I64));
    let part = b.let_("part", tid.clone() % Expr::i64(QUAD));
    let kvh = b.let_("kvh", b.block_idx(1).cast(Ty::I64));
    let tile_row = b.let_("tile_row", b.block_idx(0).cast(Ty::I64) * Expr::i64(ROWS));
    let packed = b.let_("packed", tile_row.clone() + tid.clone() / Expr::i64(QUAD));
    let valid = b.let_("valid", packed.clone().lt(packed_rows.clone()));
    // Padded rows of the last tile compute a copy of the last real row and store nothing.
    let clamped = b.let_("clamped", packed.min(packed_rows.clone() - Expr::i64(1)));
    let pos = b.let_("pos", clamped.clone() / Expr::i64(group));
    let head = b.let_(
        "head",
        kvh.clone() * Expr::i64(group) + clamped % Expr::i64(group),
    );
    let q_row = b.let_(
        "q_row",
        (head * len.n.clone() + pos.clone()) * Expr::i64(d as i64),
    );

    let q_tables = if spec.rope_q { inp.rope } else { None };
    let scale = Expr::f32(spec.scale as f32);
    let qv: Vec<Expr> = (0..dq)
        .map(|c| {
            let col = Expr::i64((c * QUAD as usize) as i64) + part.clone();
            let x = rotated(&b, inp.q, &q_row, &col, &pos, d, q_tables);
            b.let_(&format!("q{c}"), x * scale.clone())
        })
        .collect();

    let first_pos = tile_row.clone() / Expr::i64(group);
    let last_pos =
        ((tile_row + Expr::i64(ROWS - 1)) / Expr::i64(group)).min(len.n.clone() - Expr::i64(1));
    let range = key_range(&mut b, spec, &len, seg, first_pos, last_pos);
    let own_seg = seg.map(|s| b.let_("own_seg", Expr::load(s, pos.clone())));

    let m = b.var("m", Expr::f32(NEG_INF));
    let l = b.var("l", Expr::f32(0.0));
    let o: Vec<_> = (0..dq)
        .map(|c| b.var(&format!("o{c}"), Expr::f32(0.0)))
        .collect();
    let k_tables = if spec.rope_k { inp.rope } else { None };
    let tile = KvTile {
        ks,
        vs,
        keys: KEYS,
        stride: d,
        threads: THREADS,
        k_tables,
    };
    let kv_head_base = kvh * len.kv_rows.clone();

    b.for_(
        "kb",
        range.lo.clone(),
        range.hi.clone(),
        Expr::i64(KEYS as i64),
        |b, kb| {
            b.barrier();
            load_kv_tile(b, &inp, &tile, d, &kb, &kv_head_base, &len.t, &tid);
            b.barrier();

            let scores: Vec<Expr> = (0..KEYS)
                .map(|j| {
                    let at =
                        |c: usize| Expr::i64((j * d + c * QUAD as usize) as i64) + part.clone();
                    let partial = (1..dq).fold(qv[0].clone() * Expr::load(ks, at(0)), |acc, c| {
                        Expr::fma(qv[c].clone(), Expr::load(ks, at(c)), acc)
                    });
                    let partial = b.let_(&format!("dot{j}_"), partial);
                    let pair = b.shfl_xor(&format!("dot{j}_x1_"), partial.clone(), 1);
                    let half = b.let_(&format!("dot{j}_h"), partial + pair);
                    let other = b.shfl_xor(&format!("dot{j}_x2_"), half.clone(), 2);
                    let key = kb.clone() + Expr::i64(j as i64);
                    let ok = allowed(spec, &len, seg, own_seg.as_ref(), &pos, &key, &range.hi);
                    b.let_(
                        &format!("s{j}_"),
                        Expr::select(ok, half + other, Expr::f32(NEG_INF)),
                    )
                })
                .collect();

            let tile_max = scores
                .iter()
                .skip(1)
                .fold(scores[0].clone(), |a, s| a.max(s.clone()));
            let m_new = b.let_("m_new", Expr::Var(m).max(tile_max));
            // A row with no allowed key yet keeps m = -inf; exponents then subtract 0, not -inf.
            let base = b.let_(
                "base",
                Expr::select(
                    m_new.clone().eq(Expr::f32(NEG_INF)),
                    Expr::f32(0.0),
                    m_new.clone(),
                ),
            );
            let alpha = b.let_("alpha", (Expr::Var(m) - base.clone()).exp());
            let p: Vec<Expr> = scores
                .iter()
                .enumerate()
                .map(|(j, s)| b.let_(&format!("p{j}_"), (s.clone() - base.clone()).exp()))
                .collect();
            let tile_sum = p.iter().skip(1).fold(p[0].clone(), |a, x| a + x.clone());
            b.assign(l, Expr::fma(Expr::Var(l), alpha.clone(), tile_sum));
            b.assign(m, m_new);
            for (c, &oc) in o.iter().enumerate() {
                let acc =
                    p.iter()
                        .enumerate()
                        .fold(Expr::Var(oc) * alpha.clone(), |acc, (j, pj)| {
                            Expr::fma(
                                pj.clone(),
                                Expr::load(
                                    vs,
                                    Expr::i64((j * d + c * QUAD as usize) as i64) + part.clone(),
                                ),
                                acc,
                            )
                        });
                b.assign(oc, acc);
            }
        },
    );

    b.if_(valid, |b| {
        let inv = b.let_("inv_l", Expr::f32(1.0) / Expr::Var(l));
        for (c, &oc) in o.iter().enumerate() {
            let col = Expr::i64((c * QUAD as usize) as i64) + part.clone();
            b.store(
                out,
                q_row.clone() + col,
                to_dtype(Expr::Var(oc) * inv.clone(), spec.dtype),
            );
        }
    });
    b.finish()
}

pub fn mask_name(spec: &AttnSpec) -> &'static str {
    match spec.mask {
        AttentionMask::Causal => "causal",
        AttentionMask::Segments => "segments",
        AttentionMask::Full => "full",
    }
}
