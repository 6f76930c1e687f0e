//! RoPE: `x·cos + rotate_half(x)·sin` over the head dim, pairing i with i + d/2, for every head
//! of `[heads, n, d]` with tables `[n, d]` (the LLM's 1-D tables and the vision tower's 2-D ones
//! differ only in how the graph fills them). `RopeCache` is the LLM layer's step after the qkv
//! projection: rotate k and append it, and v as it is, to the KV cache at position `past_len`.
//!
//! Heads are read either from a contiguous `[heads, n, d]` tensor or in place from the merged
//! qkv projection output `[n, width]` (head h of the section at column `offset + h·d`): the
//! graph's slice → reshape → transpose costs no copy. One thread per aligned vector of pairs.

use super::elem::{
    bid, blocks_for, input, length, load_wide, op, store_wide, tid, vec_width, FloatTy,
};
use super::{Case, Template};
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{Dim, Graph, NodeId, Op};

const THREADS: usize = 256;

/// Where the heads to rotate live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadSource {
    /// `x [heads, n, d]`, contiguous.
    Heads,
    /// Columns `[offset, offset + heads·d)` of `qkv [n, width]`.
    Merged { width: usize, offset: usize },
}

impl HeadSource {
    /// The element index of (head, position, 0).
    fn at(self, head: Expr, pos: Expr, n: Expr, d: usize) -> Expr {
        let d = Expr::i64(d as i64);
        match self {
            HeadSource::Heads => (head * n + pos) * d,
            HeadSource::Merged { width, offset } => {
                pos * Expr::i64(width as i64) + Expr::i64(offset as i64) + head * d
            }
        }
    }

    fn buffer_name(self) -> &'static str {
        match self {
            HeadSource::Heads => "x",
            HeadSource::Merged { .. } => "qkv",
        }
    }

    /// A vector width that keeps every access of this layout aligned.
    fn width(self, ty: FloatTy, half: usize) -> usize {
        match self {
            HeadSource::Heads => vec_width(ty, half),
            HeadSource::Merged { width, offset } => {
                vec_width(ty, gcd(gcd(half, width), offset.max(1)))
            }
        }
    }

    fn label(self) -> String {
        match self {
            HeadSource::Heads => "heads".into(),
            HeadSource::Merged { width, offset } => format!("qkv[{offset}..;{width}]"),
        }
    }

    /// The `[heads, n, d]` tensor in a reference graph: an input, or the qkv input sliced,
    /// split into heads and transposed as the optimized graphs do it.
    fn reference(
        self,
        g: &mut Graph,
        dt: vl3c_ir::DType,
        heads: usize,
        n: &Dim,
        d: usize,
    ) -> NodeId {
        match self {
            HeadSource::Heads => input(g, "x", dt, vec![Dim::from(heads), n.clone(), Dim::from(d)]),
            HeadSource::Merged { width, offset } => {
                let qkv = input(g, "qkv", dt, vec![n.clone(), Dim::from(width)]);
                merged_heads(g, qkv, n, offset, heads, d)
            }
        }
    }
}

