use proptest::prelude::*;
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

/// A graph holding every op, every attribute kind and awkward literals and names.
fn every_op() -> Graph {
    let mut g = Graph::new("every op");
    for (s, lo, hi) in [
        ("n", 1, 64),
        ("past", 0, 100),
        ("seq", 1, 32),
        ("k", 0, 64),
        ("t", 1, 1000),
        ("g", 1, 8),
    ] {
        g.declare_symbol(s, lo, hi);
    }
    let (n, past, seq) = (sym("n"), sym("past"), sym("seq"));
    let x = g
        .add_source(
            Op::Input { name: "x".into() },
            tt(DType::F32, vec![n.clone(), c(8)]),
        )
        .unwrap();
    let w = g
        .add_source(
            Op::Weight {
                name: "w.\"odd\"\\name\n".into(),
            },
            tt(DType::F32, vec![c(8), c(4)]),
        )
        .unwrap();
    let ids = g
        .add_source(
            Op::Input { name: "ids".into() },
            tt(DType::I64, vec![seq.clone()]),
        )
        .unwrap();
    let mask = g
        .add_source(
            Op::Input {
                name: "mask".into(),
            },
            tt(DType::Bool, vec![n.clone()]),
        )
        .unwrap();
    let src = g
        .add_source(
            Op::Input { name: "src".into() },
            tt(DType::F32, vec![sym("k"), c(8)]),
        )
        .unwrap();
    let grid = g
        .add_source(
            Op::Input {
                name: "grid_thw".into(),
            },
            tt(DType::I64, vec![sym("g"), c(3)]),
        )
        .unwrap();
    let merge = g
        .add_source(
            Op::Input {
                name: "merge".into(),
            },
            tt(DType::I64, vec![sym("g")]),
        )
        .unwrap();
    let kc = g
        .add_source(
            Op::CacheRead { name: "k0".into() },
            tt(DType::F32, vec![c(2), past.clone(), c(4)]),
        )
        .unwrap();
    let knew = g
        .add_source(
            Op::Input {
                name: "k_new".into(),
            },
            tt(DType::F32, vec![c(2), seq.clone(), c(4)]),
        )
        .unwrap();

    let y = g.add(Op::MatMul, &[x, w]).unwrap();
    for u in UnaryOp::ALL {
        g.add(Op::Unary(*u), &[y]).unwrap();
    }
    let b = g.add(Op::Binary(BinaryOp::Gt), &[y, y]).unwrap();
    for op in BinaryOp::ALL {
        let operand = if op.is_logical() { b } else { y };
        g.add(Op::Binary(*op), &[operand, operand]).unwrap();
    }
    let half = g
        .add(
            Op::Constant {
                value: Scalar::Float(0.5),
                dtype: DType::F32,
            },
            &[],
        )
        .unwrap();
    for (value, dtype) in [
        (Scalar::Float(-0.0), DType::BF16),
        (Scalar::Float(1e-5), DType::F16),
        (Scalar::Float(0.1 + 0.2), DType::F32),
        (Scalar::Float(1e300), DType::F32),
        (Scalar::Float(f64::NEG_INFINITY), DType::F32),
        (Scalar::Float(f64::INFINITY), DType::F32),
        (Scalar::Float(f64::MIN_POSITIVE / 3.0), DType::F32),
        (Scalar::Int(-3), DType::I64),
        (Scalar::Int(i64::MIN), DType::I64),
        (Scalar::Int(7), DType::I32),
        (Scalar::Bool(true), DType::Bool),
        (Scalar::Bool(false), DType::Bool),
    ] {
        g.add(Op::Constant { value, dtype }, &[]).unwrap();
    }
    g.add(Op::Select, &[b, y, half]).unwrap();
    g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
            keep_dims: true,
        },
        &[y],
    )
    .unwrap();
    g.add(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1, 0],
            keep_dims: false,
        },
        &[y],
    )
    .unwrap();
    g.add(
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: vec![0],
            keep_dims: false,
        },
        &[y],
    )
    .unwrap();
    g.add(
        Op::Reshape {
            shape: vec![n.clone() * 2i64, c(2)],
        },
        &[y],
    )
    .unwrap();
    // Attribute dims keep their written structure, unsimplified.
    let unsimplified = Dim::Add(
        Box::new(n.clone()),
        Box::new(Dim::Mul(Box::new(c(-1)), Box::new(c(0)))),
    );
    g.add(
        Op::Reshape {
            shape: vec![unsimplified, c(4)],
        },
        &[y],
    )
    .unwrap();
    g.add(Op::Transpose { perm: vec![1, 0] }, &[y]).unwrap();
    g.add(
        Op::Broadcast {
            shape: vec![c(3), n.clone(), c(4)],
        },
        &[y],
    )
    .unwrap();
    g.add(Op::Concat { axis: 0 }, &[y, y, y]).unwrap();
    g.add(
        Op::Slice {
            axis: 0,
            start: c(0),
            end: n.clone().floor_div(2i64),
        },
        &[y],
    )
    .unwrap();
    g.add(Op::Gather { axis: 0 }, &[w, ids]).unwrap();
    g.add(Op::Cast { to: DType::BF16 }, &[y]).unwrap();
    g.add(Op::MaskedSelect { len: sym("k") }, &[x, mask])
        .unwrap();
    g.add(Op::MaskedScatter, &[x, mask, src]).unwrap();
    g.add(Op::VisionPositionIds { len: sym("t") }, &[grid, merge])
        .unwrap();
    g.add(Op::SegmentIds { len: sym("t") }, &[grid]).unwrap();
    let start = Dim::Add(Box::new(past.clone()), Box::new(c(1)));
    g.add(
        Op::Iota {
            len: seq.clone(),
            start,
            dtype: DType::I64,
        },
        &[],
    )
    .unwrap();
    let kall = g
        .add(
            Op::CacheAppend {
                name: "k0".into(),
                axis: 1,
            },
            &[kc, knew],
        )
        .unwrap();
    let last = g
        .add(
            Op::Slice {
                axis: 1,
                start: past.clone(),
                end: past + seq,
            },
            &[kall],
        )
        .unwrap();
    g.set_output("y", y);
    g.set_output("k0", kall);
    g.set_output("last \"new\"", last);
    g.verify().unwrap();
    g
}

