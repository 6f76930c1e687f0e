//! `diff_frame_prune` (spec §4.3) on hand-built pixel tensors, run through the executor as a
//! one-node graph: the cases the spec states, the strict threshold, several entries, bad grids.

use std::collections::HashMap;
use vl3c_ir::{DType, Dim, Graph, Op, TensorType};
use vl3c_reference::{execute, ExecError, Tensor, TensorData};

/// Values per patch row: small, since the op never looks inside a row.
const ROW: usize = 3;

/// `pixel_values [rows, ROW]`, `grid_thw [entries, 3]` → `out = diff_frame_prune(...)`.
fn prune_graph(threshold: f64, merge: usize) -> Graph {
    let mut g = Graph::new("prune");
    let rows = g.declare_symbol("rows", 1, 1 << 20);
    let entries = g.declare_symbol("entries", 1, 64);
    let len = g.declare_symbol("len", 0, 1 << 20);
    let pixels = g
        .add_source(
            Op::Input {
                name: "pixel_values".into(),
            },
            TensorType::new(DType::F32, vec![rows, Dim::Const(ROW as i64)]),
        )
        .unwrap();
    let grid = g
        .add_source(
            Op::Input {
                name: "grid_thw".into(),
            },
            TensorType::new(DType::I64, vec![entries, Dim::Const(3)]),
        )
        .unwrap();
    let out = g
        .add(
            Op::DiffFramePrune {
                threshold,
                merge,
                len,
            },
            &[pixels, grid],
        )
        .unwrap();
    g.set_output("out", out);
    g
}

fn try_prune(
    threshold: f64,
    merge: usize,
    pixels: Vec<f32>,
    grid: &[[i64; 3]],
) -> Result<Vec<bool>, ExecError> {
    let g = prune_graph(threshold, merge);
    let inputs = HashMap::from([
        (
            "pixel_values".to_string(),
            Tensor::f32(vec![pixels.len() / ROW, ROW], pixels),
        ),
        (
            "grid_thw".to_string(),
            Tensor::i64(
                vec![grid.len(), 3],
                grid.iter().flatten().copied().collect(),
            ),
        ),
    ]);
    let mut out = execute(
        &g,
        &inputs,
        &HashMap::<String, Tensor>::new(),
        &HashMap::new(),
    )?;
    match out.outputs.remove("out").unwrap().data {
        TensorData::Bool(v) => Ok(v),
        other => panic!("expected bool, got {:?}", other.dtype()),
    }
}

fn prune(pixels: Vec<f32>, grid: &[[i64; 3]]) -> Vec<bool> {
    try_prune(0.1, 2, pixels, grid).unwrap_or_else(|e| panic!("{e}"))
}

/// One frame of `h x w` patches (merge-block-major), every value from `f(patch_row)`.
fn frame(h: usize, w: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..h * w)
        .flat_map(|r| std::iter::repeat_n(f(r), ROW))
        .collect()
}

/// Distinct values per patch, so that no two blocks in a frame look alike.
fn distinct(r: usize) -> f32 {
    (r as f32 * 0.37).sin()
}

#[test]
fn identical_frame_keeps_only_its_first_token() {
    // 4x4 patches → 2x2 merged tokens per frame, three frames: the 2nd differs everywhere, the
    // 3rd repeats the 2nd.
    let mut pixels = frame(4, 4, distinct);
    pixels.extend(frame(4, 4, |r| distinct(r) + 0.5));
    pixels.extend(frame(4, 4, |r| distinct(r) + 0.5));
    let keep = prune(pixels, &[[3, 4, 4]]);
    assert_eq!(
        keep,
        [[true; 4], [true; 4], [true, false, false, false]].concat()
    );
}

#[test]
fn a_change_in_one_block_keeps_that_token() {
    let mut pixels = frame(4, 4, distinct);
    // Patch rows 4..8 form merged token 1 (top right): change one value of one patch there.
    let mut changed = frame(4, 4, distinct);
    changed[5 * ROW + 1] += 0.01;
    pixels.extend(changed);
    let keep = prune(pixels, &[[2, 4, 4]]);
    assert_eq!(keep, [[true; 4], [false, true, false, false]].concat());
}

#[test]
fn single_frame_keeps_everything() {
    // Also with constant pixels, where every distance would be zero.
    assert_eq!(prune(frame(4, 6, |_| 0.0), &[[1, 4, 6]]), vec![true; 6]);
}

#[test]
fn entries_are_pruned_independently_and_concatenated() {
    // Entry 0: 2 frames of 2x4 (2 tokens), identical. Entry 1: 2 frames of 2x2 (1 token), changed.
    // Entry 1's first frame equals entry 0's last block, which must not count as a previous frame.
    let mut pixels = frame(2, 4, |_| 0.25);
    pixels.extend(frame(2, 4, |_| 0.25));
    pixels.extend(frame(2, 2, |_| 0.25));
    pixels.extend(frame(2, 2, |_| -0.75));
    let keep = prune(pixels, &[[2, 2, 4], [2, 2, 2]]);
    assert_eq!(keep, [true, true, true, false, true, true]);
}

#[test]
fn the_threshold_is_strict() {
    // Every value moves by 0.5: d = 0.5 · 255 = 127.5 exactly, for both tokens of frame 1.
    let mut pixels = frame(2, 4, |_| 0.0);
    pixels.extend(frame(2, 4, |r| if r < 4 { 0.5 } else { -0.5 }));
    let at = try_prune(127.5, 2, pixels.clone(), &[[2, 2, 4]]).unwrap();
    // Nothing exceeds the threshold, so frame 1 falls back to its first token.
    assert_eq!(at, [true, true, true, false]);
    let below = try_prune(127.4, 2, pixels, &[[2, 2, 4]]).unwrap();
    assert_eq!(below, [true; 4]);
}

#[test]
fn merge_one_compares_single_patches() {
    let mut pixels = frame(1, 3, distinct);
    pixels.extend(frame(1, 3, |r| if r == 2 { 9.0 } else { distinct(r) }));
    assert_eq!(
        try_prune(0.1, 1, pixels, &[[2, 1, 3]]).unwrap(),
        [true, true, true, false, false, true]
    );
}

#[test]
fn bad_grids_are_errors() {
    let pixels = frame(4, 4, distinct);
    // Rows do not match Σ t·h·w.
    let e = try_prune(0.1, 2, pixels.clone(), &[[2, 4, 4]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows"), "{e}");
    // Not divisible by the merge size.
    let e = try_prune(0.1, 2, frame(3, 4, distinct), &[[1, 3, 4]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not divisible"), "{e}");
    // Negative sizes.
    let e = try_prune(0.1, 2, pixels, &[[-1, 4, -4]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("negative"), "{e}");
}
