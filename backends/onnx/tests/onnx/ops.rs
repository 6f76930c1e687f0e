//! Every lowered op against the reference executor (the definition of every op), on random
//! inputs, as llama.cpp's test-backend-ops checks a backend: IR text in, the reference and tract
//! running the exported graph, outputs compared (floats within 1e-5 of the output's scale,
//! integers and booleans exactly).

use crate::common::{run, vals};
use std::collections::HashMap;
use tract_onnx::prelude::Tensor;
use vl3c_engine::Emit;
use vl3c_ir::parse_graphs;
use vl3c_reference::{execute, Tensor as Ref, TensorData, WeightSource, WeightView};

struct NoWeights;

impl WeightSource for NoWeights {
    fn weight(&self, _: &str) -> Option<WeightView<'_>> {
        None
    }
}

/// A small deterministic generator: the cases must not change from run to run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn to_tract(t: &Ref) -> Tensor {
    match &t.data {
        TensorData::F32(v) => Tensor::from_shape(&t.shape, v),
        TensorData::I64(v) => Tensor::from_shape(&t.shape, v),
        TensorData::Bool(v) => Tensor::from_shape(&t.shape, v),
        other => panic!("no test inputs of {:?}", other.dtype()),
    }
    .unwrap()
}

/// Exports the one graph in `src`, runs it on tract and the reference with the `given` inputs
/// and random f32 for the rest (`syms` sizes them), and compares every output.
fn check(src: &str, syms: &[(&str, i64)], given: Vec<(&str, Ref)>) {
    let g = parse_graphs(src).expect("the case parses").remove(0);
    let env: HashMap<String, i64> = syms.iter().map(|&(s, v)| (s.to_string(), v)).collect();
    let mut rng = Lcg(g.nodes.len() as u64 * 7919);
    let mut inputs: HashMap<String, Ref> =
        given.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (_, name, ty) in g.inputs() {
        if !inputs.contains_key(name) {
            let shape: Vec<usize> = ty
                .shape
                .iter()
                .map(|d| d.eval(&env).expect("sized by syms") as usize)
                .collect();
            let n = shape.iter().product();
            inputs.insert(name.to_string(), Ref::f32(shape, rng.vec(n)));
        }
    }
    let want = execute(&g, &inputs, &NoWeights, &HashMap::new())
        .unwrap_or_else(|e| panic!("{}: reference: {e}", g.name));

    let dir = tempfile::tempdir().unwrap();
    let mut progress = |_: &str, _: usize, _: usize| {};
    let mut emit = Emit::new(dir.path(), None, &mut progress);
    vl3c_onnx::export_graph(&g, &mut emit, "g.onnx", "g.onnx.data").expect("the graph exports");
    let feed: HashMap<&str, Tensor> = inputs
        .iter()
        .map(|(k, v)| (k.as_str(), to_tract(v)))
        .collect();
    let got = run(&dir.path().join("g.onnx"), &feed);

    for (name, w) in &want.outputs {
        let o = &got[name];
        assert_eq!(
            o.shape(),
            w.shape.as_slice(),
            "{}: output {name}'s shape",
            g.name
        );
        match &w.data {
            TensorData::F32(w) => {
                let o = vals::<f32>(o);
                let scale = w.iter().fold(1f32, |m, x| m.max(x.abs()));
                let d = o
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    d <= 1e-5 * scale,
                    "{}: output {name} differs by {d}",
                    g.name
                );
            }
            TensorData::I64(w) => assert_eq!(&vals::<i64>(o), w, "{}: {name}", g.name),
            TensorData::Bool(w) => {
                assert_eq!(&vals::<bool>(o), w, "{}: {name}", g.name)
            }
            other => panic!("no comparison for {:?}", other.dtype()),
        }
    }
}

#[test]
fn norms_and_activations() {
    let src = r#"
graph norms {
  sym n in [1, 64]
  %x = input "x" : f32[n, 16]
  %w = input "w" : f32[16]
  %b = input "b" : f32[16]
  %rms = rms_norm %x, %w {eps = 1e-6} : f32[n, 16]
  %ln = layer_norm %x, %w, %b {eps = 1e-5} : f32[n, 16]
  %sm = softmax %x : f32[n, 16]
  %gt = gelu_tanh %x : f32[n, 16]
  %ge = gelu_erf %x : f32[n, 16]
  %si = silu %x : f32[n, 16]
  %sw = swiglu %x, %ln : f32[n, 16]
  output "rms" = %rms
  output "ln" = %ln
  output "sm" = %sm
  output "gt" = %gt
  output "ge" = %ge
  output "si" = %si
  output "sw" = %sw
}"#;
    check(src, &[("n", 5)], vec![]);
}

