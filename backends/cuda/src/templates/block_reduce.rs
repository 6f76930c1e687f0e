//! Block-wide reductions of one f32 per thread: a butterfly of warp shuffles, then each warp's
//! result through shared memory, folded by every thread so all of them hold the total (the
//! norms and softmax need it everywhere, and a second broadcast would cost another barrier).

use crate::kir::{Expr, KernelBuilder, Ty};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Max,
}

impl Combine {
    fn apply(self, a: Expr, b: Expr) -> Expr {
        match self {
            Combine::Sum => a + b,
            Combine::Max => a.max(b),
        }
    }
}

/// Reduces `value` (F32) over the `threads` threads of a one-dimensional block; every thread
/// gets the result. Every thread must reach this call (it holds shuffles and a barrier).
/// `name` keeps the registers and the shared array of several reductions apart.
pub fn block_reduce(
    b: &mut KernelBuilder,
    name: &str,
    value: Expr,
    threads: u32,
    combine: Combine,
) -> Expr {
    assert!(
        threads.is_multiple_of(32) && threads > 0,
        "blocks are whole warps, got {threads} threads"
    );
    let mut acc = b.let_(&format!("{name}_lane"), value);
    for mask in [16, 8, 4, 2, 1] {
        let other = b.shfl_xor(&format!("{name}_x{mask}"), acc.clone(), mask);
        acc = b.let_(&format!("{name}_w{mask}"), combine.apply(acc, other));
    }
    let warps = threads / 32;
    if warps == 1 {
        return acc;
    }
    let partials = b.shared(&format!("{name}_warps"), Ty::F32, warps as usize);
    let warp = b.thread_idx(0) / Expr::u32(32);
    b.if_(b.lane().eq(Expr::u32(0)), |b| b.store(partials, warp, acc));
    b.barrier();
    let mut total = b.load(partials, Expr::u32(0));
    for w in 1..warps {
        total = combine.apply(total, b.load(partials, Expr::u32(w)));
    }
    b.let_(name, total)
}
