//! RMSNorm and LayerNorm over the hidden axis, optionally fused with the residual add before
//! them (`sum = x + residual` is written out too: the layer's next residual).
//!
//! One block per row. The row is loaded once, with the widest aligned vector access, into
//! registers (`per_thread` vectors per thread, one for every real hidden size), reduced with
//! shuffles and shared memory, and written from the registers.

use super::block_reduce::{block_reduce, Combine};
use super::elem::{
    bid, input, length, load_wide, op, round_up, store_wide, tid, vec_width, FloatTy,
};
use super::{Case, Template};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty, VarId};
use vl3c_ir::{BinaryOp, Dim, Graph, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Rms,
    Layer,
}

#[derive(Clone, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub dtype: FloatTy,
    pub hidden: usize,
    pub eps: f64,
    /// Adds `residual` to `x` first and writes that sum as `sum`.
    pub residual: bool,
}

/// How a row of `hidden` elements spreads over a block.
struct RowPlan {
    width: usize,
    vectors: usize,
    per_thread: usize,
    threads: usize,
}

impl RowPlan {
    fn new(ty: FloatTy, hidden: usize) -> RowPlan {
        let width = vec_width(ty, hidden);
        let vectors = hidden / width;
        let per_thread = vectors.div_ceil(1024);
        let threads = round_up(vectors.div_ceil(per_thread), 32);
        RowPlan {
            width,
            vectors,
            per_thread,
            threads,
        }
    }

    /// The vector thread `tid` handles in round `j`, and whether that round can run past the row.
    fn vector(&self, j: usize) -> (Expr, bool) {
        (
            tid() + Expr::i64((j * self.threads) as i64),
            (j + 1) * self.threads > self.vectors,
        )
    }
}

impl Norm {
    fn kernel(&self) -> Kernel {
        let plan = RowPlan::new(self.dtype, self.hidden);
        let (h, w, ty) = (self.hidden as i64, plan.width, self.dtype);
        let mut b = KernelBuilder::new(
            format!(
                "{}_{}_h{}{}",
                self.op(),
                ty.name(),
                h,
                if self.residual { "_res" } else { "" }
            ),
            [plan.threads as u32, 1, 1],
        );
        let x = b.buffer("x", ty.ty(), Access::Read);
        let r = self
            .residual
            .then(|| b.buffer("residual", ty.ty(), Access::Read));
        let weight = b.buffer("w", ty.ty(), Access::Read);
        let bias = (self.kind == NormKind::Layer).then(|| b.buffer("b", ty.ty(), Access::Read));
        let out = b.buffer("out", ty.ty(), Access::Write);
        let sum = self
            .residual
            .then(|| b.buffer("sum", ty.ty(), Access::Write));
        let rows = b.scalar("rows", Ty::I64);
        b.grid(rows.cast(Ty::U32), Expr::u32(1), Expr::u32(1));
        let row_base = b.let_("row_base", bid(0) * Expr::i64(h));

        // Registers of rounds past the row stay 0, which adds nothing to the sums below.
        let mut vals: Vec<Vec<VarId>> = Vec::new();
        for j in 0..plan.per_thread {
            let regs: Vec<VarId> = (0..w)
                .map(|k| b.var(&format!("v{j}_{k}"), Expr::f32(0.0)))
                .collect();
            let (vec, partial) = plan.vector(j);
            let cond = vec.clone().lt(Expr::i64(plan.vectors as i64));
            let at = b.let_(
                &format!("at{j}"),
                row_base.clone() + vec.clone() * Expr::i64(w as i64),
            );
            let body = |b: &mut KernelBuilder| {
                let xs = load_wide(b, &format!("x{j}_"), x, at.clone(), w);
                let values: Vec<Expr> = match r {
                    None => xs.into_iter().map(|e| ty.widen(e)).collect(),
                    Some(r) => {
                        let rs = load_wide(b, &format!("r{j}_"), r, at.clone(), w);
                        let sums: Vec<Expr> = xs
                            .into_iter()
                            .zip(rs)
                            .map(|(x, r)| ty.narrow(ty.widen(x) + ty.widen(r)))
                            .collect();
                        let sums: Vec<Expr> = sums
                            .iter()
                            .enumerate()
                            .map(|(k, s)| b.let_(&format!("s{j}_{k}"), s.clone()))
                            .collect();
                        store_wide(
                            b,
                            sum.expect("sum goes with residual"),
                            at.clone(),
                            sums.clone(),
                        );
                        sums.into_iter().map(|s| ty.widen(s)).collect()
                    }
                };
                for (reg, v) in regs.iter().zip(values) {
                    b.assign(*reg, v);
                }
            };
            guarded(&mut b, partial, cond, body);
            vals.push(regs);
        }

        let threads = plan.threads as u32;
        let all: Vec<Expr> = vals.iter().flatten().map(|v| Expr::Var(*v)).collect();
        let hf = Expr::f32(h as f32);
        let eps = Expr::f32(self.eps as f32);
        // (x - center)·scale is the normalized value; RMSNorm centers nothing.
        let (center, scale) = match self.kind {
            NormKind::Rms => {
                let sq = all
                    .iter()
                    .map(|v| v.clone() * v.clone())
                    .reduce(|a, b| a + b)
                    .expect("a register");
                let total = block_reduce(&mut b, "sumsq", sq, threads, Combine::Sum);
                (None, b.let_("inv", (total / hf + eps).rsqrt()))
            }
            NormKind::Layer => {
                let s = all
                    .iter()
                    .cloned()
                    .reduce(|a, b| a + b)
                    .expect("a register");
                let total = block_reduce(&mut b, "sum", s, threads, Combine::Sum);
                let mean = b.let_("mean", total / hf.clone());
                // Registers past the row would add mean², so each round adds only where it is real.
                let acc = b.var("dev", Expr::f32(0.0));
                for (j, regs) in vals.iter().enumerate() {
                    let (vec, partial) = plan.vector(j);
                    let cond = vec.clone().lt(Expr::i64(plan.vectors as i64));
                    let body = |b: &mut KernelBuilder| {
                        for reg in regs {
                            let d = Expr::Var(*reg) - mean.clone();
                            b.assign(acc, Expr::Var(acc) + d.clone() * d);
                        }
                    };
                    guarded(&mut b, partial, cond, body);
                }
                let var = block_reduce(&mut b, "var", Expr::Var(acc), threads, Combine::Sum);
                (Some(mean), b.let_("inv", (var / hf + eps).rsqrt()))
            }
        };

        for (j, regs) in vals.iter().enumerate() {
            let (vec, partial) = plan.vector(j);
            let cond = vec.clone().lt(Expr::i64(plan.vectors as i64));
            let body = |b: &mut KernelBuilder| {
                let col = vec.clone() * Expr::i64(w as i64);
                let ws = load_wide(b, &format!("w{j}_"), weight, col.clone(), w);
                let bs = bias.map(|bias| load_wide(b, &format!("b{j}_"), bias, col.clone(), w));
                let outs: Vec<Expr> = regs
                    .iter()
                    .enumerate()
                    .map(|(k, reg)| {
                        let v = match &center {
                            Some(m) => Expr::Var(*reg) - m.clone(),
                            None => Expr::Var(*reg),
                        };
                        let y = v * scale.clone() * ty.widen(ws[k].clone());
                        let y = match &bs {
                            Some(bs) => y + ty.widen(bs[k].clone()),
                            None => y,
                        };
                        ty.narrow(y)
                    })
                    .collect();
                store_wide(b, out, row_base.clone() + col, outs);
            };
            guarded(&mut b, partial, cond, body);
        }
        b.finish()
    }
}

