//! Data-dependent indexing: gather and the vision position and segment ids (computed per element
//! inside a chain kernel), masked row select and scatter (a prefix sum over the mask, then a
//! copy: `MaskedRows`), and the integer inputs their test cases need.

use super::chain::{global_index, kernel_name, Emitter};
use super::elementwise::mem_ty;
use super::layout::{self, Index};
use super::{scan, Scratch, Sizes, Template, NMSE_F32};
use crate::kir::{Access, Expr, Kernel, KernelBuilder, Ty};
use std::collections::HashMap;
use vl3c_ir::{Dim, Graph, NodeId, Op, TensorType};

/// `data[.., indices[..], ..]`. An index outside the data (which the reference rejects) is
/// clamped, so a bad token id can never read outside the buffer.
pub(crate) fn gather(
    em: &mut Emitter,
    b: &mut KernelBuilder,
    id: NodeId,
    axis: usize,
    idx: &mut Index,
) -> Expr {
    let g = em.graph;
    let node = g.node(id);
    let (data, indices) = (node.inputs[0], node.inputs[1]);
    let rank = g.ty(indices).rank();
    let multi = idx.get_multi(&em.shape(id));
    let at = em.value(b, indices, Index::multi(multi[axis..axis + rank].to_vec()));
    let last = layout::sub(em.dim(&g.ty(data).shape[axis]), Expr::i64(1));
    let at = b.let_("row", at.max(Expr::i64(0)).min(last));
    let mut src = multi[..axis].to_vec();
    src.push(at);
    src.extend_from_slice(&multi[axis + rank..]);
    em.value(b, data, Index::multi(src))
}

/// What the loop over `grid_thw` entries knows of the entry that holds a patch.
struct Located {
    /// Frames of all earlier entries: the segment of the entry's first frame.
    frames_before: Expr,
    /// The patch's index from the entry's first patch.
    in_entry: Expr,
    per_frame: Expr,
    width: Expr,
    entry: Expr,
}

/// Loops over the entries of `grid` (i64 `[n, 3]`) with the running patch and frame offsets and
/// calls `found` inside the branch taken for the entry that holds `patch`.
fn locate_patch(
    em: &mut Emitter,
    b: &mut KernelBuilder,
    grid: NodeId,
    patch: &Expr,
    mut found: impl FnMut(&mut Emitter, &mut KernelBuilder, Located),
) {
    let entries = em.dim(&em.graph.ty(grid).shape[0]);
    let patch_offset = b.var("patch_offset", Expr::i64(0));
    let frame_offset = b.var("frame_offset", Expr::i64(0));
    b.for_("entry", Expr::i64(0), entries, Expr::i64(1), |b, e| {
        em.scoped(|em| {
            let mut field = |b: &mut KernelBuilder, k: i64| {
                em.value(b, grid, Index::multi(vec![e.clone(), Expr::i64(k)]))
            };
            let (frames, height, width) = (field(b, 0), field(b, 1), field(b, 2));
            let per_frame = b.let_("per_frame", height * width.clone());
            let patches = b.let_("patches", frames.clone() * per_frame.clone());
            let start = Expr::Var(patch_offset);
            let holds = patch
                .clone()
                .ge(start.clone())
                .and(patch.clone().lt(start.clone() + patches.clone()));
            b.if_(holds, |b| {
                em.scoped(|em| {
                    let in_entry = b.let_("in_entry", patch.clone() - start.clone());
                    let at = Located {
                        frames_before: Expr::Var(frame_offset),
                        in_entry,
                        per_frame,
                        width,
                        entry: e.clone(),
                    };
                    found(em, b, at)
                })
            });
            b.assign(patch_offset, start + patches);
            b.assign(frame_offset, Expr::Var(frame_offset) + frames);
        })
    });
}

