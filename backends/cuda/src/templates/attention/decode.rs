//! Decode attention (one new query per head) over the KV cache: flash-decoding split-KV.
//!
//! `split` runs on a grid (max_chunks, kv_heads): each CTA holds its kv head's whole query group
//! (K and V read once per group) and one chunk of keys, and writes the chunk's unnormalised
//! partial output and its softmax statistics (max m and sum l: the log-sum-exp without a log) to
//! f32 scratch; `merge` combines the chunks per head. The KV length is read from device memory
//! (`kv_len`, one i64) and the grid is sized by the `max_chunks` parameter, so a captured CUDA
//! graph replays for every step; CTAs past the chunk count exit. `kv_capacity` is the cache's rows
//! per kv head (its allocation, fixed while a graph replays).
//! The chunk is `ceil(kv_len / max_chunks)` rounded up to whole 128-key tiles.
//!
//! Decode reads every key once for few FLOPs, so it is bound by memory, not math: the bf16
//! instance loads bf16 and computes in f32 on the CUDA cores, as FlashInfer's decode does.

use super::common::{declare_inputs, load_f32, rotated, to_dtype, AttnSpec, NEG_INF};
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};

const THREADS: i64 = 128;
const WARPS: usize = (THREADS / 32) as usize;
/// Keys per tile: one per thread for the scores, four per lane for the softmax reductions.
pub const TILE: i64 = THREADS;

struct Chunking {
    kv_len: Expr,
    max_chunks: Expr,
    /// Keys per chunk.
    chunk: Expr,
    chunks: Expr,
}

/// The chunk arithmetic runs in i32 (a cache of 2³¹ keys is far off, and the emulator reports an
/// overflow): an i64 division by a runtime value is a called subroutine in ptxas, whose register
/// saves spilled.
fn chunking(b: &mut KernelBuilder, kv_len_buf: Buf, max_chunks: Expr) -> Chunking {
    let kv_len = b.let_("kv_len", Expr::load(kv_len_buf, Expr::i64(0)));
    let len32 = b.let_("kv_len32", kv_len.clone().cast(Ty::I32));
    let max32 = b.let_("max_chunks32", max_chunks.clone().cast(Ty::I32));
    let tile = Expr::i32(TILE as i32);
    let chunk32 = b.let_(
        "chunk32",
        ceil_div32(ceil_div32(len32.clone(), max32), tile.clone()) * tile,
    );
    let chunks = b.let_("chunks", ceil_div32(len32, chunk32.clone()).cast(Ty::I64));
    let chunk = chunk32.cast(Ty::I64);
    Chunking {
        kv_len,
        max_chunks,
        chunk,
        chunks,
    }
}

fn ceil_div32(a: Expr, b: Expr) -> Expr {
    (a + b.clone() - Expr::i32(1)) / b
}

fn dtype_name(spec: &AttnSpec) -> String {
    format!(
        "{}_h{}_kv{}_d{}",
        spec.dtype_name(),
        spec.q_heads,
        spec.kv_heads,
        spec.head_dim
    )
}