/// Heads `[heads, n, d]` of the columns from `offset` of `qkv [n, width]`.
fn merged_heads(
    g: &mut Graph,
    qkv: NodeId,
    n: &Dim,
    offset: usize,
    heads: usize,
    d: usize,
) -> NodeId {
    let cols = op(
        g,
        Op::Slice {
            axis: 1,
            start: Dim::from(offset),
            end: Dim::from(offset + heads * d),
        },
        &[qkv],
    );
    let split = op(
        g,
        Op::Reshape {
            shape: vec![n.clone(), Dim::from(heads), Dim::from(d)],
        },
        &[cols],
    );
    op(
        g,
        Op::Transpose {
            perm: vec![1, 0, 2],
        },
        &[split],
    )
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The indices one thread of a rope kernel works on: thread `v` takes `w` pairs of position
/// `pos` of head `head`, the first at column `col` (< d/2).
struct PairSlot {
    head: Expr,
    pos: Expr,
    col: Expr,
}

/// Opens the kernel's one-thread-per-vector-of-pairs body over `heads·n·(d/2)/w` vectors.
fn for_each_pair_vector(
    b: &mut KernelBuilder,
    heads: usize,
    n: Expr,
    half: usize,
    w: usize,
    body: impl FnOnce(&mut KernelBuilder, PairSlot),
) {
    let per_pos = (half / w) as i64;
    let total = Expr::i64(heads as i64) * n.clone() * Expr::i64(per_pos);
    b.grid(
        blocks_for(total.clone(), THREADS),
        Expr::u32(1),
        Expr::u32(1),
    );
    let v = b.let_("v", bid(0) * Expr::i64(THREADS as i64) + tid());
    b.if_(v.clone().lt(total), |b| {
        let per_head = n * Expr::i64(per_pos);
        let head = b.let_("head", v.clone() / per_head.clone());
        let rest = v % per_head;
        let pos = b.let_("pos", rest.clone() / Expr::i64(per_pos));
        let col = b.let_("col", (rest % Expr::i64(per_pos)) * Expr::i64(w as i64));
        body(b, PairSlot { head, pos, col });
    });
}

/// The rotation a rope kernel applies: its tables and how wide each thread's access is.
struct Rotation {
    ty: FloatTy,
    cos: Buf,
    sin: Buf,
    head_dim: usize,
    width: usize,
}

impl Rotation {
    /// Loads the `width` pairs at `base + col` and `base + col + d/2` of `x`, rotates them by the
    /// tables at `pos`, and returns the two rotated halves (f32).
    fn apply(
        &self,
        b: &mut KernelBuilder,
        x: Buf,
        base: Expr,
        slot: &PairSlot,
    ) -> (Vec<Expr>, Vec<Expr>) {
        let (ty, d, w) = (self.ty, self.head_dim, self.width);
        let half = (d / 2) as i64;
        let lo_at = b.let_("lo_at", base + slot.col.clone());
        let lo = load_wide(b, "lo", x, lo_at.clone(), w);
        let hi = load_wide(b, "hi", x, lo_at + Expr::i64(half), w);
        let t_at = b.let_(
            "t_at",
            slot.pos.clone() * Expr::i64(d as i64) + slot.col.clone(),
        );
        let c_lo = load_wide(b, "c_lo", self.cos, t_at.clone(), w);
        let s_lo = load_wide(b, "s_lo", self.sin, t_at.clone(), w);
        let c_hi = load_wide(b, "c_hi", self.cos, t_at.clone() + Expr::i64(half), w);
        let s_hi = load_wide(b, "s_hi", self.sin, t_at + Expr::i64(half), w);
        let f = |e: &Expr| ty.widen(e.clone());
        // rotate_half(x) is -x_hi in the low half and x_lo in the high half.
        let out_lo = (0..w)
            .map(|k| f(&lo[k]) * f(&c_lo[k]) + (-f(&hi[k])) * f(&s_lo[k]))
            .collect();
        let out_hi = (0..w)
            .map(|k| f(&hi[k]) * f(&c_hi[k]) + f(&lo[k]) * f(&s_hi[k]))
            .collect();
        (out_lo, out_hi)
    }
}

/// `rope(x, cos, sin)` → `out [heads, n, d]`.
#[derive(Clone, Debug)]
pub struct Rope {
    pub dtype: FloatTy,
    pub heads: usize,
    pub head_dim: usize,
    pub source: HeadSource,
}

impl Template for Rope {
    fn op(&self) -> &'static str {
        "rope"
    }

    fn name(&self) -> String {
        format!(
            "rope(dtype={},heads={},head_dim={},source={})",
            self.dtype.name(),
            self.heads,
            self.head_dim,
            self.source.label()
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, d) = (self.dtype, self.head_dim);
        let w = self.source.width(ty, d / 2);
        let source = match self.source {
            HeadSource::Heads => String::new(),
            HeadSource::Merged { width, offset } => format!("_qkv{width}_at{offset}"),
        };
        let mut b = KernelBuilder::new(
            format!("rope_{}_h{}_d{}{source}", ty.name(), self.heads, d),
            [THREADS as u32, 1, 1],
        );
        let x = b.buffer(self.source.buffer_name(), ty.ty(), Access::Read);
        let cos = b.buffer("cos", ty.ty(), Access::Read);
        let sin = b.buffer("sin", ty.ty(), Access::Read);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let n = b.scalar("n", Ty::I64);
        let source = self.source;
        let rotation = Rotation {
            ty,
            cos,
            sin,
            head_dim: d,
            width: w,
        };
        for_each_pair_vector(&mut b, self.heads, n.clone(), d / 2, w, |b, slot| {
            let src = b.let_(
                "src",
                source.at(slot.head.clone(), slot.pos.clone(), n.clone(), d),
            );
            let (lo, hi) = rotation.apply(b, x, src, &slot);
            let dst = b.let_(
                "dst",
                HeadSource::Heads.at(slot.head.clone(), slot.pos.clone(), n.clone(), d)
                    + slot.col.clone(),
            );
            store_wide(
                b,
                out,
                dst.clone(),
                lo.into_iter().map(|e| ty.narrow(e)).collect(),
            );
            store_wide(
                b,
                out,
                dst + Expr::i64((d / 2) as i64),
                hi.into_iter().map(|e| ty.narrow(e)).collect(),
            );
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let n = length(&mut g, "n");
        let (dt, d) = (self.dtype.dtype(), self.head_dim);
        let x = self.source.reference(&mut g, dt, self.heads, &n, d);
        let cos = input(&mut g, "cos", dt, vec![n.clone(), Dim::from(d)]);
        let sin = input(&mut g, "sin", dt, vec![n, Dim::from(d)]);
        let out = op(&mut g, Op::Rope, &[x, cos, sin]);
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// The LLM layer's k/v step: from `qkv [n, (hq + 2·hk)·d]`, k rotated by `cos`/`sin [n, d]` and v
/// as it is are written to `key`/`value [hk, capacity, d]` at positions `[past_len, past_len + n)`.
/// The caches' earlier positions are neither read nor written.
#[derive(Clone, Debug)]
pub struct RopeCache {
    pub dtype: FloatTy,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl RopeCache {
    fn width(&self) -> usize {
        (self.q_heads + 2 * self.kv_heads) * self.head_dim
    }
    fn k_source(&self) -> HeadSource {
        HeadSource::Merged {
            width: self.width(),
            offset: self.q_heads * self.head_dim,
        }
    }
    fn v_source(&self) -> HeadSource {
        HeadSource::Merged {
            width: self.width(),
            offset: (self.q_heads + self.kv_heads) * self.head_dim,
        }
    }
}

impl Template for RopeCache {
    fn op(&self) -> &'static str {
        "rope_cache"
    }

    fn name(&self) -> String {
        format!(
            "rope_cache(dtype={},q_heads={},kv_heads={},head_dim={})",
            self.dtype.name(),
            self.q_heads,
            self.kv_heads,
            self.head_dim
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, d, hk) = (self.dtype, self.head_dim, self.kv_heads);
        let w = self
            .k_source()
            .width(ty, d / 2)
            .min(self.v_source().width(ty, d / 2));
        let mut b = KernelBuilder::new(
            format!(
                "rope_cache_{}_hq{}_hk{}_d{}",
                ty.name(),
                self.q_heads,
                hk,
                d
            ),
            [THREADS as u32, 1, 1],
        );
        let qkv = b.buffer("qkv", ty.ty(), Access::Read);
        let cos = b.buffer("cos", ty.ty(), Access::Read);
        let sin = b.buffer("sin", ty.ty(), Access::Read);
        let key = b.buffer("key", ty.ty(), Access::ReadWrite);
        let value = b.buffer("value", ty.ty(), Access::ReadWrite);
        let n = b.scalar("n", Ty::I64);
        let past = b.scalar("past_len", Ty::I64);
        let capacity = b.scalar("capacity", Ty::I64);
        let (k_src, v_src) = (self.k_source(), self.v_source());
        let rotation = Rotation {
            ty,
            cos,
            sin,
            head_dim: d,
            width: w,
        };
        for_each_pair_vector(&mut b, hk, n.clone(), d / 2, w, |b, slot| {
            let src = b.let_(
                "k_src",
                k_src.at(slot.head.clone(), slot.pos.clone(), n.clone(), d),
            );
            let (lo, hi) = rotation.apply(b, qkv, src, &slot);
            let dst = (slot.head.clone() * capacity.clone() + past.clone() + slot.pos.clone())
                * Expr::i64(d as i64)
                + slot.col.clone();
            let dst = b.let_("dst", dst);
            let half = Expr::i64((d / 2) as i64);
            store_wide(
                b,
                key,
                dst.clone(),
                lo.into_iter().map(|e| ty.narrow(e)).collect(),
            );
            store_wide(
                b,
                key,
                dst.clone() + half.clone(),
                hi.into_iter().map(|e| ty.narrow(e)).collect(),
            );
            let v_at = b.let_(
                "v_at",
                v_src.at(slot.head.clone(), slot.pos.clone(), n.clone(), d) + slot.col.clone(),
            );
            let v_lo = load_wide(b, "v_lo", qkv, v_at.clone(), w);
            let v_hi = load_wide(b, "v_hi", qkv, v_at + half.clone(), w);
            store_wide(b, value, dst.clone(), v_lo);
            store_wide(b, value, dst + half, v_hi);
        });
        vec![b.finish()]
    }

    /// The caches as the IR states them: `cache_read` of the `past_len` cached positions, the new
    /// ones appended along axis 1; outputs `key`/`value [hk, past_len + n, d]`.
    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let n = length(&mut g, "n");
        let past = g.declare_symbol("past_len", 0, 1 << 24);
        let (dt, d, hk) = (self.dtype.dtype(), self.head_dim, self.kv_heads);
        let qkv = input(&mut g, "qkv", dt, vec![n.clone(), Dim::from(self.width())]);
        let cos = input(&mut g, "cos", dt, vec![n.clone(), Dim::from(d)]);
        let sin = input(&mut g, "sin", dt, vec![n.clone(), Dim::from(d)]);
        let k = merged_heads(&mut g, qkv, &n, self.q_heads * d, hk, d);
        let k = op(&mut g, Op::Rope, &[k, cos, sin]);
        let v = merged_heads(&mut g, qkv, &n, (self.q_heads + hk) * d, hk, d);
        for (name, new) in [("key", k), ("value", v)] {
            let cached =
                vl3c_ir::TensorType::new(dt, vec![Dim::from(hk), past.clone(), Dim::from(d)]);
            let cached = g
                .add_source(Op::CacheRead { name: name.into() }, cached)
                .expect("a cache read");
            let all = op(
                &mut g,
                Op::CacheAppend {
                    name: name.into(),
                    axis: 1,
                },
                &[cached, new],
            );
            g.set_output(name, all);
        }
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// The LLM's k rotation (2B: 12 q / 2 kv heads, 7B: 28 / 4, d = 128) from the merged qkv
/// output, the vision tower's q/k (16 heads, d = 72) as contiguous heads, and the cache step at
/// prefill (past 0) and decode (n = 1) positions.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for (q_heads, kv_heads) in [(12, 2), (28, 4)] {
            let k = HeadSource::Merged {
                width: (q_heads + 2 * kv_heads) * 128,
                offset: q_heads * 128,
            };
            for n in [1, 7] {
                out.push(Case::new(
                    Rope {
                        dtype,
                        heads: kv_heads,
                        head_dim: 128,
                        source: k,
                    },
                    &[("n", n)],
                ));
            }
            for (n, past) in [(7, 0), (1, 7), (1, 129), (3, 20)] {
                let sizes = [("n", n), ("past_len", past), ("capacity", n + past)];
                out.push(Case::new(
                    RopeCache {
                        dtype,
                        q_heads,
                        kv_heads,
                        head_dim: 128,
                    },
                    &sizes,
                ));
            }
        }
        for n in [1, 7, 129] {
            out.push(Case::new(
                Rope {
                    dtype,
                    heads: 16,
                    head_dim: 72,
                    source: HeadSource::Heads,
                },
                &[("n", n)],
            ));
        }
        out.push(Case::new(
            Rope {
                dtype,
                heads: 3,
                head_dim: 10,
                source: HeadSource::Merged {
                    width: 50,
                    offset: 10,
                },
            },
            &[("n", 5)],
        ));
    }
    out
}