/// transformers' `get_vision_position_ids`: the (row, col) of a patch — blocks of m×m patches
/// row by row, patches within a block row by row — repeated for every frame of its entry.
pub(crate) fn vision_position_id(
    em: &mut Emitter,
    b: &mut KernelBuilder,
    id: NodeId,
    idx: &mut Index,
) -> Expr {
    let node = em.graph.node(id);
    let (grid, merge) = (node.inputs[0], node.inputs[1]);
    let multi = idx.get_multi(&em.shape(id));
    let (patch, coord) = (multi[0].clone(), multi[1].clone());
    let row = b.var("pos_row", Expr::i64(0));
    let col = b.var("pos_col", Expr::i64(0));
    locate_patch(em, b, grid, &patch, |em, b, at| {
        // A non-positive merge size (which the reference rejects) is read as 1.
        let merge_size = em.value(b, merge, Index::multi(vec![at.entry.clone()]));
        let m = b.let_("merge", merge_size.max(Expr::i64(1)));
        let local = b.let_("in_frame", at.in_entry % at.per_frame);
        let blocks_per_row = b.let_("blocks_per_row", (at.width / m.clone()).max(Expr::i64(1)));
        let block_size = m.clone() * m.clone();
        let block = b.let_("block", local.clone() / block_size.clone());
        let within = b.let_("within", local % block_size);
        b.assign(
            row,
            (block.clone() / blocks_per_row.clone()) * m.clone() + within.clone() / m.clone(),
        );
        b.assign(col, (block % blocks_per_row) * m.clone() + within % m);
    });
    Expr::select(coord.eq(Expr::i64(0)), Expr::Var(row), Expr::Var(col))
}

/// The running frame index of a patch over all entries: its attention segment.
pub(crate) fn segment_id(
    em: &mut Emitter,
    b: &mut KernelBuilder,
    id: NodeId,
    idx: &mut Index,
) -> Expr {
    let grid = em.graph.node(id).inputs[0];
    let patch = idx.get_flat(b, &em.shape(id));
    let segment = b.var("segment", Expr::i64(0));
    locate_patch(em, b, grid, &patch, |_, b, at| {
        b.assign(segment, at.frames_before + at.in_entry / at.per_frame)
    });
    Expr::Var(segment)
}

/// A deterministic stream of pseudo-random numbers (splitmix64), so cases are reproducible.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn env(sizes: &Sizes) -> HashMap<String, i64> {
    sizes.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn eval(d: &Dim, sizes: &Sizes) -> i64 {
    d.eval(&env(sizes))
        .unwrap_or_else(|e| panic!("a case leaves a size unbound: {e}"))
}

/// `(t, h, w, merge)` per entry: `entries` entries holding `patches` patches in all, each entry's
/// h and w divisible by its merge size (2 where its share allows, else 1), some with two frames.
pub(crate) fn grid_plan(patches: i64, entries: i64) -> Vec<[i64; 4]> {
    (0..entries)
        .map(|e| {
            let share = patches / entries + i64::from(e < patches % entries);
            let m = if share > 0 && share % 4 == 0 { 2 } else { 1 };
            let mut rest = share / (m * m);
            let t = if rest >= 2 && rest % 2 == 0 { 2 } else { 1 };
            rest /= t;
            let a = (1..=rest.max(1))
                .take_while(|a| a * a <= rest)
                .filter(|a| rest % a == 0)
                .last()
                .unwrap_or(1);
            [t, m * a, m * (rest / a), m]
        })
        .collect()
}

/// Exactly `count` of `rows` rows true, spread evenly (all of them when `count` exceeds `rows`).
pub(crate) fn spread_mask(rows: i64, count: i64) -> Vec<i64> {
    let count = count.clamp(0, rows);
    (0..rows)
        .map(|r| i64::from((r + 1) * count / rows.max(1) > r * count / rows.max(1)))
        .collect()
}

/// Values for the integer or bool input `name` of `graph`, fitting how it is used: in-range
/// gather indices, a consistent `grid_thw`/`merge_sizes` pair, otherwise non-zero ints in
/// [-50, 50] (so an integer division never divides by zero) and mixed bools.
pub(crate) fn int_input(graph: &Graph, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
    let (id, _, ty) = graph.inputs().find(|(_, n, _)| *n == name)?;
    if ty.dtype.is_float() {
        return None;
    }
    let count: i64 = ty.shape.iter().map(|d| eval(d, sizes)).product();
    // The values reach their consumer through data movement (token ids reshaped, then gathered).
    let mut reaching = vec![id];
    for (i, node) in graph.nodes.iter().enumerate() {
        let moves_data = matches!(
            node.op,
            Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Slice { .. }
                | Op::Broadcast { .. }
                | Op::Fold
        );
        if moves_data && reaching.contains(&node.inputs[0]) {
            reaching.push(NodeId(i as u32));
        }
    }
    for user in &graph.nodes {
        match (
            &user.op,
            user.inputs.iter().position(|i| reaching.contains(i)),
        ) {
            (Op::Gather { axis }, Some(1)) => {
                let rows = eval(&graph.ty(user.inputs[0]).shape[*axis], sizes).max(1);
                return Some(
                    (0..count)
                        .map(|i| (mix(i as u64) % rows as u64) as i64)
                        .collect(),
                );
            }
            (Op::VisionPositionIds { len } | Op::SegmentIds { len }, Some(k)) => {
                let entries = eval(&graph.ty(user.inputs[0]).shape[0], sizes);
                let plan = grid_plan(eval(len, sizes), entries);
                return Some(if k == 0 {
                    plan.iter().flat_map(|e| e[..3].to_vec()).collect()
                } else {
                    plan.iter().map(|e| e[3]).collect()
                });
            }
            _ => {}
        }
    }
    let seed = name.bytes().fold(17u64, |h, c| mix(h ^ c as u64));
    Some(
        (0..count)
            .map(|i| {
                let r = mix(seed ^ i as u64);
                if ty.dtype == vl3c_ir::DType::Bool {
                    (r & 1) as i64
                } else {
                    let v = (r % 50) as i64 + 1;
                    if r & (1 << 40) != 0 {
                        -v
                    } else {
                        v
                    }
                }
            })
            .collect(),
    )
}

