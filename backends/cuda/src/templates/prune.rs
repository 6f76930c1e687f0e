//! Differential Frame Pruning's keep-mask over merged video tokens (`diff_frame_prune`, exactly
//! `runtime/src/exec/prune.rs`), and the compaction that follows it (`masked_select`: the kept
//! rows, in order, through the prefix sum of `scan`).

use super::block_reduce::{block_reduce, Combine};
use super::elem::{
    bid, blocks_for, for_each_row_vector, input, length, load_wide, op, store_wide, tid, vec_width,
    FloatTy,
};
use super::{scan, Case, Scratch, Sizes, Template};
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{DType, Dim, Graph, Op};

const THREADS: usize = 256;

/// The frame of one merged token, found by walking `grid_thw`: entries are contiguous runs of
/// `t · (h/m) · (w/m)` tokens, frame-major.
struct TokenFrame {
    frame: Expr,
    /// Tokens per frame of the token's entry.
    per_frame: Expr,
    /// The token's index within its frame, where asked for.
    index: Option<Expr>,
}

fn locate(
    b: &mut KernelBuilder,
    grid: Buf,
    entries: Expr,
    token: Expr,
    merge: usize,
    with_index: bool,
) -> TokenFrame {
    let start = b.var("entry_start", Expr::i64(0));
    let frame = b.var("frame", Expr::i64(0));
    let per_frame = b.var("per_frame", Expr::i64(1));
    let index = with_index.then(|| b.var("index", Expr::i64(0)));
    let m = Expr::i64(merge as i64);
    b.for_("e", Expr::i64(0), entries, Expr::i64(1), |b, e| {
        let t = b.let_("t", b.load(grid, e.clone() * Expr::i64(3)));
        let h = b.let_("h", b.load(grid, e.clone() * Expr::i64(3) + Expr::i64(1)));
        let w = b.let_("w", b.load(grid, e * Expr::i64(3) + Expr::i64(2)));
        let pf = b.let_("pf", (h / m.clone()) * (w / m.clone()));
        let end = b.let_("end", Expr::Var(start) + t * pf.clone());
        b.if_(
            token
                .clone()
                .ge(Expr::Var(start))
                .and(token.clone().lt(end.clone())),
            |b| {
                let offset = token.clone() - Expr::Var(start);
                b.assign(frame, offset.clone() / pf.clone());
                if let Some(index) = index {
                    b.assign(index, offset % pf.clone());
                }
                b.assign(per_frame, pf);
            },
        );
        b.assign(start, end);
    });
    TokenFrame {
        frame: Expr::Var(frame),
        per_frame: Expr::Var(per_frame),
        index: index.map(Expr::Var),
    }
}

/// `(pixel_values [m²·n_merged, patch_values], grid_thw i64 [n_entries, 3])` → `out bool
/// [n_merged]`. Kernel 1: one block per token, the mean |Δ| of its m×m patch block against the
/// same token of the previous frame. Kernel 2: the first token of each frame keeps the frame
/// alive if nothing else did (transformers' min_tokens = 1).
#[derive(Clone, Debug)]
pub struct DiffFramePrune {
    pub dtype: FloatTy,
    /// Values per patch, C·p·p (588 for 3 channels of 14×14).
    pub patch_values: usize,
    pub merge: usize,
    pub threshold: f64,
}

impl DiffFramePrune {
    fn distance_kernel(&self) -> Kernel {
        let ty = self.dtype;
        let block = (self.merge * self.merge * self.patch_values) as i64;
        let mut b = KernelBuilder::new(
            format!("diff_frame_prune_distance_{}", ty.name()),
            [THREADS as u32, 1, 1],
        );
        let pixels = b.buffer("pixel_values", ty.ty(), Access::Read);
        let grid = b.buffer("grid_thw", Ty::I64, Access::Read);
        let out = b.buffer("out", Ty::Bool, Access::Write);
        let tokens = b.scalar("n_merged", Ty::I64);
        let entries = b.scalar("n_entries", Ty::I64);
        b.grid(tokens.cast(Ty::U32), Expr::u32(1), Expr::u32(1));
        let token = b.let_("token", bid(0));
        let at = locate(&mut b, grid, entries, token.clone(), self.merge, false);
        let acc = b.var("acc", Expr::f32(0.0));
        b.if_(at.frame.clone().gt(Expr::i64(0)), |b| {
            let cur = b.let_("cur", token.clone() * Expr::i64(block));
            let prev = b.let_(
                "prev",
                (token.clone() - at.per_frame.clone()) * Expr::i64(block),
            );
            b.for_(
                "c",
                tid(),
                Expr::i64(block),
                Expr::i64(THREADS as i64),
                |b, c| {
                    let d = ty.widen(b.load(pixels, cur.clone() + c.clone()))
                        - ty.widen(b.load(pixels, prev.clone() + c));
                    b.assign(acc, Expr::Var(acc) + d.abs());
                },
            );
        });
        let total = block_reduce(&mut b, "diff", Expr::Var(acc), THREADS as u32, Combine::Sum);
        let distance = total / Expr::f32(block as f32) * Expr::f32(255.0);
        let keep = at
            .frame
            .eq(Expr::i64(0))
            .or(distance.gt(Expr::f32(self.threshold as f32)));
        b.if_(tid().eq(Expr::i64(0)), |b| b.store(out, token, keep));
        b.finish()
    }