pub fn split(spec: &AttnSpec) -> Kernel {
    assert!(!spec.rope_k, "decode keys come rotated from the cache");
    assert!(
        spec.head_dim.is_multiple_of(4),
        "head_dim {} must split into vector loads of 4",
        spec.head_dim
    );
    let d = spec.head_dim;
    let g = spec.group();
    assert!(
        (THREADS as usize).is_multiple_of(d),
        "head_dim {d} must divide the {THREADS} threads of a decode CTA"
    );
    let heads_per_pass = THREADS as usize / d;
    let per_thread = g.div_ceil(heads_per_pass);
    let mut b = KernelBuilder::new(
        format!("attention_decode_split_{}", dtype_name(spec)),
        [THREADS as u32, 1, 1],
    );
    let inp = declare_inputs(&mut b, spec);
    let kv_len_buf = b.buffer("kv_len", Ty::I64, Access::Read);
    // Read-write: only the first `chunks` slots of each head are written in a step.
    let o_part = b.buffer("o_partial", Ty::F32, Access::ReadWrite);
    let stats_part = b.buffer("stats_partial", Ty::F32, Access::ReadWrite);
    let capacity = b.scalar("kv_capacity", Ty::I64);
    let max_chunks = b.scalar("max_chunks", Ty::I64);
    b.grid(
        max_chunks.clone(),
        Expr::i64(spec.kv_heads as i64),
        Expr::i64(1),
    );
    let qs = b.shared("q_group", Ty::F32, g * d);
    let ss = b.shared("scores", Ty::F32, g * TILE as usize);
    let alpha_s = b.shared("alpha", Ty::F32, g);

    // Thread and block coordinates as formulas over the special registers, not variables: ptxas
    // rematerialises them instead of keeping 64-bit copies live across the key loop (which
    // made it spill on sm_90).
    let tid = b.thread_idx(0).cast(Ty::I64);
    let warp = tid.clone() / Expr::i64(32);
    let lane = tid.clone() % Expr::i64(32);
    let kvh = b.block_idx(1).cast(Ty::I64);
    let chunk_idx = b.block_idx(0).cast(Ty::I64);
    let ch = chunking(&mut b, kv_len_buf, max_chunks);
    let g64 = Expr::i64(g as i64);
    let d64 = Expr::i64(d as i64);

    b.if_(chunk_idx.clone().lt(ch.chunks.clone()), |b| {
        let start = b.let_("start", chunk_idx.clone() * ch.chunk.clone());
        let end = b.let_(
            "end",
            (start.clone() + ch.chunk.clone()).min(ch.kv_len.clone()),
        );
        let q_tables = if spec.rope_q { inp.rope } else { None };
        let scale = Expr::f32(spec.scale as f32);
        b.for_(
            "e",
            tid.clone(),
            Expr::i64((g * d) as i64),
            Expr::i64(THREADS),
            |b, e| {
                let q_row = b.let_(
                    "q_row",
                    (kvh.clone() * g64.clone() + e.clone() / d64.clone()) * d64.clone(),
                );
                let col = b.let_("col", e.clone() % d64.clone());
                let x = rotated(b, inp.q, &q_row, &col, &Expr::i64(0), d, q_tables);
                b.store(qs, e.clone(), x * scale.clone());
            },
        );
        b.barrier();

        // Warp h % WARPS reduces head h and keeps its m and l in register slot h / WARPS.
        let slots = g.div_ceil(WARPS);
        let m_slot: Vec<_> = (0..slots)
            .map(|s| b.var(&format!("m{s}"), Expr::f32(NEG_INF)))
            .collect();
        let l_slot: Vec<_> = (0..slots)
            .map(|s| b.var(&format!("l{s}"), Expr::f32(0.0)))
            .collect();
        let m: Vec<_> = (0..g).map(|h| m_slot[h / WARPS]).collect();
        let l: Vec<_> = (0..g).map(|h| l_slot[h / WARPS]).collect();
        // Thread outputs: column tid % d of heads tid / d + k·(THREADS / d), so one V element
        // read per key serves all of a thread's outputs. Heads past the group are clamped for
        // reads and never stored.
        let col = tid.clone() % d64.clone();
        let outs: Vec<(Expr, Expr)> = (0..per_thread)
            .map(|k| {
                let h = tid.clone() / d64.clone() + Expr::i64((k * heads_per_pass) as i64);
                (h.clone(), h.min(Expr::i64(g as i64 - 1)))
            })
            .collect();
        let o: Vec<_> = (0..per_thread)
            .map(|k| b.var(&format!("o{k}"), Expr::f32(0.0)))
            .collect();
        let kv_base = kvh.clone() * capacity.clone();

        b.for_(
            "kb",
            start.clone(),
            end.clone(),
            Expr::i64(TILE),
            |b, kb| {
                let key = b.let_("key", kb.clone() + tid.clone());
                b.if_else(
                    key.clone().lt(end.clone()),
                    |b| {
                        let acc: Vec<_> = (0..g)
                            .map(|h| b.var(&format!("dot{h}_"), Expr::f32(0.0)))
                            .collect();
                        let k_row = b.let_("k_row", (kv_base.clone() + key.clone()) * d64.clone());
                        // Four columns per step, one vector load of K.
                        b.for_("c", Expr::i64(0), d64.clone(), Expr::i64(4), |b, c| {
                            let kvals = b.load_vec("kval", inp.k, k_row.clone() + c.clone(), 4);
                            for (i, kval) in kvals.into_iter().enumerate() {
                                let kval = if spec.dtype == Ty::F32 {
                                    kval
                                } else {
                                    kval.cast(Ty::F32)
                                };
                                for (h, &a) in acc.iter().enumerate() {
                                    let qv =
                                        Expr::load(qs, Expr::i64((h * d + i) as i64) + c.clone());
                                    b.assign(a, Expr::fma(qv, kval.clone(), Expr::Var(a)));
                                }
                            }
                        });
                        for (h, &a) in acc.iter().enumerate() {
                            b.store(ss, Expr::i64(h as i64 * TILE) + tid.clone(), Expr::Var(a));
                        }
                    },
                    |b| {
                        for h in 0..g {
                            b.store(
                                ss,
                                Expr::i64(h as i64 * TILE) + tid.clone(),
                                Expr::f32(NEG_INF),
                            );
                        }
                    },
                );
                b.barrier();

                for h in 0..g {
                    b.if_(warp.clone().eq(Expr::i64((h % WARPS) as i64)), |b| {
                        let at = |q: i64| Expr::i64(h as i64 * TILE + 32 * q) + lane.clone();
                        let vals: Vec<_> = (0..4)
                            .map(|q| b.let_(&format!("sv{q}_"), Expr::load(ss, at(q))))
                            .collect();
                        let lane_max = vals
                            .iter()
                            .skip(1)
                            .fold(vals[0].clone(), |a, x| a.max(x.clone()));
                        let tile_max = butterfly(b, "max", lane_max, Expr::max);
                        let m_new = b.let_("m_new", Expr::Var(m[h]).max(tile_max));
                        // A head with no finite score yet keeps m = -inf; exponents then subtract 0.
                        let base = b.let_(
                            "base",
                            Expr::select(
                                m_new.clone().eq(Expr::f32(NEG_INF)),
                                Expr::f32(0.0),
                                m_new.clone(),
                            ),
                        );
                        let alpha = b.let_("alpha", (Expr::Var(m[h]) - base.clone()).exp());
                        let p: Vec<_> = vals
                            .iter()
                            .enumerate()
                            .map(|(q, v)| {
                                b.let_(&format!("pv{q}_"), (v.clone() - base.clone()).exp())
                            })
                            .collect();
                        for (q, pq) in p.iter().enumerate() {
                            b.store(ss, at(q as i64), pq.clone());
                        }
                        let lane_sum = p.iter().skip(1).fold(p[0].clone(), |a, x| a + x.clone());
                        let tile_sum = butterfly(b, "sum", lane_sum, |a, x| a + x);
                        b.assign(l[h], Expr::fma(Expr::Var(l[h]), alpha.clone(), tile_sum));
                        b.assign(m[h], m_new);
                        b.if_(lane.clone().eq(Expr::i64(0)), |b| {
                            b.store(alpha_s, Expr::i64(h as i64), alpha)
                        });
                    });
                }
                b.barrier();

                for (&ok, (_, h)) in o.iter().zip(&outs) {
                    b.assign(ok, Expr::Var(ok) * Expr::load(alpha_s, h.clone()));
                }
                let keys_here = (end.clone() - kb.clone()).min(Expr::i64(TILE));
                b.for_("j", Expr::i64(0), keys_here, Expr::i64(1), |b, j| {
                    let vval = b.let_(
                        "vval",
                        load_f32(
                            b,
                            inp.v,
                            (kv_base.clone() + kb.clone() + j.clone()) * d64.clone() + col.clone(),
                        ),
                    );
                    for (&ok, (_, h)) in o.iter().zip(&outs) {
                        let pj = Expr::load(ss, h.clone() * Expr::i64(TILE) + j.clone());
                        b.assign(ok, Expr::fma(pj, vval.clone(), Expr::Var(ok)));
                    }
                });
                b.barrier();
            },
        );

        for h in 0..g {
            let owner = warp
                .clone()
                .eq(Expr::i64((h % WARPS) as i64))
                .and(lane.clone().eq(Expr::i64(0)));
            b.if_(owner, |b| {
                let slot = (kvh.clone() * g64.clone() + Expr::i64(h as i64))
                    * ch.max_chunks.clone()
                    + chunk_idx.clone();
                b.store(stats_part, slot.clone() * Expr::i64(2), Expr::Var(m[h]));
                b.store(
                    stats_part,
                    slot * Expr::i64(2) + Expr::i64(1),
                    Expr::Var(l[h]),
                );
            });
        }
        // Unnormalised: the merge divides once per element, and a division here (a called slow
        // path in ptxas) made the split kernel spill.
        for (&ok, (head, h)) in o.iter().zip(&outs) {
            b.if_(head.clone().lt(Expr::i64(g as i64)), |b| {
                let slot = (kvh.clone() * g64.clone() + h.clone()) * ch.max_chunks.clone()
                    + chunk_idx.clone();
                b.store(o_part, slot * d64.clone() + col.clone(), Expr::Var(ok));
            });
        }
    });
    b.finish()
}

