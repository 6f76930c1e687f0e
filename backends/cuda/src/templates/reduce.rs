//! `Reduce`: sum, max or mean over axes. When the reduced axes are the trailing ones each output
//! element is a contiguous row, and one block reduces it (a strided loop per thread, a warp
//! shuffle tree, then the warps' partials through shared memory). Otherwise one thread walks
//! its output element's reduced elements with a strided loop.
//!
//! Float sums accumulate in f32; the reference accumulates in f64, which for the row lengths of
//! these graphs stays far inside the f32 NMSE limit. Max propagates NaN, as torch.amax.

use super::chain::{global_index, kernel_name, BLOCK};
use super::elementwise::{self, mem_ty, reg_ty};
use super::layout::{self, Index};
use super::{Template, NMSE_F32};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{DType, Graph, Op, ReduceOp, TensorType};

const WARP: u32 = 32;

#[derive(Clone, Debug)]
pub struct Reduce {
    op: ReduceOp,
    axes: Vec<usize>,
    input: TensorType,
    graph: Graph,
    label: String,
}

impl Reduce {
    pub fn new(
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
        input: TensorType,
    ) -> Result<Reduce, String> {
        mem_ty(input.dtype)?;
        let mut graph = Graph::new(op.mnemonic());
        let x = graph
            .add_source(Op::Input { name: "x".into() }, input.clone())
            .map_err(|e| e.to_string())?;
        let out = graph
            .add(
                Op::Reduce {
                    op,
                    axes: axes.clone(),
                    keep_dims,
                },
                &[x],
            )
            .map_err(|e| e.to_string())?;
        for s in layout::symbols_of(input.shape.iter()) {
            graph.declare_symbol(&s, 0, i64::MAX / 4);
        }
        graph.set_output("out", out);
        let label = format!(
            "{}(axes={axes:?},keep_dims={keep_dims},x={})",
            op.mnemonic(),
            input.to_string().replace(' ', "")
        )
        .replace(", ", ",");
        Ok(Reduce {
            op,
            axes,
            input,
            graph,
            label,
        })
    }

    /// True when the reduced axes are exactly the trailing ones: each output is one row.
    fn reduces_rows(&self) -> bool {
        let rank = self.input.rank();
        let mut sorted = self.axes.clone();
        sorted.sort_unstable();
        !sorted.is_empty()
            && sorted
                .iter()
                .enumerate()
                .all(|(i, &a)| a == rank - sorted.len() + i)
    }

    fn dtype(&self) -> DType {
        self.input.dtype
    }

    fn identity(&self) -> Expr {
        match (self.op, reg_ty(self.dtype())) {
            (ReduceOp::Max, Ty::F32) => Expr::f32(f32::NEG_INFINITY),
            (ReduceOp::Max, _) => Expr::i64(i64::MIN),
            (_, ty) => elementwise::zero(ty),
        }
    }

    fn combine(&self, acc: Expr, x: Expr) -> Expr {
        match (self.op, reg_ty(self.dtype())) {
            (ReduceOp::Max, Ty::F32) => Expr::select(
                acc.clone().ne(acc.clone()).or(x.clone().ne(x.clone())),
                Expr::f32(f32::NAN),
                acc.max(x),
            ),
            (ReduceOp::Max, _) => acc.max(x),
            _ => acc + x,
        }
    }

    /// The accumulated value as the output's: a mean divides by the count (an empty mean is
    /// 0/0, NaN, as in the reference).
    fn finish(&self, acc: Expr, count: Expr) -> Expr {
        let v = if self.op == ReduceOp::Mean {
            acc / count.cast(Ty::F32)
        } else {
            acc
        };
        elementwise::to_memory(elementwise::round_to(v, self.dtype()), self.dtype())
    }

    fn buffers(
        &self,
        b: &mut KernelBuilder,
    ) -> (crate::kir::Buf, crate::kir::Buf, layout::Symbols) {
        let elem = mem_ty(self.dtype()).expect("checked in new");
        let x = b.buffer("x", elem, Access::Read);
        let out = b.buffer("out", elem, Access::Write);
        let syms = layout::declare_symbols(b, &layout::symbols_of(self.input.shape.iter()));
        (x, out, syms)
    }

