//! Elementwise activations (`gelu_tanh`, `gelu_erf`, `silu`) and SwiGLU. In the optimized LLM
//! graphs gate and up are the two halves of one merged `[rows, 2I]` matmul output (sliced at
//! column I), so SwiGLU reads them there in place; separate `[rows, I]` tensors are supported too.
//!
//! One thread per aligned vector of the widest width that tiles a row.

use super::elem::{
    bid, blocks_for, input, length, load_wide, op, store_wide, tid, vec_width, FloatTy,
};
use super::{Case, Template};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{Activation, Dim, Graph, Op};

const THREADS: usize = 256;

/// The activation's formula in f32, operation for operation as the reference computes it.
fn activate(a: Activation, x: Expr) -> Expr {
    let half = Expr::f32(0.5);
    match a {
        Activation::GeluTanh => {
            let cubic = x.clone() * x.clone() * x.clone() * Expr::f32(0.044715f64 as f32);
            let scaled =
                (x.clone() + cubic) * Expr::f32((2.0 / std::f64::consts::PI).sqrt() as f32);
            x * half * (scaled.tanh() + Expr::f32(1.0))
        }
        Activation::GeluErf => {
            let e = (x.clone() * Expr::f32(std::f64::consts::FRAC_1_SQRT_2 as f32)).erf();
            x * half * (e + Expr::f32(1.0))
        }
        Activation::Silu => silu(x),
    }
}

fn silu(x: Expr) -> Expr {
    x.clone() / ((-x).exp() + Expr::f32(1.0))
}

/// `act(x)` over `[rows, features]`.
#[derive(Clone, Debug)]
pub struct Act {
    pub act: Activation,
    pub dtype: FloatTy,
    pub features: usize,
}