/// Emits `body` under `if cond` when `partial`, else unconditionally.
fn guarded(
    b: &mut KernelBuilder,
    partial: bool,
    cond: Expr,
    body: impl FnOnce(&mut KernelBuilder),
) {
    if partial {
        b.if_(cond, body);
    } else {
        body(b);
    }
}

impl Template for Norm {
    fn op(&self) -> &'static str {
        match self.kind {
            NormKind::Rms => "rms_norm",
            NormKind::Layer => "layer_norm",
        }
    }

    fn name(&self) -> String {
        format!(
            "{}(dtype={},hidden={},residual={})",
            self.op(),
            self.dtype.name(),
            self.hidden,
            self.residual
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![self.kernel()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let dt = self.dtype.dtype();
        let row_shape = vec![rows, Dim::from(self.hidden)];
        let mut x = input(&mut g, "x", dt, row_shape.clone());
        if self.residual {
            let r = input(&mut g, "residual", dt, row_shape);
            x = op(&mut g, Op::Binary(BinaryOp::Add), &[x, r]);
            g.set_output("sum", x);
        }
        let w = input(&mut g, "w", dt, vec![Dim::from(self.hidden)]);
        let out = match self.kind {
            NormKind::Rms => op(&mut g, Op::RmsNorm { eps: self.eps }, &[x, w]),
            NormKind::Layer => {
                let b = input(&mut g, "b", dt, vec![Dim::from(self.hidden)]);
                op(&mut g, Op::LayerNorm { eps: self.eps }, &[x, w, b])
            }
        };
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// The LLM's RMSNorms (2B hidden 1536, 7B 3584) and the vision tower's LayerNorms (1152), each
/// with and without the residual add, plus odd widths that exercise partial vectors and rounds.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for residual in [false, true] {
            for (hidden, rows) in [
                (1536, &[1i64, 7, 129][..]),
                (3584, &[1, 7][..]),
                (130, &[3][..]),
                (4100, &[2][..]),
            ] {
                for &n in rows {
                    out.push(Case::new(
                        Norm {
                            kind: NormKind::Rms,
                            dtype,
                            hidden,
                            eps: 1e-6,
                            residual,
                        },
                        &[("rows", n)],
                    ));
                }
            }
            for (hidden, rows) in [
                (1152, &[1i64, 7, 129][..]),
                (48, &[5][..]),
                (1030, &[3][..]),
            ] {
                for &n in rows {
                    out.push(Case::new(
                        Norm {
                            kind: NormKind::Layer,
                            dtype,
                            hidden,
                            eps: 1e-6,
                            residual,
                        },
                        &[("rows", n)],
                    ));
                }
            }
        }
    }
    out
}
