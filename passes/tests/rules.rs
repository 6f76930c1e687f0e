//! `input => expected` per rule family: a small graph in the IR text form, optimized with every
//! rule under the CPU cost model; the result must hold the expected fused op and lose the chain.

use vl3c_ir::Graph;
use vl3c_passes::{cost::Target, optimize, Budget};

fn opt(src: &str) -> Graph {
    let g = Graph::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    optimize(&g, &Target::CPU, &Budget::default()).unwrap().0
}

/// Asserts that `expect` ops appear and `gone` ops do not.
fn rewrites(src: &str, expect: &[&str], gone: &[&str]) -> Graph {
    let g = opt(src);
    let counts = g.op_counts();
    for e in expect {
        assert!(counts.contains_key(e), "expected {e} in\n{g}");
    }
    for e in gone {
        assert!(!counts.contains_key(e), "{e} left in\n{g}");
    }
    g
}

#[test]
fn softmax() {
    let g = rewrites(
        "graph t {
  %0 = input \"x\" : f32[3, 5]
  %1 = reduce_max %0 {axes = [1], keep_dims = true} : f32[3, 1]
  %2 = sub %0, %1 : f32[3, 5]
  %3 = exp %2 : f32[3, 5]
  %4 = reduce_sum %3 {axes = [1], keep_dims = true} : f32[3, 1]
  %5 = div %3, %4 : f32[3, 5]
  output \"y\" = %5
}",
        &["softmax"],
        &["exp", "reduce_max"],
    );
    insta::assert_snapshot!(g.to_string().trim(), @r#"
    graph t {
      %0 = input "x" : f32[3, 5]
      %1 = softmax %0 : f32[3, 5]
      output "y" = %1
    }
    "#);
}

#[test]
fn rms_norm() {
    rewrites(
        "graph t {
  %0 = input \"x\" : f32[2, 4]
  %1 = weight \"w\" : f32[4]
  %2 = mul %0, %0 : f32[2, 4]
  %3 = reduce_mean %2 {axes = [1], keep_dims = true} : f32[2, 1]
  %4 = const 1e-6 : f32[]
  %5 = add %3, %4 : f32[2, 1]
  %6 = rsqrt %5 : f32[2, 1]
  %7 = mul %0, %6 : f32[2, 4]
  %8 = mul %7, %1 : f32[2, 4]
  output \"y\" = %8
}",
        &["rms_norm"],
        &["rsqrt", "reduce_mean"],
    );
}

#[test]
fn silu_times_up_is_swiglu() {
    rewrites(
        "graph t {
  %0 = input \"g\" : f32[2, 4]
  %1 = input \"u\" : f32[2, 4]
  %2 = neg %0 : f32[2, 4]
  %3 = exp %2 : f32[2, 4]
  %4 = const 1.0 : f32[]
  %5 = add %3, %4 : f32[2, 4]
  %6 = div %0, %5 : f32[2, 4]
  %7 = mul %6, %1 : f32[2, 4]
  output \"y\" = %7
}",
        &["swiglu"],
        &["exp", "div"],
    );
}

#[test]
fn silu_with_another_literal_is_left_alone() {
    rewrites(
        "graph t {
  %0 = input \"g\" : f32[2, 4]
  %1 = neg %0 : f32[2, 4]
  %2 = exp %1 : f32[2, 4]
  %3 = const 2.0 : f32[]
  %4 = add %2, %3 : f32[2, 4]
  %5 = div %0, %4 : f32[2, 4]
  output \"y\" = %5
}",
        &["exp"],
        &["silu"],
    );
}

#[test]
fn bias_epilogue_and_folded_weight() {
    let g = rewrites(
        "graph t {
  %0 = input \"x\" : f32[2, 3]
  %1 = weight \"w\" : f32[4, 3]
  %2 = transpose %1 {perm = [1, 0]} : f32[3, 4]
  %3 = matmul %0, %2 : f32[2, 4]
  %4 = weight \"b\" : f32[4]
  %5 = add %3, %4 : f32[2, 4]
  output \"y\" = %5
}",
        &["fused_matmul", "fold"],
        &["add", "matmul"],
    );
    assert!(
        g.to_string().contains("fold"),
        "the transposed weight is marked for compile-time evaluation"
    );
}

#[test]
fn transposes_cancel() {
    rewrites(
        "graph t {
  %0 = input \"x\" : f32[2, 3, 4]
  %1 = transpose %0 {perm = [1, 0, 2]} : f32[3, 2, 4]
  %2 = transpose %1 {perm = [1, 0, 2]} : f32[2, 3, 4]
  %3 = exp %2 : f32[2, 3, 4]
  output \"y\" = %3
}",
        &["exp"],
        &["transpose"],
    );
}
