use vl3c_ir::*;

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn c(v: i64) -> Dim {
    Dim::Const(v)
}

fn tt(dtype: DType, shape: Vec<Dim>) -> TensorType {
    TensorType::new(dtype, shape)
}

fn input(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, tt(dtype, shape))
        .unwrap()
}

/// A small valid graph: an input, a weight, a matmul, a cache read and an append (8 nodes).
fn good() -> Graph {
    let mut g = Graph::new("good");
    g.declare_symbol("n", 1, 64);
    g.declare_symbol("past", 0, 100);
    let x = input(&mut g, "x", DType::F32, vec![sym("n"), c(32)]);
    let w = g
        .add_source(
            Op::Weight { name: "w".into() },
            tt(DType::F32, vec![c(32), c(8)]),
        )
        .unwrap();
    let y = g.add(Op::MatMul, &[x, w]).unwrap();
    let k = g
        .add_source(
            Op::CacheRead { name: "k".into() },
            tt(DType::F32, vec![c(2), sym("past"), c(8)]),
        )
        .unwrap();
    let r = g
        .add(
            Op::Reshape {
                shape: vec![c(2), sym("n"), c(4)],
            },
            &[y],
        )
        .unwrap();
    g.add(
        Op::Transpose {
            perm: vec![0, 2, 1],
        },
        &[r],
    )
    .unwrap();
    let z = g
        .add(
            Op::Broadcast {
                shape: vec![c(2), sym("n"), c(8)],
            },
            &[y],
        )
        .unwrap();
    let all = g
        .add(
            Op::CacheAppend {
                name: "k".into(),
                axis: 1,
            },
            &[k, z],
        )
        .unwrap();
    g.set_output("y", y);
    g.set_output("k", all);
    g
}

#[track_caller]
fn fails(g: &Graph, want: &str) {
    let e = g.verify().expect_err("verifier should reject");
    assert!(e.to_string().starts_with(want), "\ngot:  {e}\nwant: {want}");
}

#[test]
fn good_graph_passes() {
    good().verify().unwrap();
    verify(&good()).unwrap();
    Graph::new("empty").verify().unwrap();
}

#[test]
fn symbols_are_identifiers_declared_once_with_a_range() {
    let mut g = good();
    g.symbols.push(SymbolDecl {
        name: "n".into(),
        bounds: Bounds { min: 1, max: 2 },
    });
    fails(&g, "sym: symbol `n` declared twice");
    let mut g = good();
    g.declare_symbol("n", 5, 4);
    fails(&g, "sym: symbol `n` has empty range [5, 4]");
    let mut g = good();
    g.declare_symbol("N-1", 1, 4);
    fails(&g, "sym: symbol name `N-1` is not an identifier");
}

#[test]
fn used_symbols_are_declared() {
    let mut g = good();
    g.symbols.retain(|s| s.name != "past");
    fails(&g, "%3 (cache_read): symbol `past` is not declared");
    let mut g = good();
    let x = input(&mut g, "ids", DType::I64, vec![sym("n")]);
    g.add(
        Op::Iota {
            len: sym("n"),
            start: sym("q"),
            dtype: DType::I64,
        },
        &[],
    )
    .unwrap();
    let _ = x;
    fails(&g, "%9 (iota): symbol `q` is not declared");
}

#[test]
fn operands_precede_their_users() {
    let mut g = good();
    g.nodes[2].inputs[1] = NodeId(5);
    fails(
        &g,
        "%2 (matmul): operand %5 is not defined before this node",
    );
    let mut g = good();
    g.nodes[2].inputs[1] = NodeId(2);
    fails(
        &g,
        "%2 (matmul): operand %2 is not defined before this node",
    );
}

#[test]
fn arity_is_checked() {
    let mut g = good();
    g.nodes[2].inputs.pop();
    fails(&g, "%2 (matmul): takes 2 operands, got 1");
    let mut g = good();
    g.nodes[3].inputs.push(NodeId(0));
    fails(&g, "%3 (cache_read): source ops take no operands, got 1");
    let mut g = good();
    g.nodes.push(Node {
        op: Op::Concat { axis: 0 },
        inputs: vec![],
        ty: tt(DType::F32, vec![]),
    });
    fails(&g, "%8 (concat): takes at least one operand");
}

