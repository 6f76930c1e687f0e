//! The LLM's input embedding: token rows gathered from the embedding table (`embedding`), and
//! the vision features scattered over the rows of the image/video placeholder tokens
//! (`masked_scatter`: true row i takes source row prefix(i), from the scan).

use super::elem::{
    for_each_row_vector, input, length, load_wide, op, store_wide, vec_width, FloatTy,
};
use super::prune::mask_with;
use super::{scan, Case, Scratch, Sizes, Template};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{DType, Dim, Graph, Op};

/// `gather(table [vocab, H], ids i64 [rows])` → `out [rows, H]`. An id outside `[0, vocab)`
/// gives a zero row: the kernel must not read past the table, and the ids come from users.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub dtype: FloatTy,
    pub hidden: usize,
}

impl Template for Embedding {
    fn op(&self) -> &'static str {
        "embedding"
    }

    fn name(&self) -> String {
        format!(
            "embedding(dtype={},hidden={})",
            self.dtype.name(),
            self.hidden
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        let (ty, h, w) = (
            self.dtype,
            self.hidden as i64,
            vec_width(self.dtype, self.hidden),
        );
        let mut b = KernelBuilder::new(format!("embedding_{}_h{h}", ty.name()), [256, 1, 1]);
        let table = b.buffer("table", ty.ty(), Access::Read);
        let ids = b.buffer("ids", Ty::I64, Access::Read);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        let vocab = b.scalar("vocab", Ty::I64);
        for_each_row_vector(&mut b, rows, h, w, |b, row, col| {
            let id = b.let_("id", b.load(ids, row.clone()));
            let dst = b.let_("dst", row * Expr::i64(h) + col.clone());
            let valid = id.clone().ge(Expr::i64(0)).and(id.clone().lt(vocab));
            b.if_else(
                valid,
                |b| {
                    let vals = load_wide(b, "val", table, id * Expr::i64(h) + col, w);
                    store_wide(b, out, dst.clone(), vals);
                },
                |b| store_wide(b, out, dst.clone(), vec![ty.narrow(Expr::f32(0.0)); w]),
            );
        });
        vec![b.finish()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let vocab = length(&mut g, "vocab");
        let table = input(
            &mut g,
            "table",
            self.dtype.dtype(),
            vec![vocab, Dim::from(self.hidden)],
        );
        let ids = input(&mut g, "ids", DType::I64, vec![rows]);
        let out = op(&mut g, Op::Gather { axis: 0 }, &[table, ids]);
        g.set_output("out", out);
        g
    }

    /// Ids spread over the whole table, repeats included.
    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        let (rows, vocab) = (sizes["rows"], sizes["vocab"]);
        (name == "ids").then(|| {
            (0..rows)
                .map(|i| (i * 7919 + i * i * 104_729) % vocab)
                .collect()
        })
    }

    fn nmse_limit(&self) -> f64 {
        // A copy: exact.
        0.0
    }
}

/// `masked_scatter(base [rows, H], mask bool [rows], src [n_src, H])` → `out [rows, H]`: base
/// with its true rows replaced, in order, by the rows of src.
#[derive(Clone, Debug)]
pub struct MaskedScatter {
    pub dtype: FloatTy,
    pub hidden: usize,
}

impl MaskedScatter {
    fn scatter_kernel(&self) -> Kernel {
        let (ty, h, w) = (
            self.dtype,
            self.hidden as i64,
            vec_width(self.dtype, self.hidden),
        );
        let mut b = KernelBuilder::new(format!("masked_scatter_{}_h{h}", ty.name()), [256, 1, 1]);
        let base = b.buffer("base", ty.ty(), Access::Read);
        let mask = b.buffer("mask", Ty::Bool, Access::Read);
        let src = b.buffer("src", ty.ty(), Access::Read);
        let prefix = scan::Prefix::declare(&mut b);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        for_each_row_vector(&mut b, rows, h, w, |b, row, col| {
            let dst = b.let_("dst", row.clone() * Expr::i64(h) + col.clone());
            b.if_else(
                b.load(mask, row.clone()),
                |b| {
                    let vals = load_wide(b, "src", src, prefix.of(row) * Expr::i64(h) + col, w);
                    store_wide(b, out, dst.clone(), vals);
                },
                |b| {
                    let vals = load_wide(b, "base", base, dst.clone(), w);
                    store_wide(b, out, dst.clone(), vals);
                },
            );
        });
        b.finish()
    }
}

impl Template for MaskedScatter {
    fn op(&self) -> &'static str {
        "masked_scatter"
    }

    fn name(&self) -> String {
        format!(
            "masked_scatter(dtype={},hidden={})",
            self.dtype.name(),
            self.hidden
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![
            scan::scan_tiles("masked_scatter", "rows"),
            scan::scan_tile_offsets("masked_scatter", "rows"),
            self.scatter_kernel(),
        ]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let n_src = g.declare_symbol("n_src", 0, 1 << 24);
        let dt = self.dtype.dtype();
        let base = input(
            &mut g,
            "base",
            dt,
            vec![rows.clone(), Dim::from(self.hidden)],
        );
        let mask = input(&mut g, "mask", DType::Bool, vec![rows]);
        let src = input(&mut g, "src", dt, vec![n_src, Dim::from(self.hidden)]);
        let out = op(&mut g, Op::MaskedScatter, &[base, mask, src]);
        g.set_output("out", out);
        g
    }

    fn scratch(&self) -> Vec<Scratch> {
        scan::scratch(Dim::sym("rows"))
    }

    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        (name == "mask").then(|| mask_with(sizes["rows"], sizes["n_src"]))
    }

    fn nmse_limit(&self) -> f64 {
        // A copy: exact.
        0.0
    }
}

/// Both LLM hidden sizes; prompts of one token, a few, and an image's worth of placeholders
/// spanning several scan tiles.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        for hidden in [1536, 3584] {
            for rows in [1, 7, 129] {
                out.push(Case::new(
                    Embedding { dtype, hidden },
                    &[("rows", rows), ("vocab", 1000)],
                ));
            }
            for (rows, n_src) in [(1, 0), (7, 7), (129, 100)] {
                out.push(Case::new(
                    MaskedScatter { dtype, hidden },
                    &[("rows", rows), ("n_src", n_src)],
                ));
            }
        }
        out.push(Case::new(
            MaskedScatter { dtype, hidden: 6 },
            &[("rows", 3000), ("n_src", 2500)],
        ));
        out.push(Case::new(
            Embedding { dtype, hidden: 7 },
            &[("rows", 5), ("vocab", 3)],
        ));
    }
    out
}