#[test]
fn matmuls() {
    let src = r#"
graph matmuls {
  sym n in [1, 64]
  %x = input "x" : f32[n, 16]
  %w = input "w" : f32[16, 8]
  %b = input "b" : f32[8]
  %r = input "r" : f32[n, 8]
  %m = matmul %x, %w : f32[n, 8]
  %f = fused_matmul %x, %w, %b, %r {bias = true, residual = true} : f32[n, 8]
  %g = fused_matmul %x, %w, %r {bias = false, residual = true} : f32[n, 8]
  output "m" = %m
  output "f" = %f
  output "g" = %g
}"#;
    check(src, &[("n", 7)], vec![]);
}

#[test]
fn causal_attention_with_grouped_heads_and_a_past() {
    let src = r#"
graph causal {
  sym n in [1, 16]
  sym p in [0, 16]
  %q = input "q" : f32[4, n, 8]
  %k = input "k" : f32[2, n + p, 8]
  %v = input "v" : f32[2, n + p, 8]
  %cos = input "cos" : f32[1, n, 8]
  %sin = input "sin" : f32[1, n, 8]
  %a = attention %q, %k, %v, %cos, %sin {scale = 0.35, mask = causal, rope_q = true, rope_k = false} : f32[4, n, 8]
  %f = attention %q, %k, %v {scale = 0.5, mask = full, rope_q = false, rope_k = false} : f32[4, n, 8]
  %r = rope %q, %cos, %sin : f32[4, n, 8]
  output "a" = %a
  output "f" = %f
  output "r" = %r
}"#;
    check(src, &[("n", 3), ("p", 5)], vec![]);
    check(src, &[("n", 6), ("p", 0)], vec![]);
}

/// One video entry of 2 frames, 4×6 patches, merge 2: per-frame attention, positions.
#[test]
fn vision_segments_and_positions() {
    let src = r#"
graph vision {
  sym n in [1, 4096]
  sym e in [1, 1]
  %grid = input "grid" : i64[e, 3]
  %m = input "merge" : i64[e]
  %q = input "q" : f32[2, n, 8]
  %k = input "k" : f32[2, n, 8]
  %v = input "v" : f32[2, n, 8]
  %cos = input "cos" : f32[1, n, 8]
  %sin = input "sin" : f32[1, n, 8]
  %seg = segment_ids %grid {len = n} : i64[n]
  %a = attention %q, %k, %v, %cos, %sin, %seg {scale = 0.35, mask = segments, rope_q = true, rope_k = true} : f32[2, n, 8]
  %pos = vision_position_ids %grid, %m {len = n} : i64[n, 2]
  output "a" = %a
  output "pos" = %pos
  output "seg" = %seg
}"#;
    for (grid, merge) in [([2, 4, 6], 2), ([1, 6, 4], 1), ([3, 2, 2], 2)] {
        let n = grid[0] * grid[1] * grid[2];
        check(
            src,
            &[("n", n), ("e", 1)],
            vec![
                ("grid", Ref::i64(vec![1, 3], grid.to_vec())),
                ("merge", Ref::i64(vec![1], vec![merge])),
            ],
        );
    }
}

#[test]
fn spatial_merge() {
    let src = r#"
graph merge {
  sym n in [1, 64]
  %x = input "x" : f32[4*n, 6]
  %m = spatial_merge %x {merge = 2} : f32[n, 6]
  output "m" = %m
}"#;
    check(src, &[("n", 5)], vec![]);
}

