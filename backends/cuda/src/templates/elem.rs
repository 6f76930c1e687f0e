//! What the op templates share about data: the float type an instance keeps in memory, how a
//! value crosses between it and the f32 the math runs in, and the small graph-building steps
//! every reference graph repeats.

use super::{NMSE_BF16, NMSE_F32};
use crate::kir::{Buf, Expr, KernelBuilder, Ty};
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// The element type of an instance's float tensors. Bf16 is storage only: loads widen to f32,
/// and each output is rounded once, when stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatTy {
    F32,
    Bf16,
}

impl FloatTy {
    pub const ALL: [FloatTy; 2] = [FloatTy::F32, FloatTy::Bf16];

    pub fn ty(self) -> Ty {
        match self {
            FloatTy::F32 => Ty::F32,
            FloatTy::Bf16 => Ty::Bf16,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            FloatTy::F32 => DType::F32,
            FloatTy::Bf16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        self.dtype().name()
    }

    pub fn nmse_limit(self) -> f64 {
        match self {
            FloatTy::F32 => NMSE_F32,
            FloatTy::Bf16 => NMSE_BF16,
        }
    }

    /// A loaded element as the f32 the math uses.
    pub fn widen(self, e: Expr) -> Expr {
        match self {
            FloatTy::F32 => e,
            FloatTy::Bf16 => e.cast(Ty::F32),
        }
    }

    /// An f32 result as the element stored.
    pub fn narrow(self, e: Expr) -> Expr {
        match self {
            FloatTy::F32 => e,
            FloatTy::Bf16 => e.cast(Ty::Bf16),
        }
    }

    /// `e` as it reads back after a store: what a consumer of the stored tensor sees.
    pub fn round(self, e: Expr) -> Expr {
        self.widen(self.narrow(e))
    }
}

/// The widest vector access (16 bytes: 8 bf16 or 4 f32, else 2 or 1 elements) that tiles a row
/// of `len` elements of `ty`, so every vector of every row stays aligned.
pub fn vec_width(ty: FloatTy, len: usize) -> usize {
    let widest = match ty {
        FloatTy::F32 => 4,
        FloatTy::Bf16 => 8,
    };
    [8, 4, 2, 1]
        .into_iter()
        .filter(|&w| w <= widest)
        .find(|w| len.is_multiple_of(*w))
        .expect("1 divides everything")
}

/// `a` rounded up to a multiple of `m`.
pub fn round_up(a: usize, m: usize) -> usize {
    a.div_ceil(m) * m
}

/// A graph input; every tensor of a reference graph is one, so the harness fills and binds it.
pub fn input(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add_source(
        Op::Input { name: name.into() },
        TensorType::new(dtype, shape),
    )
    .expect("an input node")
}

/// Adds an op the template knows to be well typed.
pub fn op(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    let what = op.mnemonic();
    g.add(op, inputs)
        .unwrap_or_else(|e| panic!("reference graph {what}: {e}"))
}

/// The usual bounds of a length symbol: at least one, and far more than any case uses.
pub fn length(g: &mut Graph, name: &str) -> Dim {
    g.declare_symbol(name, 1, 1 << 24)
}

/// The thread index along x as I64: the type all index arithmetic uses.
pub fn tid() -> Expr {
    Expr::Special(crate::kir::Special::ThreadIdx(0)).cast(Ty::I64)
}

/// The block index along `axis` as I64.
pub fn bid(axis: u8) -> Expr {
    Expr::Special(crate::kir::Special::BlockIdx(axis)).cast(Ty::I64)
}

/// Threads per block of the one-thread-per-vector kernels.
pub const ROW_THREADS: usize = 256;

/// Blocks to cover `n` items at `per_block` each, for a grid dimension (`U32`).
pub fn blocks_for(n: Expr, per_block: usize) -> Expr {
    let per = Expr::i64(per_block as i64);
    ((n + per.clone() - Expr::i64(1)) / per).cast(Ty::U32)
}

/// `w` consecutive elements from an index aligned to `w`, as registers: one vector access, or a
/// plain load where `w` is 1 (vector accesses are 2 or 4 wide).
pub fn load_wide(b: &mut KernelBuilder, name: &str, buf: Buf, index: Expr, w: usize) -> Vec<Expr> {
    if w == 1 {
        vec![b.let_(&format!("{name}0"), Expr::load(buf, index))]
    } else {
        b.load_vec(name, buf, index, w)
    }
}

/// Stores `values` at an index aligned to their count, as `load_wide` reads them.
pub fn store_wide(b: &mut KernelBuilder, buf: Buf, index: Expr, mut values: Vec<Expr>) {
    if values.len() == 1 {
        b.store(buf, index, values.pop().expect("one value"));
    } else {
        b.store_vec(buf, index, values);
    }
}

/// One thread per `w`-wide vector of every row of `f` elements: `body(row, column)` for the
/// threads that have one.
pub fn for_each_row_vector(
    b: &mut KernelBuilder,
    rows: Expr,
    f: i64,
    w: usize,
    body: impl FnOnce(&mut KernelBuilder, Expr, Expr),
) {
    let per_row = f / w as i64;
    let total = rows * Expr::i64(per_row);
    b.grid(
        blocks_for(total.clone(), ROW_THREADS),
        Expr::u32(1),
        Expr::u32(1),
    );
    let v = b.let_("v", bid(0) * Expr::i64(ROW_THREADS as i64) + tid());
    b.if_(v.clone().lt(total), |b| {
        let row = b.let_("row", v.clone() / Expr::i64(per_row));
        let col = b.let_("col", (v % Expr::i64(per_row)) * Expr::i64(w as i64));
        body(b, row, col);
    });
}