#[test]
fn every_op_round_trips() {
    let g = every_op();
    let text = g.to_string();
    let back = Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, g, "{text}");
    assert_eq!(back.to_string(), text);
    assert_eq!(
        g.op_counts().len(),
        11 + 15 + 3 + 19,
        "every mnemonic appears"
    );
    assert!(
        text.contains("= iota {len = seq, start = past + 1} : i64[seq]"),
        "{text}"
    );
    assert!(text.contains("const -inf : f32[]"), "{text}");
    assert!(
        text.contains("cache_append %7, %8 {name = \"k0\", axis = 1} : f32[2, seq + past, 4]"),
        "{text}"
    );
}

#[test]
fn several_graphs_and_comments() {
    let a = every_op();
    let mut b = Graph::new("tiny");
    let x = b
        .add_source(Op::Input { name: "x".into() }, tt(DType::F32, vec![]))
        .unwrap();
    let y = b.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    b.set_output("y", y);
    let text = format!("; two graphs\n{a}\n{b}; trailing comment");
    let graphs = parse_graphs(&text).unwrap();
    assert_eq!(graphs, vec![a, b]);
    let e = Graph::parse(&text).unwrap_err();
    assert_eq!(e.message, "expected end of input after the graph", "{e}");
}

#[test]
fn hand_written_text() {
    let text = r#"
graph vision_m1 {           ; value names need not be numbers
  sym n in [1, 1024]
  %px = input "pixel_values" : f32[4*n, 588]
  %w  = weight "proj.weight" : f32[588, 32]
  %h  = matmul %px, %w : f32[n*4, 32]
  %m  = reduce_mean %h {keep_dims = true, axes = [1]} : f32[4*n, 1]
  %s  = slice %h {axis = 0, start = n - 1, end = 2*n} : f32[n + 1, 32]
  output "features" = %m
}"#;
    let g = Graph::parse(text).unwrap();
    assert_eq!(g.nodes.len(), 5);
    assert_eq!(g.ty(NodeId(4)).shape, vec![sym("n") + 1i64, c(32)]);
    assert!(g
        .to_string()
        .contains("%3 = reduce_mean %2 {axes = [1], keep_dims = true} : f32[4*n, 1]"));
}

fn parse_err(text: &str) -> String {
    Graph::parse(text)
        .expect_err("should not parse")
        .to_string()
}

