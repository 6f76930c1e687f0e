//! Softmax over the last axis of `[rows, len]`, `len` a launch parameter: one block per row,
//! three strided passes (max, Σexp, normalize) with block reductions between them.

use super::block_reduce::{block_reduce, Combine};
use super::elem::{bid, input, length, op, tid, FloatTy};
use super::{Case, Template};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{Graph, Op};

const THREADS: u32 = 256;

#[derive(Clone, Debug)]
pub struct Softmax {
    pub dtype: FloatTy,
}

impl Template for Softmax {
    fn op(&self) -> &'static str {
        "softmax"
    }

    fn name(&self) -> String {
        format!("softmax(dtype={})", self.dtype.name())
    }

    fn kernels(&self) -> Vec<Kernel> {
        let ty = self.dtype;
        let mut b = KernelBuilder::new(format!("softmax_{}", ty.name()), [THREADS, 1, 1]);
        let x = b.buffer("x", ty.ty(), Access::Read);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        let len = b.scalar("len", Ty::I64);
        b.grid(rows.cast(Ty::U32), Expr::u32(1), Expr::u32(1));
        let base = b.let_("base", bid(0) * len.clone());
        let step = Expr::i64(THREADS as i64);

        let max = b.var("local_max", Expr::f32(f32::NEG_INFINITY));
        b.for_("i", tid(), len.clone(), step.clone(), |b, i| {
            b.assign(
                max,
                Expr::Var(max).max(ty.widen(b.load(x, base.clone() + i))),
            );
        });
        let max = block_reduce(&mut b, "max", Expr::Var(max), THREADS, Combine::Max);

        let sum = b.var("local_sum", Expr::f32(0.0));
        b.for_("i", tid(), len.clone(), step.clone(), |b, i| {
            let e = (ty.widen(b.load(x, base.clone() + i)) - max.clone()).exp();
            b.assign(sum, Expr::Var(sum) + e);
        });
        let sum = block_reduce(&mut b, "sum", Expr::Var(sum), THREADS, Combine::Sum);

        b.for_("i", tid(), len, step, |b, i| {
            let at = base.clone() + i;
            let e = (ty.widen(b.load(x, at.clone())) - max.clone()).exp();
            b.store(out, at, ty.narrow(e / sum.clone()));
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let len = length(&mut g, "len");
        let x = input(&mut g, "x", self.dtype.dtype(), vec![rows, len]);
        let out = op(&mut g, Op::Softmax, &[x]);
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// Attention-score-like rows: short and long, whole and partial blocks.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for (rows, len) in [(1, 1), (7, 7), (3, 129), (12, 256), (2, 1000), (1, 4099)] {
            out.push(Case::new(
                Softmax { dtype },
                &[("rows", rows), ("len", len)],
            ));
        }
    }
    out
}