impl Template for Act {
    fn op(&self) -> &'static str {
        self.act.mnemonic()
    }

    fn name(&self) -> String {
        format!(
            "{}(dtype={},features={})",
            self.op(),
            self.dtype.name(),
            self.features
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, w) = (self.dtype, vec_width(self.dtype, self.features));
        let mut b = KernelBuilder::new(
            format!("{}_{}_f{}", self.op(), ty.name(), self.features),
            [THREADS as u32, 1, 1],
        );
        let x = b.buffer("x", ty.ty(), Access::Read);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        let vectors = b.let_(
            "vectors",
            rows.clone() * Expr::i64((self.features / w) as i64),
        );
        b.grid(
            blocks_for(rows * Expr::i64((self.features / w) as i64), THREADS),
            Expr::u32(1),
            Expr::u32(1),
        );
        let v = b.let_("v", bid(0) * Expr::i64(THREADS as i64) + tid());
        b.if_(v.clone().lt(vectors), |b| {
            let at = b.let_("at", v * Expr::i64(w as i64));
            let xs = load_wide(b, "x", x, at.clone(), w);
            let ys = xs
                .into_iter()
                .map(|e| ty.narrow(activate(self.act, ty.widen(e))))
                .collect();
            store_wide(b, out, at, ys);
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let x = input(
            &mut g,
            "x",
            self.dtype.dtype(),
            vec![rows, Dim::from(self.features)],
        );
        let out = op(&mut g, Op::Activation(self.act), &[x]);
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// Where SwiGLU finds gate and up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateUp {
    /// One `gate_up [rows, 2I]` buffer, gate in columns `[0, I)` and up in `[I, 2I)`: the merged
    /// projection's output, read without a copy.
    Merged,
    /// `gate` and `up`, each `[rows, I]`.
    Separate,
}

/// `silu(gate)·up` → `out [rows, I]`.
#[derive(Clone, Debug)]
pub struct SwiGlu {
    pub dtype: FloatTy,
    pub intermediate: usize,
    pub layout: GateUp,
}

impl Template for SwiGlu {
    fn op(&self) -> &'static str {
        "swiglu"
    }

    fn name(&self) -> String {
        let layout = match self.layout {
            GateUp::Merged => "merged",
            GateUp::Separate => "separate",
        };
        format!(
            "swiglu(dtype={},intermediate={},layout={layout})",
            self.dtype.name(),
            self.intermediate
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, i, w) = (
            self.dtype,
            self.intermediate as i64,
            vec_width(self.dtype, self.intermediate),
        );
        let per_row = i / w as i64;
        let mut b = KernelBuilder::new(
            format!("swiglu_{}_i{}_{:?}", ty.name(), i, self.layout).to_lowercase(),
            [THREADS as u32, 1, 1],
        );
        let (gate, up, stride, up_offset) = match self.layout {
            GateUp::Merged => {
                let gu = b.buffer("gate_up", ty.ty(), Access::Read);
                (gu, gu, 2 * i, i)
            }
            GateUp::Separate => (
                b.buffer("gate", ty.ty(), Access::Read),
                b.buffer("up", ty.ty(), Access::Read),
                i,
                0,
            ),
        };
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        let vectors = b.let_("vectors", rows.clone() * Expr::i64(per_row));
        b.grid(
            blocks_for(rows * Expr::i64(per_row), THREADS),
            Expr::u32(1),
            Expr::u32(1),
        );
        let v = b.let_("v", bid(0) * Expr::i64(THREADS as i64) + tid());
        b.if_(v.clone().lt(vectors), |b| {
            let row = b.let_("row", v.clone() / Expr::i64(per_row));
            let col = b.let_(
                "col",
                (v.clone() % Expr::i64(per_row)) * Expr::i64(w as i64),
            );
            let src = b.let_("src", row * Expr::i64(stride) + col);
            let gs = load_wide(b, "g", gate, src.clone(), w);
            let us = load_wide(b, "u", up, src + Expr::i64(up_offset), w);
            let ys = gs
                .into_iter()
                .zip(us)
                .map(|(g, u)| ty.narrow(silu(ty.widen(g)) * ty.widen(u)))
                .collect();
            store_wide(b, out, v * Expr::i64(w as i64), ys);
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let (dt, i) = (self.dtype.dtype(), self.intermediate);
        let (gate, up) = match self.layout {
            GateUp::Merged => {
                let gu = input(&mut g, "gate_up", dt, vec![rows, Dim::from(2 * i)]);
                let gate = op(
                    &mut g,
                    Op::Slice {
                        axis: 1,
                        start: Dim::from(0usize),
                        end: Dim::from(i),
                    },
                    &[gu],
                );
                let up = op(
                    &mut g,
                    Op::Slice {
                        axis: 1,
                        start: Dim::from(i),
                        end: Dim::from(2 * i),
                    },
                    &[gu],
                );
                (gate, up)
            }
            GateUp::Separate => {
                let gate = input(&mut g, "gate", dt, vec![rows.clone(), Dim::from(i)]);
                (gate, input(&mut g, "up", dt, vec![rows, Dim::from(i)]))
            }
        };
        let out = op(&mut g, Op::SwiGlu, &[gate, up]);
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// The vision MLP's gelu_tanh (4304), the projector's gelu_erf (its hidden: 1536 for 2B, 3584
/// for 7B), SwiGLU at both LLM intermediates (8960, 18944), and odd widths.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for (act, features, rows) in [
            (Activation::GeluTanh, 4304, &[1i64, 7, 129][..]),
            (Activation::GeluTanh, 77, &[3][..]),
            (Activation::GeluErf, 1536, &[1, 7][..]),
            (Activation::GeluErf, 3584, &[7][..]),
            (Activation::Silu, 8960, &[1, 7][..]),
            (Activation::Silu, 6, &[5][..]),
        ] {
            for &n in rows {
                out.push(Case::new(
                    Act {
                        act,
                        dtype,
                        features,
                    },
                    &[("rows", n)],
                ));
            }
        }
        for layout in [GateUp::Merged, GateUp::Separate] {
            for (intermediate, rows) in [
                (8960, &[1i64, 7][..]),
                (18944, &[1, 7][..]),
                (98, &[129][..]),
                (9, &[3][..]),
            ] {
                for &n in rows {
                    out.push(Case::new(
                        SwiGlu {
                            dtype,
                            intermediate,
                            layout,
                        },
                        &[("rows", n)],
                    ));
                }
            }
        }
    }
    out
}