#[test]
fn parse_errors_carry_line_and_column() {
    let head = "graph g {\n  sym n in [1, 8]\n  %0 = input \"x\" : f32[n, 4]\n";
    let cases = [
        (
            "  %1 = frobnicate %0 : f32[n, 4]\n",
            "4:8: unknown op `frobnicate`",
        ),
        (
            "  %1 = exp %0 : f32[n, 5]\n",
            "4:17: written type f32[n, 5] differs from the inferred type f32[n, 4]",
        ),
        (
            "  %1 = exp %9 : f32[n, 4]\n",
            "4:12: value `%9` is not defined",
        ),
        (
            "  %1 = reduce_sum %0 {axes = [1]} : f32[n]\n",
            "4:35: `reduce_sum` needs attribute `keep_dims`",
        ),
        (
            "  %1 = exp %0 {axis = 1} : f32[n, 4]\n",
            "4:16: attribute `axis` does not apply to `exp`",
        ),
        (
            "  %1 = exp %0 {colour = 1} : f32[n, 4]\n",
            "4:16: unknown attribute `colour`",
        ),
        (
            "  %1 = matmul %0, %0 : f32[n, n]\n",
            "4:8: contraction dims differ: [n, 4] × [n, 4]",
        ),
        ("  %1 = input \"x\n", "4:14: unterminated string"),
        ("  %1 = input \"x\" : f33[n]\n", "4:20: unknown dtype `f33`"),
        (
            "  %1 = input \"y\" : f32[m]\n",
            "4:3: %1 (input): symbol `m` is not declared",
        ),
        (
            "  %0 = exp %0 : f32[n, 4]\n",
            "4:3: value `%0` defined twice",
        ),
        (
            "  output \"o\" = %0\n  output \"o\" = %0\n",
            "5:3: output: output `o` is declared twice",
        ),
        (
            "  %1 = const 1 : f32[]\n",
            "4:8: literal Int(1) cannot have dtype f32",
        ),
        (
            "  %1 = input \"y\" : f32[n $ 2]\n",
            "4:26: unexpected character `$`",
        ),
        (
            "  %1 = input \"y\" : f32[n, 4\n}",
            "5:1: expected `,`, found `}`",
        ),
    ];
    for (line, want) in cases {
        let text = format!("{head}{line}}}\n");
        let got = parse_err(&text);
        assert!(got.starts_with(want), "\n{text}\ngot:  {got}\nwant: {want}");
    }
    assert!(
        parse_err("graph g {\n  sym n in [1, 8]\n  sym n in [1, 8]\n}")
            .starts_with("3:7: symbol `n` declared twice")
    );
    assert!(parse_err("graph g {\n  sym n in [9, 8]\n}")
        .starts_with("2:7: sym: symbol `n` has empty range"));
    assert!(parse_err("graph g {\n").starts_with("2:1: expected `}` to close the graph"));
}

#[test]
fn dim_display_parses_back_structurally() {
    let n = sym("n");
    for d in [
        c(-3),
        n.clone() * -1i64,
        Dim::Mul(Box::new(n.clone()), Box::new(c(-2))),
        Dim::Add(
            Box::new(n.clone()),
            Box::new(Dim::Add(Box::new(c(1)), Box::new(n.clone()))),
        ),
        Dim::FloorDiv(
            Box::new(Dim::FloorDiv(Box::new(n.clone()), Box::new(c(2)))),
            Box::new(c(-3)),
        ),
        Dim::Mul(
            Box::new(n.clone()),
            Box::new(Dim::FloorDiv(Box::new(n.clone()), Box::new(c(2)))),
        ),
        c(i64::MIN),
    ] {
        assert_eq!(Dim::parse(&d.to_string()).unwrap(), d, "{d}");
    }
    assert_eq!(
        Dim::parse("n - 2*(m - 1)").unwrap().simplify(),
        (sym("n") + sym("m") * -2i64 + 2i64).simplify()
    );
    let e = Dim::parse("n +").unwrap_err();
    assert_eq!(e.message, "expected a dimension, found end of input", "{e}");
}

