//! The exclusive prefix sum over a bool mask that compaction (`masked_select`) and expansion
//! (`masked_scatter`) both need: the destination (or source) row of every true row.
//!
//! Two kernels, any length: `scan_tiles` scans each tile of `TILE` flags in one block (four per
//! thread, then a Hillis–Steele scan of the thread sums in shared memory) and writes each tile's
//! total; `scan_tile_offsets` scans those totals in one block, a chunk of `THREADS` at a time
//! with a running carry. Row `i`'s prefix is then `local[i] + tile_offsets[i / TILE]`.

use super::elem::{bid, tid};
use super::Scratch;
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::Dim;

pub const THREADS: usize = 256;
const ITEMS: usize = 4;
pub const TILE: usize = THREADS * ITEMS;

/// Scratch buffer names; the consumer kernel declares the same two to read them.
pub const LOCAL: &str = "scan_local";
pub const TILE_SUMS: &str = "scan_tile_sums";
pub const TILE_OFFSETS: &str = "scan_tile_offsets";

/// The scan's scratch for `len` flags: one prefix per flag, one sum and one offset per tile.
pub fn scratch(len: Dim) -> Vec<Scratch> {
    let t = Dim::FloorDiv(
        Box::new(Dim::Add(
            Box::new(len.clone()),
            Box::new(Dim::Const(TILE as i64 - 1)),
        )),
        Box::new(Dim::Const(TILE as i64)),
    );
    vec![
        Scratch {
            name: LOCAL.into(),
            elem: Ty::I64,
            len,
        },
        Scratch {
            name: TILE_SUMS.into(),
            elem: Ty::I64,
            len: t.clone(),
        },
        Scratch {
            name: TILE_OFFSETS.into(),
            elem: Ty::I64,
            len: t,
        },
    ]
}

/// Inclusive scan of one I64 per thread across the block: the thread's inclusive prefix, and the
/// shared array holding all of them (the last is the block's total). Every thread must reach it.
fn block_inclusive_scan(b: &mut KernelBuilder, value: Expr) -> (Expr, Buf) {
    let sh = b.shared("scan", Ty::I64, THREADS);
    b.store(sh, tid(), value);
    b.barrier();
    let mut offset = 1;
    while offset < THREADS {
        let add = b.var(&format!("add{offset}"), Expr::i64(0));
        b.if_(tid().ge(Expr::i64(offset as i64)), |b| {
            b.assign(add, b.load(sh, tid() - Expr::i64(offset as i64)))
        });
        b.barrier();
        b.store(sh, tid(), b.load(sh, tid()) + Expr::Var(add));
        b.barrier();
        offset *= 2;
    }
    (b.let_("inclusive", b.load(sh, tid())), sh)
}

/// `scan_tiles(mask, scan_local, scan_tile_sums, <len_name>)`: one block per tile.
pub fn scan_tiles(prefix: &str, len_name: &str) -> Kernel {
    let mut b = KernelBuilder::new(format!("{prefix}_scan_tiles"), [THREADS as u32, 1, 1]);
    let mask = b.buffer("mask", Ty::Bool, Access::Read);
    let local = b.buffer(LOCAL, Ty::I64, Access::Write);
    let sums = b.buffer(TILE_SUMS, Ty::I64, Access::Write);
    let len = b.scalar(len_name, Ty::I64);
    b.grid(
        ((len.clone() + Expr::i64(TILE as i64 - 1)) / Expr::i64(TILE as i64)).cast(Ty::U32),
        Expr::u32(1),
        Expr::u32(1),
    );
    let first = b.let_(
        "first",
        bid(0) * Expr::i64(TILE as i64) + tid() * Expr::i64(ITEMS as i64),
    );
    let flags: Vec<Expr> = (0..ITEMS)
        .map(|k| {
            let flag = b.var(&format!("flag{k}"), Expr::i64(0));
            let at = first.clone() + Expr::i64(k as i64);
            b.if_(at.clone().lt(len.clone()), |b| {
                b.assign(flag, b.load(mask, at).cast(Ty::I64))
            });
            Expr::Var(flag)
        })
        .collect();
    let own = flags
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("ITEMS > 0");
    let (inclusive, _) = block_inclusive_scan(&mut b, own.clone());
    let mut running = b.let_("running", inclusive - own);
    for (k, flag) in flags.into_iter().enumerate() {
        let at = first.clone() + Expr::i64(k as i64);
        let here = running.clone();
        b.if_(at.clone().lt(len.clone()), |b| b.store(local, at, here));
        running = b.let_(&format!("running{k}"), running + flag);
    }
    b.if_(tid().eq(Expr::i64(THREADS as i64 - 1)), |b| {
        b.store(sums, bid(0), running)
    });
    b.finish()
}

/// `scan_tile_offsets(scan_tile_sums, scan_tile_offsets, <len_name>)`: one block.
pub fn scan_tile_offsets(prefix: &str, len_name: &str) -> Kernel {
    let mut b = KernelBuilder::new(
        format!("{prefix}_scan_tile_offsets"),
        [THREADS as u32, 1, 1],
    );
    let sums = b.buffer(TILE_SUMS, Ty::I64, Access::Read);
    let offsets = b.buffer(TILE_OFFSETS, Ty::I64, Access::Write);
    let len = b.scalar(len_name, Ty::I64);
    let tiles = b.let_(
        "tiles",
        (len + Expr::i64(TILE as i64 - 1)) / Expr::i64(TILE as i64),
    );
    let carry = b.var("carry", Expr::i64(0));
    // Every thread runs the same chunks, so the barriers inside stay uniform.
    b.for_(
        "chunk",
        Expr::i64(0),
        tiles.clone(),
        Expr::i64(THREADS as i64),
        |b, chunk| {
            let at = b.let_("at", chunk + tid());
            let own = b.var("own", Expr::i64(0));
            b.if_(at.clone().lt(tiles.clone()), |b| {
                b.assign(own, b.load(sums, at.clone()))
            });
            let (inclusive, all) = block_inclusive_scan(b, Expr::Var(own));
            b.if_(at.clone().lt(tiles.clone()), |b| {
                b.store(offsets, at, Expr::Var(carry) + inclusive - Expr::Var(own))
            });
            let total = b.let_("total", b.load(all, Expr::i64(THREADS as i64 - 1)));
            // Everyone has read the chunk's total before the next chunk overwrites the array.
            b.barrier();
            b.assign(carry, Expr::Var(carry) + total);
        },
    );
    b.finish()
}

/// In a consumer kernel: declares the two scratch buffers and returns the expression of row
/// `i`'s exclusive prefix.
pub struct Prefix {
    local: Buf,
    offsets: Buf,
}

impl Prefix {
    pub fn declare(b: &mut KernelBuilder) -> Prefix {
        Prefix {
            local: b.buffer(LOCAL, Ty::I64, Access::Read),
            offsets: b.buffer(TILE_OFFSETS, Ty::I64, Access::Read),
        }
    }

    pub fn of(&self, i: Expr) -> Expr {
        Expr::load(self.local, i.clone()) + Expr::load(self.offsets, i / Expr::i64(TILE as i64))
    }
}