#[test]
fn recorded_types_match_the_type_rules() {
    let mut g = good();
    g.nodes[2].ty = tt(DType::F32, vec![sym("n"), c(9)]);
    fails(
        &g,
        "%2 (matmul): recorded type f32[n, 9] differs from the inferred type f32[n, 8]",
    );
    let mut g = good();
    g.nodes[2].ty.dtype = DType::BF16;
    fails(&g, "%2 (matmul): recorded type bf16[n, 8]");
    // Equal after simplification is equal.
    let mut g = good();
    g.nodes[2].ty.shape[0] = Dim::Add(Box::new(sym("n")), Box::new(c(0)));
    g.verify().unwrap();
    let mut g = Graph::new("bad matmul");
    g.declare_symbol("n", 1, 4);
    let a = input(&mut g, "a", DType::F32, vec![sym("n"), c(32)]);
    let b = input(&mut g, "b", DType::F32, vec![c(16), c(8)]);
    g.nodes.push(Node {
        op: Op::MatMul,
        inputs: vec![a, b],
        ty: tt(DType::F32, vec![sym("n"), c(8)]),
    });
    fails(
        &g,
        "%2 (matmul): contraction dims differ: [n, 32] × [16, 8]",
    );
}

#[test]
fn dims_that_are_always_negative_are_rejected() {
    let mut g = good();
    let start = sym("n") + 1i64;
    g.add(
        Op::Slice {
            axis: 1,
            start,
            end: sym("n"),
        },
        &[NodeId(0)],
    )
    .unwrap();
    fails(&g, "%8 (slice): dim 1 of f32[n, -1] is negative");
}

#[test]
fn input_and_cache_names_are_unique() {
    let mut g = good();
    input(&mut g, "x", DType::F32, vec![]);
    fails(&g, "%8 (input): input `x` is also declared by %0");
    let mut g = good();
    g.add_source(
        Op::CacheRead { name: "k".into() },
        tt(DType::F32, vec![c(2), sym("past"), c(8)]),
    )
    .unwrap();
    fails(&g, "%8 (cache_read): cache `k` is also read by %3");
    let mut g = good();
    g.add_source(
        Op::Weight { name: "w".into() },
        tt(DType::F32, vec![c(32), c(8)]),
    )
    .unwrap();
    g.verify().unwrap();
    g.add_source(
        Op::Weight { name: "w".into() },
        tt(DType::F32, vec![c(8), c(32)]),
    )
    .unwrap();
    fails(
        &g,
        "%9 (weight): weight `w` is f32[8, 32] here but f32[32, 8] at %1",
    );
}

#[test]
fn caches_are_read_before_appended_once_and_keep_their_layout() {
    let mut g = good();
    g.add_source(
        Op::CacheRead { name: "v".into() },
        tt(DType::F32, vec![c(2)]),
    )
    .unwrap();
    fails(&g, "%8 (cache_read): cache `v` must have rank >= 2");
    let mut g = good();
    let v = input(&mut g, "v_new", DType::F32, vec![c(2), sym("n"), c(8)]);
    g.add(
        Op::CacheAppend {
            name: "v".into(),
            axis: 1,
        },
        &[v, v],
    )
    .unwrap();
    fails(
        &g,
        "%9 (cache_append): cache `v` is appended to but never read before",
    );
    let mut g = good();
    g.add(
        Op::CacheAppend {
            name: "k".into(),
            axis: 1,
        },
        &[NodeId(3), NodeId(6)],
    )
    .unwrap();
    fails(&g, "%8 (cache_append): cache `k` is also appended to by %7");
    let mut g = good();
    g.nodes.pop();
    g.outputs.pop();
    let past16 = g.add(Op::Cast { to: DType::BF16 }, &[NodeId(3)]).unwrap();
    let new16 = input(&mut g, "k_new", DType::BF16, vec![c(2), sym("n"), c(8)]);
    g.add(
        Op::CacheAppend {
            name: "k".into(),
            axis: 1,
        },
        &[past16, new16],
    )
    .unwrap();
    fails(&g, "%9 (cache_append): result bf16[2, past + n, 8] does not fit cache `k` read as f32[2, past, 8] at %3");
}

#[test]
fn outputs_are_unique_and_exist() {
    let mut g = good();
    g.set_output("y", NodeId(0));
    fails(&g, "output: output `y` is declared twice");
    let mut g = good();
    g.set_output("z", NodeId(99));
    fails(
        &g,
        "output: output `z` refers to %99, but the graph has 8 nodes",
    );
}

#[test]
fn infer_errors_name_the_node() {
    let mut g = good();
    g.nodes.push(Node {
        op: Op::Unary(UnaryOp::Exp),
        inputs: vec![NodeId(0)],
        ty: tt(DType::F32, vec![]),
    });
    g.nodes[8].op = Op::Transpose { perm: vec![0, 0] };
    fails(&g, "%8 (transpose): [0, 0] is not a permutation of rank 2");
}