    fn min_tokens_kernel(&self) -> Kernel {
        let mut b = KernelBuilder::new("diff_frame_prune_min_tokens", [THREADS as u32, 1, 1]);
        let grid = b.buffer("grid_thw", Ty::I64, Access::Read);
        let out = b.buffer("out", Ty::Bool, Access::ReadWrite);
        let tokens = b.scalar("n_merged", Ty::I64);
        let entries = b.scalar("n_entries", Ty::I64);
        b.grid(
            blocks_for(tokens.clone(), THREADS),
            Expr::u32(1),
            Expr::u32(1),
        );
        let token = b.let_("token", bid(0) * Expr::i64(THREADS as i64) + tid());
        let merge = self.merge;
        b.if_(token.clone().lt(tokens), |b| {
            let at = locate(b, grid, entries, token.clone(), merge, true);
            b.if_(
                at.frame
                    .gt(Expr::i64(0))
                    .and(at.index.expect("asked for").eq(Expr::i64(0))),
                |b| {
                    let any = b.var("any", Expr::bool(false));
                    b.for_("j", Expr::i64(0), at.per_frame, Expr::i64(1), |b, j| {
                        b.assign(any, Expr::Var(any).or(b.load(out, token.clone() + j)));
                    });
                    b.if_(Expr::un(crate::kir::UnOp::Not, Expr::Var(any)), |b| {
                        b.store(out, token, Expr::bool(true))
                    });
                },
            );
        });
        b.finish()
    }
}

impl Template for DiffFramePrune {
    fn op(&self) -> &'static str {
        "diff_frame_prune"
    }

    fn name(&self) -> String {
        format!(
            "diff_frame_prune(dtype={},patch_values={},merge={},threshold={})",
            self.dtype.name(),
            self.patch_values,
            self.merge,
            self.threshold
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![self.distance_kernel(), self.min_tokens_kernel()]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let n = length(&mut g, "n_merged");
        let entries = length(&mut g, "n_entries");
        let group = (self.merge * self.merge) as i64;
        let pixels = input(
            &mut g,
            "pixel_values",
            self.dtype.dtype(),
            vec![n.clone() * group, Dim::from(self.patch_values)],
        );
        let grid = input(
            &mut g,
            "grid_thw",
            DType::I64,
            vec![entries, Dim::from(3usize)],
        );
        let out = op(
            &mut g,
            Op::DiffFramePrune {
                threshold: self.threshold,
                merge: self.merge,
                len: n,
            },
            &[pixels, grid],
        );
        g.set_output("out", out);
        g
    }

    fn nmse_limit(&self) -> f64 {
        // A bool output: any flipped token is an error the NMSE of 0/1 values shows plainly.
        0.0
    }
}

/// A `diff_frame_prune` case on a given `grid_thw` (the harness fills only float inputs).
#[derive(Clone, Debug)]
pub struct PruneOnGrid {
    pub prune: DiffFramePrune,
    pub grid: Vec<[i64; 3]>,
}

impl PruneOnGrid {
    pub fn case(prune: DiffFramePrune, grid: Vec<[i64; 3]>) -> Case {
        let group = (prune.merge * prune.merge) as i64;
        let tokens: i64 = grid.iter().map(|[t, h, w]| t * h * w / group).sum();
        let entries = grid.len() as i64;
        Case::new(
            PruneOnGrid { prune, grid },
            &[("n_merged", tokens), ("n_entries", entries)],
        )
    }
}

impl Template for PruneOnGrid {
    fn op(&self) -> &'static str {
        self.prune.op()
    }
    fn name(&self) -> String {
        let grid: Vec<String> = self
            .grid
            .iter()
            .map(|[t, h, w]| format!("{t}x{h}x{w}"))
            .collect();
        format!("{} grid={}", self.prune.name(), grid.join("+"))
    }
    fn kernels(&self) -> Vec<Kernel> {
        self.prune.kernels()
    }
    fn reference(&self) -> Graph {
        self.prune.reference()
    }
    fn int_input(&self, name: &str, _sizes: &Sizes) -> Option<Vec<i64>> {
        (name == "grid_thw").then(|| self.grid.iter().flatten().copied().collect())
    }
    fn nmse_limit(&self) -> f64 {
        self.prune.nmse_limit()
    }
}