/// Masked row select (`data [N, ..]`, `mask [N]` → the true rows, in order) or masked row
/// scatter (`base [N, ..]`, `mask [N]`, `src [M, ..]` → base with the true rows replaced by src's
/// rows, in order). The mask's exclusive prefix sum (`scan`'s two kernels, any length) gives
/// every true row its destination (select) or source (scatter) row; a third kernel copies.
#[derive(Clone, Debug)]
pub struct MaskedRows {
    graph: Graph,
    scatter: bool,
    label: String,
}

impl MaskedRows {
    /// `masked_select(data, mask)` into `len` rows.
    pub fn select(data: TensorType, len: Dim) -> Result<MaskedRows, String> {
        let label = format!(
            "masked_select(len={len},data={})",
            data.to_string().replace(' ', "")
        );
        Self::build(vec![("data", data)], Op::MaskedSelect { len }, label, false)
    }

    /// `masked_scatter(base, mask, src)`.
    pub fn scatter(base: TensorType, src: TensorType) -> Result<MaskedRows, String> {
        let label = format!(
            "masked_scatter(base={},src={})",
            base.to_string().replace(' ', ""),
            src.to_string().replace(' ', "")
        );
        Self::build(
            vec![("base", base), ("src", src)],
            Op::MaskedScatter,
            label,
            true,
        )
    }

    fn build(
        tensors: Vec<(&str, TensorType)>,
        op: Op,
        label: String,
        scatter: bool,
    ) -> Result<MaskedRows, String> {
        let mut graph = Graph::new(op.mnemonic());
        let rows = tensors[0]
            .1
            .shape
            .first()
            .cloned()
            .ok_or("masked rows need a tensor of rank ≥ 1")?;
        // The scan kernels take the row count as a scalar named like its symbol.
        if !matches!(rows, Dim::Sym(_)) {
            return Err(format!("the row count of masked rows is a symbol (the scan reads it as a parameter), not `{rows}`"));
        }
        mem_ty(tensors[0].1.dtype)?;
        let mask_ty = TensorType::new(vl3c_ir::DType::Bool, vec![rows]);
        let data = graph
            .add_source(
                Op::Input {
                    name: tensors[0].0.into(),
                },
                tensors[0].1.clone(),
            )
            .map_err(|e| e.to_string())?;
        let mask = graph
            .add_source(
                Op::Input {
                    name: "mask".into(),
                },
                mask_ty,
            )
            .map_err(|e| e.to_string())?;
        let mut operands = vec![data, mask];
        if let Some((name, ty)) = tensors.get(1) {
            operands.push(
                graph
                    .add_source(
                        Op::Input {
                            name: name.to_string(),
                        },
                        ty.clone(),
                    )
                    .map_err(|e| e.to_string())?,
            );
        }
        let out = graph.add(op, &operands).map_err(|e| e.to_string())?;
        let symbols = layout::symbols_of(graph.nodes.iter().flat_map(|n| n.ty.shape.iter()));
        for s in symbols {
            graph.declare_symbol(&s, 0, i64::MAX / 4);
        }
        graph.set_output("out", out);
        Ok(MaskedRows {
            graph,
            scatter,
            label,
        })
    }

