//! The vision tower's spatial merge: `x [m²·n, F]` → `[n, F]`, each output row the mean of m²
//! consecutive input rows (a merge-block-major patch sequence). One thread per aligned vector of
//! an output row.

use super::elem::{
    for_each_row_vector, input, length, load_wide, op, store_wide, vec_width, FloatTy,
};
use super::{Case, Template};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{Dim, Graph, Op};

#[derive(Clone, Debug)]
pub struct SpatialMerge {
    pub dtype: FloatTy,
    pub features: usize,
    pub merge: usize,
}

impl Template for SpatialMerge {
    fn op(&self) -> &'static str {
        "spatial_merge"
    }

    fn name(&self) -> String {
        format!(
            "spatial_merge(dtype={},features={},merge={})",
            self.dtype.name(),
            self.features,
            self.merge
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, f, w) = (
            self.dtype,
            self.features as i64,
            vec_width(self.dtype, self.features),
        );
        let group = (self.merge * self.merge) as i64;
        let mut b = KernelBuilder::new(
            format!("spatial_merge_{}_f{f}_m{}", ty.name(), self.merge),
            [256, 1, 1],
        );
        let x = b.buffer("x", ty.ty(), Access::Read);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let n = b.scalar("n", Ty::I64);
        for_each_row_vector(&mut b, n, f, w, |b, row, col| {
            let first = b.let_("first", row.clone() * Expr::i64(group * f) + col.clone());
            let sums: Vec<_> = (0..w)
                .map(|k| b.var(&format!("sum{k}"), Expr::f32(0.0)))
                .collect();
            for r in 0..group {
                let vals = load_wide(b, &format!("x{r}_"), x, first.clone() + Expr::i64(r * f), w);
                for (sum, v) in sums.iter().zip(vals) {
                    b.assign(*sum, Expr::Var(*sum) + ty.widen(v));
                }
            }
            let means = sums
                .iter()
                .map(|s| ty.narrow(Expr::Var(*s) / Expr::f32(group as f32)))
                .collect();
            store_wide(b, out, row * Expr::i64(f) + col, means);
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let n = length(&mut g, "n");
        let group = (self.merge * self.merge) as i64;
        let x = input(
            &mut g,
            "x",
            self.dtype.dtype(),
            vec![n * group, Dim::from(self.features)],
        );
        let out = op(&mut g, Op::SpatialMerge { merge: self.merge }, &[x]);
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        self.dtype.nmse_limit()
    }
}

/// The vision hidden size (1152) at merge 2, and an odd width.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for n in [1, 7, 129] {
            out.push(Case::new(
                SpatialMerge {
                    dtype,
                    features: 1152,
                    merge: 2,
                },
                &[("n", n)],
            ));
        }
        out.push(Case::new(
            SpatialMerge {
                dtype,
                features: 5,
                merge: 3,
            },
            &[("n", 4)],
        ));
    }
    out
}