/// `masked_select(data [rows, F], mask bool [rows])` → `out [kept, F]`: the scan, then one block
/// per row copying a kept row to its place.
#[derive(Clone, Debug)]
pub struct MaskedSelect {
    pub dtype: FloatTy,
    pub features: usize,
}

impl MaskedSelect {
    fn gather_kernel(&self) -> Kernel {
        let (ty, f, w) = (
            self.dtype,
            self.features as i64,
            vec_width(self.dtype, self.features),
        );
        let mut b = KernelBuilder::new(
            format!("masked_select_gather_{}_f{f}", ty.name()),
            [THREADS as u32, 1, 1],
        );
        let data = b.buffer("data", ty.ty(), Access::Read);
        let mask = b.buffer("mask", Ty::Bool, Access::Read);
        let prefix = scan::Prefix::declare(&mut b);
        let out = b.buffer("out", ty.ty(), Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        for_each_row_vector(&mut b, rows, f, w, |b, row, col| {
            b.if_(b.load(mask, row.clone()), |b| {
                let vals = load_wide(b, "val", data, row.clone() * Expr::i64(f) + col.clone(), w);
                store_wide(b, out, prefix.of(row) * Expr::i64(f) + col, vals);
            });
        });
        b.finish()
    }
}

/// `rows` bools with exactly `count` true, scattered deterministically (a hash order), so the
/// kept rows come in runs and gaps of every length.
pub fn mask_with(rows: i64, count: i64) -> Vec<i64> {
    let hash = |i: i64| {
        (i as u64)
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(31)
    };
    let mut order: Vec<i64> = (0..rows).collect();
    order.sort_by_key(|&i| hash(i));
    let mut mask = vec![0; rows.max(0) as usize];
    for &i in order.iter().take(count.clamp(0, rows) as usize) {
        mask[i as usize] = 1;
    }
    mask
}

impl Template for MaskedSelect {
    fn op(&self) -> &'static str {
        "masked_select"
    }

    fn name(&self) -> String {
        format!(
            "masked_select(dtype={},features={})",
            self.dtype.name(),
            self.features
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![
            scan::scan_tiles("masked_select", "rows"),
            scan::scan_tile_offsets("masked_select", "rows"),
            self.gather_kernel(),
        ]
    }

    fn reference(&self) -> Graph {
        let mut g = Graph::new(self.name());
        let rows = length(&mut g, "rows");
        let kept = g.declare_symbol("kept", 0, 1 << 24);
        let data = input(
            &mut g,
            "data",
            self.dtype.dtype(),
            vec![rows.clone(), Dim::from(self.features)],
        );
        let mask = input(&mut g, "mask", DType::Bool, vec![rows]);
        let out = op(&mut g, Op::MaskedSelect { len: kept }, &[data, mask]);
        g.set_output("out", out);
        g
    }

    fn scratch(&self) -> Vec<Scratch> {
        scan::scratch(Dim::sym("rows"))
    }

    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        (name == "mask").then(|| mask_with(sizes["rows"], sizes["kept"]))
    }

    fn nmse_limit(&self) -> f64 {
        // A copy: exact.
        0.0
    }
}

/// Pruning on videos of one and several entries (real 588 values per patch, merge 2), with
/// random pixels (every token differs, so all are kept: the distance path). The min-token rule
/// needs repeated frames, which `tests/tmpl_ops_prune.rs` builds. Compaction over one tile,
/// and several tiles (`tests/tmpl_ops_scan.rs` runs more tiles than a block: the carried scan).
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in FloatTy::ALL {
        let prune = DiffFramePrune {
            dtype,
            patch_values: 588,
            merge: 2,
            threshold: 0.1,
        };
        out.push(PruneOnGrid::case(prune.clone(), vec![[1, 2, 2]]));
        out.push(PruneOnGrid::case(
            prune.clone(),
            vec![[3, 4, 6], [1, 2, 2], [2, 2, 4]],
        ));
        for (rows, kept) in [(1, 1), (7, 3), (129, 129), (3000, 1000)] {
            out.push(Case::new(
                MaskedSelect {
                    dtype,
                    features: 1536,
                },
                &[("rows", rows), ("kept", kept)],
            ));
        }
        out.push(Case::new(
            MaskedSelect { dtype, features: 6 },
            &[("rows", 5000), ("kept", 4999)],
        ));
    }
    out
}