/// Four frames of 4 merged tokens: frame 1 repeats frame 0 (nothing kept but its first token),
/// frame 2 changes one block a lot and one by less than the threshold, frame 3 is new.
#[test]
fn diff_frame_pruning() {
    let src = r#"
graph prune {
  sym k in [1, 1024]
  %px = input "px" : f32[4*k, 12]
  %grid = input "grid" : i64[1, 3]
  %keep = diff_frame_prune %px, %grid {threshold = 0.1, merge = 2, len = k} : bool[k]
  output "keep" = %keep
}"#;
    let mut rng = Lcg(11);
    let block = 4 * 12;
    let frame = rng.vec(4 * block);
    let mut px = frame.clone();
    px.extend(&frame);
    let mut f2 = frame.clone();
    f2[2 * block..3 * block].iter_mut().for_each(|x| *x += 0.5);
    f2[block..2 * block].iter_mut().for_each(|x| *x += 0.0001);
    px.extend(&f2);
    px.extend(rng.vec(4 * block));
    check(
        src,
        &[("k", 16)],
        vec![
            ("px", Ref::f32(vec![64, 12], px)),
            ("grid", Ref::i64(vec![1, 3], vec![4, 4, 4])),
        ],
    );
    // One frame: everything kept.
    check(
        src,
        &[("k", 4)],
        vec![
            ("px", Ref::f32(vec![16, 12], rng.vec(16 * 12))),
            ("grid", Ref::i64(vec![1, 3], vec![1, 4, 4])),
        ],
    );
}

#[test]
fn masked_scatter_and_select() {
    let src = r#"
graph masked {
  sym n in [1, 64]
  sym m in [0, 64]
  sym k in [0, 64]
  %base = input "base" : f32[n, 4]
  %ids = input "ids" : i64[n]
  %three = const 3 : i64[]
  %mask = eq %ids, %three : bool[n]
  %src = input "src" : f32[m, 4]
  %s = masked_scatter %base, %mask, %src : f32[n, 4]
  %keep = input "keep" : bool[m]
  %sel = masked_select %src, %keep {len = k} : f32[k, 4]
  output "s" = %s
  output "sel" = %sel
}"#;
    let mut rng = Lcg(5);
    check(
        src,
        &[("n", 8), ("m", 3)],
        vec![
            ("ids", Ref::i64(vec![8], vec![1, 3, 3, 0, 2, 3, 5, 1])),
            ("src", Ref::f32(vec![3, 4], rng.vec(12))),
            ("keep", Ref::bool(vec![3], vec![true, false, true])),
        ],
    );
    check(
        src,
        &[("n", 4), ("m", 0)],
        vec![
            ("ids", Ref::i64(vec![4], vec![1, 2, 0, 1])),
            ("src", Ref::f32(vec![0, 4], vec![])),
            ("keep", Ref::bool(vec![0], vec![])),
        ],
    );
}

#[test]
fn shapes_indices_and_elementwise() {
    let src = r#"
graph shapes {
  sym n in [1, 64]
  %x = input "x" : f32[n, 6]
  %ids = input "ids" : i64[3]
  %r = reshape %x {shape = [n, 2, 3]} : f32[n, 2, 3]
  %t = transpose %r {perm = [2, 0, 1]} : f32[3, n, 2]
  %s = slice %x {axis = 1, start = 1, end = 4} : f32[n, 3]
  %c = concat %s, %x {axis = 1} : f32[n, 9]
  %row = slice %x {axis = 0, start = 0, end = 1} : f32[1, 6]
  %b = broadcast %row {shape = [n, 6]} : f32[n, 6]
  %g = gather %x, %ids {axis = 1} : f32[n, 3]
  %i = iota {len = n, start = 2} : i64[n]
  %fi = cast %i : f32[n]
  %sum = reduce_sum %x {axes = [1], keep_dims = false} : f32[n]
  %max = reduce_max %x {axes = [0], keep_dims = true} : f32[1, 6]
  %mean = reduce_mean %x {axes = [1], keep_dims = true} : f32[n, 1]
  %gt = gt %x, %b : bool[n, 6]
  %sel = select %gt, %x, %b : f32[n, 6]
  %ab = abs %x : f32[n, 6]
  %half = const 0.5 : f32[]
  %p = pow %ab, %half : f32[n, 6]
  %rs = rsqrt %ab : f32[n, 6]
  %e = exp %x : f32[n, 6]
  %l = log %e : f32[n, 6]
  %sn = sin %x : f32[n, 6]
  %cs = cos %x : f32[n, 6]
  %mx = max %sn, %cs : f32[n, 6]
  %dv = div %mx, %e : f32[n, 6]
  output "t" = %t
  output "c" = %c
  output "g" = %g
  output "fi" = %fi
  output "sum" = %sum
  output "max" = %max
  output "mean" = %mean
  output "sel" = %sel
  output "p" = %p
  output "rs" = %rs
  output "l" = %l
  output "dv" = %dv
}"#;
    check(
        src,
        &[("n", 5)],
        vec![("ids", Ref::i64(vec![3], vec![5, 0, 2]))],
    );
}
