use std::collections::HashMap;
use vl3c_ir::*;

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn c(v: i64) -> Dim {
    Dim::Const(v)
}

fn vision() -> Graph {
    let mut g = Graph::new("vision");
    g.declare_symbol("n_merged", 1, 1000);
    g.declare_symbol("n_images", 1, 8);
    let px = TensorType::new(DType::F32, vec![sym("n_merged") * 4i64, c(588)]);
    g.add_source(
        Op::Input {
            name: "pixel_values".into(),
        },
        px,
    )
    .unwrap();
    let grid = TensorType::new(DType::I64, vec![sym("n_images"), c(3)]);
    g.add_source(
        Op::Input {
            name: "grid_thw".into(),
        },
        grid,
    )
    .unwrap();
    g
}

fn values(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[track_caller]
fn fails(g: &Graph, inputs: &[(&str, &[usize])], want: &str) {
    let e = g.symbol_values(inputs).expect_err("should not bind");
    assert!(e.to_string().ends_with(want), "\ngot:  {e}\nwant: …{want}");
}

#[test]
fn binds_from_linear_dims() {
    let g = vision();
    let env = g
        .symbol_values(&[("pixel_values", &[40, 588]), ("grid_thw", &[2, 3])])
        .unwrap();
    assert_eq!(env, values(&[("n_merged", 10), ("n_images", 2)]));
}

#[test]
fn reports_shapes_that_no_symbol_value_fits() {
    let g = vision();
    fails(
        &g,
        &[("pixel_values", &[10, 588]), ("grid_thw", &[2, 3])],
        "input `pixel_values` dim 0 is 10 but must be 4*n_merged",
    );
    fails(
        &g,
        &[("pixel_values", &[8, 587]), ("grid_thw", &[2, 3])],
        "input `pixel_values` dim 1 is 587 but must be 588",
    );
    fails(
        &g,
        &[("pixel_values", &[8, 588]), ("grid_thw", &[9, 3])],
        "input `grid_thw` dim 0 is 9, so `n_images` = 9, outside its range [1, 8]",
    );
    fails(
        &g,
        &[("pixel_values", &[8, 588, 1]), ("grid_thw", &[2, 3])],
        "input `pixel_values` has shape [8, 588, 1] but the graph expects f32[4*n_merged, 588]",
    );
    fails(
        &g,
        &[("pixel_values", &[8, 588])],
        "input `grid_thw` was not given",
    );
    fails(
        &g,
        &[("pixels", &[8, 588])],
        "the graph has no input or cache named `pixels`",
    );
    let e = g
        .symbol_values(&[("pixel_values", &[10, 588]), ("grid_thw", &[2, 3])])
        .unwrap_err();
    assert_eq!((e.node, e.op.as_str()), (Some(NodeId(0)), "input"));
}

#[test]
fn solves_in_dependency_order_and_checks_consistency() {
    let mut g = Graph::new("chain");
    g.declare_symbol("n", 1, 100);
    g.declare_symbol("m", 0, 100);
    let both = TensorType::new(
        DType::F32,
        vec![sym("n") + sym("m") * 2i64, sym("n") * sym("m") + 1i64],
    );
    g.add_source(
        Op::Input {
            name: "both".into(),
        },
        both,
    )
    .unwrap();
    g.add_source(
        Op::Input { name: "a".into() },
        TensorType::new(DType::F32, vec![sym("n"), sym("n")]),
    )
    .unwrap();
    let env = g
        .symbol_values(&[("both", &[11, 16]), ("a", &[5, 5])])
        .unwrap();
    assert_eq!(env, values(&[("n", 5), ("m", 3)]));
    fails(
        &g,
        &[("both", &[11, 17]), ("a", &[5, 5])],
        "input `both` dim 1 is 17 but must be m*n + 1 = 16",
    );
    fails(
        &g,
        &[("both", &[11, 16]), ("a", &[5, 6])],
        "input `a` dim 1 is 6 but must be n = 5",
    );
}

#[test]
fn dims_that_cannot_be_solved_are_reported() {
    let mut g = Graph::new("halves");
    g.declare_symbol("n", 1, 100);
    g.add_source(
        Op::Input { name: "h".into() },
        TensorType::new(DType::F32, vec![sym("n").floor_div(2i64)]),
    )
    .unwrap();
    fails(
        &g,
        &[("h", &[3])],
        "input `h` dim 0 (n/2) does not determine symbol `n`",
    );
    g.add_source(
        Op::Input {
            name: "full".into(),
        },
        TensorType::new(DType::F32, vec![sym("n")]),
    )
    .unwrap();
    assert_eq!(
        g.symbol_values(&[("h", &[3]), ("full", &[7])]).unwrap(),
        values(&[("n", 7)])
    );
    fails(
        &g,
        &[("h", &[3]), ("full", &[8])],
        "input `h` dim 0 is 3 but must be n/2 = 4",
    );
}

#[test]
fn cache_reads_bind_like_inputs() {
    let mut g = Graph::new("decode");
    g.declare_symbol("past", 0, 4096);
    g.declare_symbol("seq", 1, 4096);
    let ids = TensorType::new(DType::I64, vec![sym("seq")]);
    g.add_source(
        Op::Input {
            name: "input_ids".into(),
        },
        ids,
    )
    .unwrap();
    let cache = TensorType::new(DType::BF16, vec![c(2), sym("past"), c(64)]);
    g.add_source(
        Op::CacheRead {
            name: "layers.0.k".into(),
        },
        cache,
    )
    .unwrap();
    let env = g
        .symbol_values(&[("input_ids", &[1]), ("layers.0.k", &[2, 17, 64])])
        .unwrap();
    assert_eq!(env, values(&[("past", 17), ("seq", 1)]));
    // Cache reads may be left out; their symbols then stay unbound.
    assert_eq!(
        g.symbol_values(&[("input_ids", &[3])]).unwrap(),
        values(&[("seq", 3)])
    );
    fails(
        &g,
        &[("input_ids", &[1]), ("layers.0.k", &[4, 17, 64])],
        "cache `layers.0.k` dim 0 is 4 but must be 2",
    );
    let e = g
        .symbol_values(&[("input_ids", &[1]), ("layers.0.k", &[4, 17, 64])])
        .unwrap_err();
    assert_eq!((e.node, e.op.as_str()), (Some(NodeId(1)), "cache_read"));
}