/// A random well-typed graph: each step tries one op on earlier nodes and keeps it if it types.
fn build(steps: &[(u8, u8, u8, u8, f64)]) -> Graph {
    let mut g = Graph::new("random");
    g.declare_symbol("n", 1, 16);
    g.declare_symbol("m", 0, 9);
    g.declare_symbol("k", 0, 16);
    let (n, m) = (sym("n"), sym("m"));
    g.add_source(
        Op::Input { name: "a".into() },
        tt(DType::F32, vec![n.clone(), c(4)]),
    )
    .unwrap();
    g.add_source(
        Op::Weight { name: "w".into() },
        tt(DType::F32, vec![c(4), c(4)]),
    )
    .unwrap();
    g.add_source(
        Op::Input {
            name: "mask".into(),
        },
        tt(DType::Bool, vec![n.clone()]),
    )
    .unwrap();
    g.add_source(
        Op::Input { name: "ids".into() },
        tt(DType::I64, vec![m.clone() + 1i64]),
    )
    .unwrap();
    g.add_source(
        Op::CacheRead { name: "kv".into() },
        tt(DType::F32, vec![c(2), m.clone(), c(4)]),
    )
    .unwrap();
    for &(kind, a, b, p, x) in steps {
        let len = g.nodes.len();
        let (a, b, cc) = (
            NodeId(a as u32 % len as u32),
            NodeId(b as u32 % len as u32),
            NodeId(p as u32 % len as u32),
        );
        let rank = g.ty(a).rank().max(1);
        let p = p as usize;
        let dim_a = |i: usize| g.ty(a).shape.get(i % rank).cloned().unwrap_or(c(1));
        let (op, ins): (Op, Vec<NodeId>) = match kind % 16 {
            0 => (Op::Unary(UnaryOp::ALL[p % UnaryOp::ALL.len()]), vec![a]),
            1 => (
                Op::Binary(BinaryOp::ALL[p % BinaryOp::ALL.len()]),
                vec![a, b],
            ),
            2 => (Op::MatMul, vec![a, b]),
            3 => (Op::Select, vec![a, b, cc]),
            4 => (
                Op::Reduce {
                    op: ReduceOp::ALL[p % 3],
                    axes: vec![p % rank],
                    keep_dims: p & 8 != 0,
                },
                vec![a],
            ),
            5 => (
                Op::Reshape {
                    shape: vec![
                        g.ty(a).shape.iter().fold(c(1), |acc, d| acc * d.clone()),
                        c(1),
                    ],
                },
                vec![a],
            ),
            6 => (
                Op::Transpose {
                    perm: (0..g.ty(a).rank()).rev().collect(),
                },
                vec![a],
            ),
            7 => (
                Op::Broadcast {
                    shape: [c(2)]
                        .into_iter()
                        .chain(g.ty(a).shape.iter().cloned())
                        .collect(),
                },
                vec![a],
            ),
            8 => (Op::Concat { axis: p % rank }, vec![a, b]),
            9 => (
                Op::Slice {
                    axis: p % rank,
                    start: c(0),
                    end: dim_a(p).floor_div(2i64),
                },
                vec![a],
            ),
            10 => (Op::Gather { axis: p % rank }, vec![a, b]),
            11 => (
                Op::Cast {
                    to: DType::ALL[p % 6],
                },
                vec![a],
            ),
            12 => {
                let (value, dtype) = match p % 3 {
                    0 => (Scalar::Float(x), DType::ALL[p % 3]),
                    1 => (Scalar::Int(x as i64), DType::I64),
                    _ => (Scalar::Bool(x > 0.0), DType::Bool),
                };
                (Op::Constant { value, dtype }, vec![])
            }
            13 => (
                Op::Iota {
                    len: m.clone() * 2i64,
                    start: n.clone() + (p as i64 - 100),
                    dtype: DType::I32,
                },
                vec![],
            ),
            14 => (Op::MaskedSelect { len: sym("k") }, vec![a, b]),
            _ => (
                Op::CacheAppend {
                    name: "kv".into(),
                    axis: 1,
                },
                vec![NodeId(4), a],
            ),
        };
        let _ = g.add(op, &ins);
        if g.verify().is_err() {
            g.nodes.pop();
        }
    }
    let last = NodeId(g.nodes.len() as u32 - 1);
    g.set_output("out", last);
    g
}

proptest! {
    #[test]
    fn random_graphs_round_trip(steps in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<f64>()), 0..40)) {
        let g = build(&steps);
        g.verify().unwrap();
        let text = g.to_string();
        let back = Graph::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back.to_string(), text.clone());
        let has_nan = g.nodes.iter().any(|n| matches!(n.op, Op::Constant { value: Scalar::Float(v), .. } if v.is_nan()));
        if !has_nan {
            prop_assert_eq!(back, g, "{}", text);
        }
    }
}

#[test]
fn dot_output_names_every_node() {
    let g = every_op();
    let dot = to_dot(&g);
    assert!(dot.starts_with("digraph \"every op\" {"));
    for id in g.node_ids() {
        assert!(dot.contains(&format!("  n{} [label=\"{id} ", id.0)), "{id}");
    }
    assert!(dot.contains("n0 -> n9;"));
    assert!(dot.contains("shape=invhouse"));
    assert!(
        dot.contains("out2 [label=\"output \\\"last \\\\\\\"new\\\\\\\"\\\"\""),
        "{dot}"
    );
    assert_eq!(
        dot.matches(" -> ").count(),
        g.nodes.iter().map(|n| n.inputs.len()).sum::<usize>() + g.outputs.len()
    );
}