    fn input_ty(&self, name: &str) -> &TensorType {
        self.graph
            .inputs()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, t)| t)
            .expect("an input this template made")
    }

    fn rows(&self) -> &Dim {
        &self.input_ty("mask").shape[0]
    }

    /// Select: each element of a true row goes to its row's place. Scatter: each output element
    /// is the base's, or for a true row, the source row its position names.
    fn copy_kernel(&self) -> Kernel {
        let family = if self.scatter {
            "masked_scatter"
        } else {
            "masked_select"
        };
        let mut b = KernelBuilder::new(
            kernel_name(family, &self.label),
            [super::chain::BLOCK, 1, 1],
        );
        let data_name = if self.scatter { "base" } else { "data" };
        let data_ty = self.input_ty(data_name).clone();
        let elem = mem_ty(data_ty.dtype).expect("checked in build");
        let data = b.buffer(data_name, elem, Access::Read);
        let mask = b.buffer("mask", Ty::Bool, Access::Read);
        let src = self.scatter.then(|| b.buffer("src", elem, Access::Read));
        let prefix = scan::Prefix::declare(&mut b);
        let out = b.buffer("out", elem, Access::Write);
        let out_ty = self.graph.ty(self.graph.outputs[0].1).clone();
        let mut dims: Vec<&Dim> = data_ty.shape.iter().chain(out_ty.shape.iter()).collect();
        let src_ty = self.scatter.then(|| self.input_ty("src").clone());
        dims.extend(src_ty.iter().flat_map(|t| t.shape.iter()));
        let syms = layout::declare_symbols(&mut b, &layout::symbols_of(dims));
        let row = layout::numel(&layout::dims(&data_ty.shape[1..], &syms));
        let total = layout::mul(layout::dim(&data_ty.shape[0], &syms), row.clone());
        let gid = global_index(&mut b, &total);
        b.if_(layout::lt(gid.clone(), total), |b| {
            let r = b.let_("r", layout::div(gid.clone(), row.clone()));
            let c = b.let_("c", layout::rem(gid.clone(), row.clone()));
            let taken = b.let_("taken", b.load(mask, r.clone()));
            match src {
                None => {
                    let len = layout::dim(&out_ty.shape[0], &syms);
                    b.if_(taken, |b| {
                        let dst = b.let_("dst", prefix.of(r));
                        // A mask with more true rows than `len` (which the reference rejects)
                        // writes only the first `len`.
                        b.if_(dst.clone().lt(len), |b| {
                            b.store(
                                out,
                                layout::add(layout::mul(dst, row.clone()), c),
                                b.load(data, gid.clone()),
                            )
                        });
                    });
                }
                Some(src) => {
                    let src_rows = layout::dim(
                        &src_ty.as_ref().expect("scatter has a source").shape[0],
                        &syms,
                    );
                    let v = b.var("v", b.load(data, gid.clone()));
                    b.if_(taken, |b| {
                        let from = b.let_("from", prefix.of(r));
                        b.if_(from.clone().lt(src_rows), |b| {
                            b.assign(
                                v,
                                b.load(src, layout::add(layout::mul(from, row.clone()), c)),
                            )
                        });
                    });
                    b.store(out, gid.clone(), Expr::Var(v));
                }
            }
        });
        b.finish()
    }
}

impl Template for MaskedRows {
    fn op(&self) -> &'static str {
        if self.scatter {
            "masked_scatter"
        } else {
            "masked_select"
        }
    }

    fn name(&self) -> String {
        self.label.clone()
    }

    fn kernels(&self) -> Vec<Kernel> {
        let Dim::Sym(rows) = self.rows() else {
            unreachable!("checked in build")
        };
        let prefix = kernel_name(
            if self.scatter {
                "masked_scatter"
            } else {
                "masked_select"
            },
            &self.label,
        );
        vec![
            scan::scan_tiles(&prefix, rows),
            scan::scan_tile_offsets(&prefix, rows),
            self.copy_kernel(),
        ]
    }

    fn reference(&self) -> Graph {
        self.graph.clone()
    }

    fn scratch(&self) -> Vec<Scratch> {
        scan::scratch(self.rows().clone())
    }

    /// The mask selects exactly as many rows as the output (select) or the source (scatter)
    /// holds.
    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        if name != "mask" {
            return int_input(&self.graph, name, sizes);
        }
        let kept = if self.scatter {
            &self.input_ty("src").shape[0]
        } else {
            &self.graph.ty(self.graph.outputs[0].1).shape[0]
        };
        Some(spread_mask(eval(self.rows(), sizes), eval(kept, sizes)))
    }

    /// A copy: exact.
    fn nmse_limit(&self) -> f64 {
        NMSE_F32
    }
}