/// `op` over the warp by xor shuffles: every lane ends with the whole warp's result.
fn butterfly(
    b: &mut KernelBuilder,
    name: &str,
    value: Expr,
    op: impl Fn(Expr, Expr) -> Expr,
) -> Expr {
    let mut acc = b.let_(&format!("{name}_lane"), value);
    for mask in [16, 8, 4, 2, 1] {
        let other = b.shfl_xor(&format!("{name}_x{mask}_"), acc.clone(), mask);
        acc = b.let_(&format!("{name}_{mask}_"), op(acc, other));
    }
    acc
}

/// One CTA per query head: with `M = max_c m_c` and `w_c = e^{m_c − M}` (the chunks' log-sum-exp
/// merge, without a log), `out = Σ_c w_c·O_c / Σ_c w_c·l_c` over the unnormalised chunk outputs.
pub fn merge(spec: &AttnSpec) -> Kernel {
    let d = spec.head_dim;
    let mut b = KernelBuilder::new(
        format!("attention_decode_merge_{}", dtype_name(spec)),
        [THREADS as u32, 1, 1],
    );
    let o_part = b.buffer("o_partial", Ty::F32, Access::Read);
    let stats_part = b.buffer("stats_partial", Ty::F32, Access::Read);
    let kv_len_buf = b.buffer("kv_len", Ty::I64, Access::Read);
    let out = b.buffer("out", spec.dtype, Access::Write);
    let max_chunks = b.scalar("max_chunks", Ty::I64);
    b.grid(Expr::i64(spec.q_heads as i64), Expr::i64(1), Expr::i64(1));
    let tid = b.let_("tid", b.thread_idx(0).cast(Ty::I64));
    let head = b.let_("head", b.block_idx(0).cast(Ty::I64));
    let ch = chunking(&mut b, kv_len_buf, max_chunks);
    let first = b.let_("first_slot", head.clone() * ch.max_chunks.clone());
    let m = |c: &Expr| Expr::load(stats_part, (first.clone() + c.clone()) * Expr::i64(2));
    let l = |c: &Expr| {
        Expr::load(
            stats_part,
            (first.clone() + c.clone()) * Expr::i64(2) + Expr::i64(1),
        )
    };

    let top = b.var("top", Expr::f32(NEG_INF));
    b.for_(
        "c",
        Expr::i64(0),
        ch.chunks.clone(),
        Expr::i64(1),
        |b, c| b.assign(top, Expr::Var(top).max(m(&c))),
    );
    let total = b.var("total", Expr::f32(0.0));
    b.for_(
        "c",
        Expr::i64(0),
        ch.chunks.clone(),
        Expr::i64(1),
        |b, c| {
            b.assign(
                total,
                Expr::fma((m(&c) - Expr::Var(top)).exp(), l(&c), Expr::Var(total)),
            );
        },
    );
    let d64 = Expr::i64(d as i64);
    b.for_("col", tid, d64.clone(), Expr::i64(THREADS), |b, col| {
        let acc = b.var("acc", Expr::f32(0.0));
        b.for_(
            "c",
            Expr::i64(0),
            ch.chunks.clone(),
            Expr::i64(1),
            |b, c| {
                let w = (m(&c) - Expr::Var(top)).exp();
                let part = Expr::load(
                    o_part,
                    (first.clone() + c.clone()) * d64.clone() + col.clone(),
                );
                b.assign(acc, Expr::fma(w, part, Expr::Var(acc)));
            },
        );
        b.store(
            out,
            head.clone() * d64.clone() + col.clone(),
            to_dtype(Expr::Var(acc) / Expr::Var(total), spec.dtype),
        );
    });
    b.finish()
}