    /// One block per output row.
    fn row_kernel(&self) -> Kernel {
        let mut b = KernelBuilder::new(kernel_name(self.op.mnemonic(), &self.label), [BLOCK, 1, 1]);
        let (x, out, syms) = self.buffers(&mut b);
        let shape = layout::dims(&self.input.shape, &syms);
        let kept = self.input.rank() - self.axes.len();
        let rows = layout::numel(&shape[..kept]);
        let len = layout::numel(&shape[kept..]);
        b.grid(rows.clone().max(Expr::i64(1)), Expr::u32(1), Expr::u32(1));
        let row = b.let_("row", b.block_idx(0).cast(Ty::I64));
        let tid = b.let_("tid", b.thread_idx(0).cast(Ty::I64));
        let partials = b.shared("partials", reg_ty(self.dtype()), (BLOCK / WARP) as usize);
        // The row is block-uniform, so this branch never splits a block at its barrier.
        b.if_(layout::lt(row.clone(), rows), |b| {
            let acc = b.var("acc", self.identity());
            let base = b.let_("base", layout::mul(row.clone(), len.clone()));
            b.for_(
                "i",
                tid.clone(),
                len.clone(),
                Expr::i64(BLOCK as i64),
                |b, i| {
                    let v = elementwise::from_memory(
                        b.load(x, layout::add(base.clone(), i)),
                        self.dtype(),
                    );
                    b.assign(acc, self.combine(Expr::Var(acc), v));
                },
            );
            let warp_total = self.warp_reduce(b, Expr::Var(acc));
            let lane = b.let_("lane", b.lane().cast(Ty::I64));
            let warp = b.let_("warp", tid.clone() / Expr::i64(WARP as i64));
            b.if_(lane.clone().eq(Expr::i64(0)), |b| {
                b.store(partials, warp, warp_total)
            });
            b.barrier();
            b.if_(tid.clone().lt(Expr::i64(WARP as i64)), |b| {
                let partial = Expr::select(
                    tid.clone().lt(Expr::i64((BLOCK / WARP) as i64)),
                    b.load(
                        partials,
                        tid.clone().min(Expr::i64((BLOCK / WARP) as i64 - 1)),
                    ),
                    self.identity(),
                );
                let total = self.warp_reduce(b, partial);
                b.if_(tid.clone().eq(Expr::i64(0)), |b| {
                    b.store(out, row.clone(), self.finish(total, len.clone()))
                });
            });
        });
        b.finish()
    }

    fn warp_reduce(&self, b: &mut KernelBuilder, v: Expr) -> Expr {
        let mut v = b.let_("partial", v);
        let mut mask = WARP / 2;
        while mask > 0 {
            let other = b.shfl_xor("other", v.clone(), mask);
            v = b.let_("partial", self.combine(v, other));
            mask /= 2;
        }
        v
    }

    /// One thread per output element, looping over its reduced elements.
    fn strided_kernel(&self) -> Kernel {
        let mut b = KernelBuilder::new(kernel_name(self.op.mnemonic(), &self.label), [BLOCK, 1, 1]);
        let (x, out, syms) = self.buffers(&mut b);
        let shape = layout::dims(&self.input.shape, &syms);
        let rank = shape.len();
        let kept_axes: Vec<usize> = (0..rank).filter(|a| !self.axes.contains(a)).collect();
        let kept_shape: Vec<Expr> = kept_axes.iter().map(|&a| shape[a].clone()).collect();
        let reduced_shape: Vec<Expr> = self.axes.iter().map(|&a| shape[a].clone()).collect();
        let total = layout::numel(&kept_shape);
        let count = layout::numel(&reduced_shape);
        let gid = global_index(&mut b, &total);
        b.if_(layout::lt(gid.clone(), total), |b| {
            let kept = Index::flat(gid.clone()).get_multi(&kept_shape);
            let acc = b.var("acc", self.identity());
            b.for_("j", Expr::i64(0), count.clone(), Expr::i64(1), |b, j| {
                let reduced = Index::flat(j).get_multi(&reduced_shape);
                let mut at = vec![Expr::i64(0); rank];
                for (k, &a) in kept_axes.iter().enumerate() {
                    at[a] = kept[k].clone();
                }
                for (k, &a) in self.axes.iter().enumerate() {
                    at[a] = reduced[k].clone();
                }
                let flat = Index::multi(at).get_flat(b, &shape);
                let v = elementwise::from_memory(b.load(x, flat), self.dtype());
                b.assign(acc, self.combine(Expr::Var(acc), v));
            });
            b.store(out, gid.clone(), self.finish(Expr::Var(acc), count.clone()));
        });
        b.finish()
    }
}

impl Template for Reduce {
    fn op(&self) -> &'static str {
        self.op.mnemonic()
    }

    fn name(&self) -> String {
        self.label.clone()
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![if self.reduces_rows() {
            self.row_kernel()
        } else {
            self.strided_kernel()
        }]
    }

    fn reference(&self) -> Graph {
        self.graph.clone()
    }

    fn int_input(&self, name: &str, sizes: &super::Sizes) -> Option<Vec<i64>> {
        super::index::int_input(&self.graph, name, sizes)
    }

    fn nmse_limit(&self) -> f64 {
        NMSE_F32
    }
}
