//! The reference executor against hand-computed values: each op family, the data-dependent ops,
//! binding and its errors, weight decoding and memory accounting.

#![allow(clippy::excessive_precision, clippy::type_complexity)]

use half::bf16;
use proptest::prelude::*;
use std::collections::HashMap;
use vl3c_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar, TensorType, UnaryOp};
use vl3c_reference::{execute, ExecError, Outputs, Tensor, TensorData, WeightSource};

fn dims(shape: &[i64]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Const(d)).collect()
}

fn input(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add_source(
        Op::Input { name: name.into() },
        TensorType::new(dtype, shape),
    )
    .unwrap()
}

fn weight(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add_source(
        Op::Weight { name: name.into() },
        TensorType::new(dtype, shape),
    )
    .unwrap()
}

fn named(list: Vec<(&str, Tensor)>) -> HashMap<String, Tensor> {
    list.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

fn try_run(g: &Graph, inputs: Vec<(&str, Tensor)>) -> Result<Outputs, ExecError> {
    execute(
        g,
        &named(inputs),
        &HashMap::<String, Tensor>::new(),
        &HashMap::new(),
    )
}

/// Runs a graph whose single output is named `out`.
fn run(g: &Graph, inputs: Vec<(&str, Tensor)>) -> Tensor {
    let mut out = try_run(g, inputs).unwrap_or_else(|e| panic!("{e}"));
    out.outputs.remove("out").expect("output `out`")
}

fn f32s(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("expected f32, got {:?}", other.dtype()),
    }
}

fn i64s(t: &Tensor) -> &[i64] {
    match &t.data {
        TensorData::I64(v) => v,
        other => panic!("expected i64, got {:?}", other.dtype()),
    }
}

fn bools(t: &Tensor) -> &[bool] {
    match &t.data {
        TensorData::Bool(v) => v,
        other => panic!("expected bool, got {:?}", other.dtype()),
    }
}

/// A graph computing `f(x)` for one input `x`.
fn unary_graph(
    dtype: DType,
    shape: &[i64],
    build: impl FnOnce(&mut Graph, NodeId) -> NodeId,
) -> Graph {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", dtype, dims(shape));
    let y = build(&mut g, x);
    g.set_output("out", y);
    g
}

fn binary_graph(op: BinaryOp, dtype: DType, a: &[i64], b: &[i64]) -> Graph {
    let mut g = Graph::new("t");
    let x = input(&mut g, "a", dtype, dims(a));
    let y = input(&mut g, "b", dtype, dims(b));
    let z = g.add(Op::Binary(op), &[x, y]).unwrap();
    g.set_output("out", z);
    g
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn unary_ops_match_f64_references() {
    let xs = vec![0.1f32, 0.5, 1.0, 1.7, 3.3];
    let cases: Vec<(UnaryOp, fn(f64) -> f64)> = vec![
        (UnaryOp::Neg, |x| -x),
        (UnaryOp::Abs, f64::abs),
        (UnaryOp::Exp, f64::exp),
        (UnaryOp::Log, f64::ln),
        (UnaryOp::Sqrt, f64::sqrt),
        (UnaryOp::Rsqrt, |x| 1.0 / x.sqrt()),
        (UnaryOp::Recip, |x| 1.0 / x),
        (UnaryOp::Tanh, f64::tanh),
        (UnaryOp::Sin, f64::sin),
        (UnaryOp::Cos, f64::cos),
    ];
    for (op, f) in cases {
        let g = unary_graph(DType::F32, &[5], |g, x| g.add(Op::Unary(op), &[x]).unwrap());
        let out = run(&g, vec![("x", Tensor::f32(vec![5], xs.clone()))]);
        for (x, y) in xs.iter().zip(f32s(&out)) {
            assert!(ulps(*y, f(*x as f64) as f32) <= 1, "{op}({x}) = {y}");
        }
    }
}

#[test]
fn erf_is_within_one_ulp() {
    // Values from mpmath at 30 digits.
    let refs = [
        (-3.0f32, -0.999977909503001414558627223870f64),
        (-0.1, -0.112462916018284892203275071744),
        (0.0, 0.0),
        (1e-9, 1.12837916709551257389615890312e-9),
        (0.5, 0.520499877813046537682746653892),
        (0.9, 0.796908212422832128518724785142),
        (1.0, 0.842700792949714869341220635083),
        (2.0, 0.995322265018952734162069256367),
        (3.5, 0.999999256901627658587254476316),
        (10.0, 1.0),
    ];
    let xs: Vec<f32> = refs.iter().map(|r| r.0).collect();
    let g = unary_graph(DType::F32, &[10], |g, x| {
        g.add(Op::Unary(UnaryOp::Erf), &[x]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::f32(vec![10], xs))]);
    for ((x, want), got) in refs.iter().zip(f32s(&out)) {
        // The reference at x's f32 value, which is what the op sees.
        assert!(
            ulps(*got, *want as f32) <= 1,
            "erf({x}) = {got}, want {want}"
        );
    }
}

#[test]
fn int_unary_wraps() {
    let g = unary_graph(DType::I64, &[3], |g, x| {
        g.add(Op::Unary(UnaryOp::Neg), &[x]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::i64(vec![3], vec![3, -4, i64::MIN]))]);
    assert_eq!(i64s(&out), &[-3, 4, i64::MIN]);
}

#[test]
fn binary_broadcasts_numpy_style() {
    let g = binary_graph(BinaryOp::Sub, DType::F32, &[2, 1], &[3]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::f32(vec![2, 1], vec![10.0, 20.0])),
            ("b", Tensor::f32(vec![3], vec![1.0, 2.0, 3.0])),
        ],
    );
    assert_eq!(out.shape, vec![2, 3]);
    assert_eq!(f32s(&out), &[9.0, 8.0, 7.0, 19.0, 18.0, 17.0]);

    let g = binary_graph(BinaryOp::Mul, DType::F32, &[2, 1, 2], &[3, 1]);
    let a = Tensor::f32(vec![2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let b = Tensor::f32(vec![3, 1], vec![1.0, 10.0, 100.0]);
    let out = run(&g, vec![("a", a), ("b", b)]);
    assert_eq!(out.shape, vec![2, 3, 2]);
    assert_eq!(
        f32s(&out),
        &[1., 2., 10., 20., 100., 200., 3., 4., 30., 40., 300., 400.]
    );
}

#[test]
fn comparisons_produce_bool_and_max_propagates_nan() {
    let g = binary_graph(BinaryOp::Lt, DType::F32, &[3], &[]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::f32(vec![3], vec![1.0, 2.0, 3.0])),
            ("b", Tensor::f32(vec![], vec![2.0])),
        ],
    );
    assert_eq!(bools(&out), &[true, false, false]);

    let g = binary_graph(BinaryOp::Max, DType::F32, &[3], &[3]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::f32(vec![3], vec![1.0, f32::NAN, -1.0])),
            ("b", Tensor::f32(vec![3], vec![2.0, 0.0, -2.0])),
        ],
    );
    let v = f32s(&out);
    assert_eq!((v[0], v[2]), (2.0, -1.0));
    assert!(v[1].is_nan());

    let g = binary_graph(BinaryOp::And, DType::Bool, &[2], &[2]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::bool(vec![2], vec![true, true])),
            ("b", Tensor::bool(vec![2], vec![true, false])),
        ],
    );
    assert_eq!(bools(&out), &[true, false]);
}

#[test]
fn int_arithmetic_floor_divides_and_rejects_zero() {
    let g = binary_graph(BinaryOp::Div, DType::I64, &[4], &[4]);
    let a = Tensor::i64(vec![4], vec![-7, 7, 7, -8]);
    let out = run(
        &g,
        vec![
            ("a", a.clone()),
            ("b", Tensor::i64(vec![4], vec![2, -2, 2, 2])),
        ],
    );
    assert_eq!(i64s(&out), &[-4, -4, 3, -4]);
    let err = try_run(
        &g,
        vec![("a", a), ("b", Tensor::i64(vec![4], vec![2, 0, 1, 1]))],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("(div)") && err.to_string().contains("division by zero"),
        "{err}"
    );

    let g = binary_graph(BinaryOp::Add, DType::I32, &[1], &[1]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::i32(vec![1], vec![i32::MAX])),
            ("b", Tensor::i32(vec![1], vec![1])),
        ],
    );
    assert_eq!(out.data, TensorData::I32(vec![i32::MIN]));
}

#[test]
fn bf16_results_round_to_nearest_even() {
    let g = binary_graph(BinaryOp::Add, DType::BF16, &[3], &[3]);
    let a = Tensor::bf16(vec![3], [1.0f32, 1.0, 1.0].map(bf16::from_f32).to_vec());
    // 2^-8 is half an ulp of 1.0 in bf16 (tie → even, stays 1.0); 3·2^-9 is more than half.
    let b = Tensor::bf16(
        vec![3],
        [0.00390625f32, 0.005859375, 0.0078125]
            .map(bf16::from_f32)
            .to_vec(),
    );
    let out = run(&g, vec![("a", a), ("b", b)]);
    let TensorData::BF16(v) = &out.data else {
        panic!("dtype")
    };
    assert_eq!(
        v.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
        vec![1.0, 1.0078125, 1.0078125]
    );

    let g = unary_graph(DType::F32, &[2], |g, x| {
        g.add(Op::Cast { to: DType::BF16 }, &[x]).unwrap()
    });
    let out = run(
        &g,
        vec![(
            "x",
            Tensor::f32(vec![2], vec![1.00390625, 1.00390625 + 1e-6]),
        )],
    );
    let TensorData::BF16(v) = &out.data else {
        panic!("dtype")
    };
    assert_eq!(
        v.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
        vec![1.0, 1.0078125]
    );
}

#[test]
fn casts_follow_torch() {
    let g = unary_graph(DType::F32, &[4], |g, x| {
        g.add(Op::Cast { to: DType::I32 }, &[x]).unwrap()
    });
    let out = run(
        &g,
        vec![("x", Tensor::f32(vec![4], vec![-1.7, 1.7, 2.5, -0.2]))],
    );
    assert_eq!(out.data, TensorData::I32(vec![-1, 1, 2, 0]));

    let g = unary_graph(DType::F32, &[3], |g, x| {
        g.add(Op::Cast { to: DType::Bool }, &[x]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::f32(vec![3], vec![0.0, -0.5, 2.0]))]);
    assert_eq!(bools(&out), &[false, true, true]);

    let g = unary_graph(DType::Bool, &[2], |g, x| {
        g.add(Op::Cast { to: DType::F16 }, &[x]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::bool(vec![2], vec![true, false]))]);
    assert_eq!(out.to_f32_vec(), vec![1.0, 0.0]);

    let g = unary_graph(DType::I64, &[2], |g, x| {
        g.add(Op::Cast { to: DType::I32 }, &[x]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::i64(vec![2], vec![1 << 32 | 5, -3]))]);
    assert_eq!(out.data, TensorData::I32(vec![5, -3]));
}

#[test]
fn select_broadcasts_all_three() {
    let mut g = Graph::new("t");
    let c = input(&mut g, "c", DType::Bool, dims(&[2, 1]));
    let a = input(&mut g, "a", DType::F32, dims(&[3]));
    let b = input(&mut g, "b", DType::F32, dims(&[]));
    let s = g.add(Op::Select, &[c, a, b]).unwrap();
    g.set_output("out", s);
    let out = run(
        &g,
        vec![
            ("c", Tensor::bool(vec![2, 1], vec![true, false])),
            ("a", Tensor::f32(vec![3], vec![1.0, 2.0, 3.0])),
            ("b", Tensor::f32(vec![], vec![-1.0])),
        ],
    );
    assert_eq!(out.shape, vec![2, 3]);
    assert_eq!(f32s(&out), &[1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
}

#[test]
fn reductions_over_axes() {
    let x: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let reduce = |op, axes: Vec<usize>, keep_dims| {
        let g = unary_graph(DType::F32, &[2, 3, 4], |g, x| {
            g.add(
                Op::Reduce {
                    op,
                    axes,
                    keep_dims,
                },
                &[x],
            )
            .unwrap()
        });
        run(&g, vec![("x", Tensor::f32(vec![2, 3, 4], x.clone()))])
    };
    let s = reduce(ReduceOp::Sum, vec![1], true);
    assert_eq!(s.shape, vec![2, 1, 4]);
    assert_eq!(f32s(&s), &[12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
    let m = reduce(ReduceOp::Mean, vec![0, 2], false);
    assert_eq!(m.shape, vec![3]);
    assert_eq!(f32s(&m), &[7.5, 11.5, 15.5]);
    let mx = reduce(ReduceOp::Max, vec![2, 0], false);
    assert_eq!(f32s(&mx), &[15.0, 19.0, 23.0]);

    let g = unary_graph(DType::I64, &[2, 2], |g, x| {
        g.add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![0, 1],
                keep_dims: false,
            },
            &[x],
        )
        .unwrap()
    });
    let out = run(&g, vec![("x", Tensor::i64(vec![2, 2], vec![1, 2, 3, -10]))]);
    assert_eq!((out.shape.clone(), i64s(&out).to_vec()), (vec![], vec![-4]));
}

#[test]
fn shape_ops() {
    let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let xt = || vec![("x", Tensor::f32(vec![2, 3], x.clone()))];
    let g = unary_graph(DType::F32, &[2, 3], |g, x| {
        g.add(Op::Transpose { perm: vec![1, 0] }, &[x]).unwrap()
    });
    let t = run(&g, xt());
    assert_eq!(
        (t.shape.clone(), f32s(&t).to_vec()),
        (vec![3, 2], vec![0., 3., 1., 4., 2., 5.])
    );

    let g = unary_graph(DType::F32, &[2, 3], |g, x| {
        g.add(
            Op::Reshape {
                shape: dims(&[3, 1, 2]),
            },
            &[x],
        )
        .unwrap()
    });
    let r = run(&g, xt());
    assert_eq!(
        (r.shape.clone(), f32s(&r).to_vec()),
        (vec![3, 1, 2], x.clone())
    );

    let g = unary_graph(DType::F32, &[2, 3], |g, x| {
        g.add(
            Op::Broadcast {
                shape: dims(&[2, 2, 3]),
            },
            &[x],
        )
        .unwrap()
    });
    let b = run(&g, xt());
    assert_eq!(f32s(&b), &[0., 1., 2., 3., 4., 5., 0., 1., 2., 3., 4., 5.]);

    let g = unary_graph(DType::F32, &[2, 3], |g, x| {
        g.add(
            Op::Slice {
                axis: 1,
                start: Dim::Const(1),
                end: Dim::Const(3),
            },
            &[x],
        )
        .unwrap()
    });
    let s = run(&g, xt());
    assert_eq!(
        (s.shape.clone(), f32s(&s).to_vec()),
        (vec![2, 2], vec![1., 2., 4., 5.])
    );

    let g = unary_graph(DType::F32, &[2, 3], |g, x| {
        let y = g
            .add(
                Op::Slice {
                    axis: 1,
                    start: Dim::Const(0),
                    end: Dim::Const(1),
                },
                &[x],
            )
            .unwrap();
        g.add(Op::Concat { axis: 1 }, &[x, y, x]).unwrap()
    });
    let c = run(&g, xt());
    assert_eq!(c.shape, vec![2, 7]);
    assert_eq!(
        f32s(&c),
        &[0., 1., 2., 0., 0., 1., 2., 3., 4., 5., 3., 3., 4., 5.]
    );
}

#[test]
fn symbolic_slice_and_iota_use_bound_symbols() {
    let mut g = Graph::new("t");
    let n = g.declare_symbol("n", 1, 100);
    let x = input(&mut g, "x", DType::F32, vec![n.clone() * 2i64]);
    let s = g
        .add(
            Op::Slice {
                axis: 0,
                start: n.clone(),
                end: n.clone() * 2i64,
            },
            &[x],
        )
        .unwrap();
    let i = g
        .add(
            Op::Iota {
                len: n.clone(),
                start: n.clone() + 1i64,
                dtype: DType::I64,
            },
            &[],
        )
        .unwrap();
    g.set_output("out", s);
    g.set_output("iota", i);
    let mut out = try_run(
        &g,
        vec![("x", Tensor::f32(vec![6], vec![0., 1., 2., 3., 4., 5.]))],
    )
    .unwrap();
    assert_eq!(out.symbols["n"], 3);
    assert_eq!(f32s(&out.outputs["out"]), &[3., 4., 5.]);
    assert_eq!(i64s(&out.outputs.remove("iota").unwrap()), &[4, 5, 6]);
}

#[test]
fn constants() {
    let mut g = Graph::new("t");
    let c = g
        .add(
            Op::Constant {
                value: Scalar::Float(0.1),
                dtype: DType::BF16,
            },
            &[],
        )
        .unwrap();
    let i = g
        .add(
            Op::Constant {
                value: Scalar::Int(-7),
                dtype: DType::I32,
            },
            &[],
        )
        .unwrap();
    g.set_output("out", c);
    g.set_output("i", i);
    let out = try_run(&g, vec![]).unwrap();
    assert_eq!(out.outputs["out"].shape, Vec::<usize>::new());
    assert_eq!(
        out.outputs["out"].data,
        TensorData::BF16(vec![bf16::from_f32(0.1)])
    );
    assert_eq!(out.outputs["i"].data, TensorData::I32(vec![-7]));
}

#[test]
fn gather_selects_and_rejects_bad_indices() {
    let mut g = Graph::new("t");
    let d = input(&mut g, "data", DType::F32, dims(&[3, 2]));
    let i = input(&mut g, "idx", DType::I64, dims(&[2, 2]));
    let r = g.add(Op::Gather { axis: 0 }, &[d, i]).unwrap();
    g.set_output("out", r);
    let data = Tensor::f32(vec![3, 2], vec![0., 1., 10., 11., 20., 21.]);
    let out = run(
        &g,
        vec![
            ("data", data.clone()),
            ("idx", Tensor::i64(vec![2, 2], vec![2, 0, 1, 1])),
        ],
    );
    assert_eq!(out.shape, vec![2, 2, 2]);
    assert_eq!(f32s(&out), &[20., 21., 0., 1., 10., 11., 10., 11.]);
    for bad in [-1, 3] {
        let err = try_run(
            &g,
            vec![
                ("data", data.clone()),
                ("idx", Tensor::i64(vec![2, 2], vec![0, bad, 1, 1])),
            ],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ExecError::Node {
                    node: NodeId(2),
                    op: "gather",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains(&format!("index {bad}")), "{msg}");
    }

    let mut g = Graph::new("t");
    let d = input(&mut g, "data", DType::F32, dims(&[3, 2]));
    let i = input(&mut g, "idx", DType::I32, dims(&[3]));
    let r = g.add(Op::Gather { axis: 1 }, &[d, i]).unwrap();
    g.set_output("out", r);
    let out = run(
        &g,
        vec![("data", data), ("idx", Tensor::i32(vec![3], vec![1, 1, 0]))],
    );
    assert_eq!(f32s(&out), &[1., 1., 0., 11., 11., 10., 21., 21., 20.]);
}

fn masked_select_graph(len: Dim) -> Graph {
    let mut g = Graph::new("t");
    let n = g.declare_symbol("n", 0, 100);
    g.declare_symbol("k", 0, 100);
    let d = input(&mut g, "data", DType::F32, vec![n.clone(), Dim::Const(2)]);
    let m = input(&mut g, "mask", DType::Bool, vec![n]);
    let s = g.add(Op::MaskedSelect { len }, &[d, m]).unwrap();
    g.set_output("out", s);
    g
}

#[test]
fn masked_select_binds_its_fresh_length() {
    let g = masked_select_graph(Dim::sym("k"));
    let data = Tensor::f32(vec![4, 2], vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    let mask = Tensor::bool(vec![4], vec![false, true, false, true]);
    let out = try_run(&g, vec![("data", data), ("mask", mask)]).unwrap();
    assert_eq!(out.symbols["k"], 2);
    assert_eq!(out.outputs["out"].shape, vec![2, 2]);
    assert_eq!(f32s(&out.outputs["out"]), &[2., 3., 6., 7.]);
}

#[test]
fn masked_select_checks_a_known_length() {
    let g = masked_select_graph(Dim::sym("n") + Dim::Const(-1));
    let data = Tensor::f32(vec![3, 2], vec![0.; 6]);
    let err = try_run(
        &g,
        vec![
            ("data", data),
            ("mask", Tensor::bool(vec![3], vec![true, false, false])),
        ],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ExecError::Node {
                op: "masked_select",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("is 2 but the mask has 1 true"), "{msg}");
}

#[test]
fn masked_scatter_replaces_rows_in_order() {
    let mut g = Graph::new("t");
    let b = input(&mut g, "base", DType::F32, dims(&[4, 2]));
    let m = input(&mut g, "mask", DType::Bool, dims(&[4]));
    let src = g.declare_symbol("m", 0, 10);
    let s = input(&mut g, "src", DType::F32, vec![src, Dim::Const(2)]);
    let r = g.add(Op::MaskedScatter, &[b, m, s]).unwrap();
    g.set_output("out", r);
    let base = Tensor::f32(vec![4, 2], vec![0.; 8]);
    let mask = Tensor::bool(vec![4], vec![true, false, false, true]);
    let out = run(
        &g,
        vec![
            ("base", base.clone()),
            ("mask", mask.clone()),
            ("src", Tensor::f32(vec![2, 2], vec![1., 2., 3., 4.])),
        ],
    );
    assert_eq!(f32s(&out), &[1., 2., 0., 0., 0., 0., 3., 4.]);
    let err = try_run(
        &g,
        vec![
            ("base", base),
            ("mask", mask),
            ("src", Tensor::f32(vec![3, 2], vec![1.; 6])),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Node {
                op: "masked_scatter",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("selects 2 rows but the source has 3"),
        "{err}"
    );
}

fn vision_graph() -> Graph {
    let mut g = Graph::new("t");
    let n = g.declare_symbol("n", 1, 16);
    g.declare_symbol("patches", 0, 1 << 20);
    let grid = input(&mut g, "grid", DType::I64, vec![n.clone(), Dim::Const(3)]);
    let merge = input(&mut g, "merge", DType::I64, vec![n]);
    let p = g
        .add(
            Op::VisionPositionIds {
                len: Dim::sym("patches"),
            },
            &[grid, merge],
        )
        .unwrap();
    let s = g
        .add(
            Op::SegmentIds {
                len: Dim::sym("patches"),
            },
            &[grid],
        )
        .unwrap();
    g.set_output("out", p);
    g.set_output("seg", s);
    g
}

fn vision(grid: &[[i64; 4]]) -> Result<Outputs, ExecError> {
    let g = vision_graph();
    let thw: Vec<i64> = grid.iter().flat_map(|e| e[..3].to_vec()).collect();
    let m: Vec<i64> = grid.iter().map(|e| e[3]).collect();
    try_run(
        &g,
        vec![
            ("grid", Tensor::i64(vec![grid.len(), 3], thw)),
            ("merge", Tensor::i64(vec![grid.len()], m)),
        ],
    )
}

fn pairs(t: &Tensor) -> Vec<(i64, i64)> {
    assert_eq!(t.shape[1], 2);
    i64s(t).chunks(2).map(|c| (c[0], c[1])).collect()
}

const GRID_1_2_2: [(i64, i64); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];
const GRID_1_4_4_M2: [(i64, i64); 16] = [
    (0, 0),
    (0, 1),
    (1, 0),
    (1, 1),
    (0, 2),
    (0, 3),
    (1, 2),
    (1, 3),
    (2, 0),
    (2, 1),
    (3, 0),
    (3, 1),
    (2, 2),
    (2, 3),
    (3, 2),
    (3, 3),
];
const FRAME_2_4_M2: [(i64, i64); 8] = [
    (0, 0),
    (0, 1),
    (1, 0),
    (1, 1),
    (0, 2),
    (0, 3),
    (1, 2),
    (1, 3),
];

#[test]
fn vision_position_ids_follow_merge_blocks() {
    let out = vision(&[[1, 2, 2, 1]]).unwrap();
    assert_eq!(pairs(&out.outputs["out"]), GRID_1_2_2.to_vec());
    assert_eq!(i64s(&out.outputs["seg"]), &[0; 4]);

    let out = vision(&[[1, 4, 4, 2]]).unwrap();
    assert_eq!(pairs(&out.outputs["out"]), GRID_1_4_4_M2.to_vec());

    let out = vision(&[[2, 2, 4, 2]]).unwrap();
    assert_eq!(
        pairs(&out.outputs["out"]),
        [FRAME_2_4_M2, FRAME_2_4_M2].concat()
    );
    assert_eq!(
        i64s(&out.outputs["seg"]),
        &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    );

    let out = vision(&[[1, 2, 2, 1], [1, 4, 4, 2], [2, 2, 4, 2]]).unwrap();
    assert_eq!(out.symbols["patches"], 36);
    let want = [
        GRID_1_2_2.to_vec(),
        GRID_1_4_4_M2.to_vec(),
        FRAME_2_4_M2.to_vec(),
        FRAME_2_4_M2.to_vec(),
    ]
    .concat();
    assert_eq!(pairs(&out.outputs["out"]), want);
    let seg: Vec<i64> = [vec![0; 4], vec![1; 16], vec![2; 8], vec![3; 8]].concat();
    assert_eq!(i64s(&out.outputs["seg"]), seg.as_slice());
}

#[test]
fn vision_position_ids_reject_bad_grids() {
    let err = vision(&[[1, 3, 4, 2]]).unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Node {
                op: "vision_position_ids",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not divisible"), "{err}");
    let err = vision(&[[1, -2, 4, 2]]).unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");

    // A len already bound elsewhere must agree with Σ t·h·w.
    let mut g = Graph::new("t");
    let grid = input(&mut g, "grid", DType::I64, dims(&[1, 3]));
    let p = g
        .add(Op::SegmentIds { len: Dim::Const(5) }, &[grid])
        .unwrap();
    g.set_output("out", p);
    let err = try_run(&g, vec![("grid", Tensor::i64(vec![1, 3], vec![1, 2, 2]))]).unwrap_err();
    assert!(err.to_string().contains("Σt·h·w = 4"), "{err}");
}

#[test]
fn softmax_from_primitives_matches_direct() {
    let x: Vec<f32> = vec![0.3, -1.2, 2.5, 0.0, 7.0, -3.0, 1.0, 1.0, 1.0, 88.0];
    let g = unary_graph(DType::F32, &[2, 5], |g, x| {
        let m = g
            .add(
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: vec![1],
                    keep_dims: true,
                },
                &[x],
            )
            .unwrap();
        let d = g.add(Op::Binary(BinaryOp::Sub), &[x, m]).unwrap();
        let e = g.add(Op::Unary(UnaryOp::Exp), &[d]).unwrap();
        let s = g
            .add(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: vec![1],
                    keep_dims: true,
                },
                &[e],
            )
            .unwrap();
        g.add(Op::Binary(BinaryOp::Div), &[e, s]).unwrap()
    });
    let out = run(&g, vec![("x", Tensor::f32(vec![2, 5], x.clone()))]);
    for (row, got) in x.chunks(5).zip(f32s(&out).chunks(5)) {
        let mx = row.iter().cloned().fold(f64::MIN, |a, b| a.max(b as f64));
        let den: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
        for (&v, &y) in row.iter().zip(got) {
            let want = (v as f64 - mx).exp() / den;
            assert!(
                (y as f64 - want).abs() <= 1e-6 * want.max(1e-30) + 1e-38,
                "{y} vs {want}"
            );
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Naive batched matmul with numpy broadcasting of the batch dims.
fn naive_matmul(a: &[f32], ash: &[usize], b: &[f32], bsh: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let (m, k, n) = (ash[ash.len() - 2], ash[ash.len() - 1], bsh[bsh.len() - 1]);
    let (ab, bb) = (&ash[..ash.len() - 2], &bsh[..bsh.len() - 2]);
    let rank = ab.len().max(bb.len());
    let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
    let (ab, bb) = (pad(ab), pad(bb));
    let batch: Vec<usize> = ab.iter().zip(&bb).map(|(x, y)| *x.max(y)).collect();
    let nb: usize = batch.iter().product();
    let flat = |idx: &[usize], shape: &[usize]| {
        idx.iter()
            .zip(shape)
            .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
    };
    let mut out = Vec::new();
    for bi in 0..nb {
        let mut idx = vec![0; rank];
        let mut r = bi;
        for d in (0..rank).rev() {
            idx[d] = r % batch[d];
            r /= batch[d];
        }
        let (oa, ob) = (flat(&idx, &ab) * m * k, flat(&idx, &bb) * k * n);
        for i in 0..m {
            for j in 0..n {
                out.push(
                    (0..k)
                        .map(|l| a[oa + i * k + l] as f64 * b[ob + l * n + j] as f64)
                        .sum(),
                );
            }
        }
    }
    ([batch, vec![m, n]].concat(), out)
}

fn matmul_graph(dtype: DType, a: &[usize], b: &[usize]) -> Graph {
    let mut g = Graph::new("t");
    let to = |s: &[usize]| s.iter().map(|&d| Dim::from(d)).collect();
    let x = input(&mut g, "a", dtype, to(a));
    let y = input(&mut g, "b", dtype, to(b));
    let z = g.add(Op::MatMul, &[x, y]).unwrap();
    g.set_output("out", z);
    g
}

fn check_matmul(ash: Vec<usize>, bsh: Vec<usize>, seed: u64) {
    let a = values(seed, ash.iter().product());
    let b = values(seed + 1, bsh.iter().product());
    let g = matmul_graph(DType::F32, &ash, &bsh);
    let out = run(
        &g,
        vec![
            ("a", Tensor::f32(ash.clone(), a.clone())),
            ("b", Tensor::f32(bsh.clone(), b.clone())),
        ],
    );
    let (shape, want) = naive_matmul(&a, &ash, &b, &bsh);
    assert_eq!(out.shape, shape);
    for (got, want) in f32s(&out).iter().zip(&want) {
        assert!(
            (*got as f64 - want).abs() <= 1e-5,
            "{ash:?} x {bsh:?}: {got} vs {want}"
        );
    }
}

#[test]
fn matmul_fixed_cases() {
    let g = matmul_graph(DType::F32, &[2, 2], &[2, 3]);
    let out = run(
        &g,
        vec![
            ("a", Tensor::f32(vec![2, 2], vec![1., 2., 3., 4.])),
            ("b", Tensor::f32(vec![2, 3], vec![1., 0., 1., 0., 1., 1.])),
        ],
    );
    assert_eq!(f32s(&out), &[1., 2., 3., 3., 4., 7.]);
    check_matmul(vec![3, 1, 4, 5], vec![2, 5, 6], 7);
    check_matmul(vec![2, 3, 64, 80], vec![80, 33], 9);
    check_matmul(vec![1, 4, 0], vec![0, 3], 1);

    // bf16 operands, f32 accumulation, one rounding at the end.
    let g = matmul_graph(DType::BF16, &[1, 3], &[3, 1]);
    let bf = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let out = run(
        &g,
        vec![
            ("a", Tensor::bf16(vec![1, 3], bf(&[1.0, 1.0, 1.0]))),
            (
                "b",
                Tensor::bf16(vec![3, 1], bf(&[1.0, 0.00390625, 0.00390625])),
            ),
        ],
    );
    assert_eq!(out.data, TensorData::BF16(bf(&[1.0078125])));
}

fn batch_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        prop::collection::vec(1usize..4, 0..3),
        prop::collection::vec((any::<bool>(), any::<bool>()), 3),
        0usize..3,
        0usize..3,
    )
        .prop_map(|(batch, bcast, drop_a, drop_b)| {
            let a: Vec<usize> = batch
                .iter()
                .zip(&bcast)
                .map(|(&d, (x, _))| if *x { 1 } else { d })
                .collect();
            let b: Vec<usize> = batch
                .iter()
                .zip(&bcast)
                .map(|(&d, (_, y))| if *y { 1 } else { d })
                .collect();
            (
                a[drop_a.min(a.len())..].to_vec(),
                b[drop_b.min(b.len())..].to_vec(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matmul_matches_naive((ab, bb) in batch_shapes(), m in 1usize..7, k in 1usize..9, n in 1usize..7, seed in any::<u64>()) {
        check_matmul([ab, vec![m, k]].concat(), [bb, vec![k, n]].concat(), seed);
    }
}

fn bf16_weight_graph(n: i64) -> Graph {
    let mut g = Graph::new("t");
    let w = weight(&mut g, "w", DType::BF16, dims(&[n]));
    let c = g.add(Op::Cast { to: DType::F32 }, &[w]).unwrap();
    g.set_output("out", c);
    g
}

#[test]
fn weight_cast_decodes_once_and_exactly() {
    let n = 1000;
    let vals: Vec<bf16> = values(3, n).into_iter().map(bf16::from_f32).collect();
    let weights = named(vec![("w", Tensor::bf16(vec![n], vals.clone()))]);
    let g = bf16_weight_graph(n as i64);
    let mut out = execute(&g, &HashMap::new(), &weights, &HashMap::new()).unwrap();
    let t = out.outputs.remove("out").unwrap();
    assert_eq!(
        f32s(&t),
        vals.iter()
            .map(|v| v.to_f32())
            .collect::<Vec<_>>()
            .as_slice()
    );
    // Only the f32 buffer ever existed: no bf16 copy of the weight next to it.
    assert_eq!(out.peak_bytes, n * 4);
}

#[test]
fn weights_are_checked_and_named() {
    let g = bf16_weight_graph(4);
    let err = execute(
        &g,
        &HashMap::new(),
        &HashMap::<String, Tensor>::new(),
        &HashMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ExecError::Weight { name, .. } if name == "w"),
        "{err}"
    );
    let wrong = named(vec![("w", Tensor::f32(vec![4], vec![0.; 4]))]);
    let err = execute(&g, &HashMap::new(), &wrong, &HashMap::new()).unwrap_err();
    assert!(
        err.to_string().contains("weight `w` has dtype f32"),
        "{err}"
    );
    let wrong = named(vec![("w", Tensor::bf16(vec![5], vec![bf16::ZERO; 5]))]);
    let err = execute(&g, &HashMap::new(), &wrong, &HashMap::new()).unwrap_err();
    assert!(
        err.to_string().contains("weight `w` has shape [5]"),
        "{err}"
    );
}

#[test]
fn dead_values_are_freed() {
    let n = 1 << 18;
    let g = unary_graph(DType::F32, &[n], |g, x| {
        let mut y = x;
        for _ in 0..100 {
            y = g.add(Op::Unary(UnaryOp::Neg), &[y]).unwrap();
        }
        y
    });
    let out = try_run(
        &g,
        vec![("x", Tensor::f32(vec![n as usize], vec![1.0; n as usize]))],
    )
    .unwrap();
    assert_eq!(f32s(&out.outputs["out"])[0], 1.0);
    // An operand and its result, never the whole chain.
    assert_eq!(out.peak_bytes, 2 * 4 * n as usize);
}

#[test]
fn input_binding_errors_name_the_input() {
    let mut g = Graph::new("t");
    let n = g.declare_symbol("n_merged", 1, 4);
    let x = input(
        &mut g,
        "pixel_values",
        DType::F32,
        vec![n.clone() * 4i64, Dim::Const(588)],
    );
    let y = input(&mut g, "grid", DType::I64, vec![n, Dim::Const(3)]);
    let s = g.add(Op::Unary(UnaryOp::Neg), &[x]).unwrap();
    let t = g.add(Op::Unary(UnaryOp::Neg), &[y]).unwrap();
    g.set_output("out", s);
    g.set_output("t", t);
    let px = |rows: usize| Tensor::f32(vec![rows, 588], vec![0.; rows * 588]);
    let grid = |n: usize| Tensor::i64(vec![n, 3], vec![1; n * 3]);

    let ok = try_run(&g, vec![("pixel_values", px(8)), ("grid", grid(2))]).unwrap();
    assert_eq!(ok.symbols["n_merged"], 2);

    let cases: Vec<(Vec<(&str, Tensor)>, &str)> = vec![
        (
            vec![("pixel_values", px(10)), ("grid", grid(2))],
            "input `pixel_values`",
        ),
        (vec![("pixel_values", px(8)), ("grid", grid(3))], "input `"),
        (
            vec![("pixel_values", px(40)), ("grid", grid(10))],
            "input `",
        ),
        (vec![("pixel_values", px(8))], "input `grid` is not given"),
        (
            vec![
                ("pixel_values", Tensor::i64(vec![8, 588], vec![0; 8 * 588])),
                ("grid", grid(2)),
            ],
            "input `pixel_values` has dtype i64",
        ),
    ];
    for (inputs, want) in cases {
        let err = try_run(&g, inputs).unwrap_err();
        assert!(matches!(err, ExecError::Input { .. }), "{err}");
        assert!(
            err.to_string().contains(want),
            "{err} should mention {want}"
        );
    }
    // Element count that does not fill the shape.
    let bad = Tensor {
        shape: vec![8, 588],
        data: TensorData::F32(vec![0.; 3]),
    };
    let err = try_run(&g, vec![("pixel_values", bad), ("grid", grid(2))]).unwrap_err();
    assert!(err.to_string().contains("elements"), "{err}");
}

#[test]
fn caches_read_and_append() {
    let mut g = Graph::new("t");
    let p = g.declare_symbol("past", 0, 64);
    let s = g.declare_symbol("seq", 1, 64);
    let past = g
        .add_source(
            Op::CacheRead { name: "k0".into() },
            TensorType::new(DType::F32, vec![Dim::Const(2), p, Dim::Const(1)]),
        )
        .unwrap();
    let new = input(
        &mut g,
        "k",
        DType::F32,
        vec![Dim::Const(2), s, Dim::Const(1)],
    );
    let all = g
        .add(
            Op::CacheAppend {
                name: "k0".into(),
                axis: 1,
            },
            &[past, new],
        )
        .unwrap();
    let sum = g
        .add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![1, 2],
                keep_dims: false,
            },
            &[all],
        )
        .unwrap();
    g.set_output("out", sum);
    let caches = named(vec![("k0", Tensor::f32(vec![2, 1, 1], vec![1., 2.]))]);
    let inputs = named(vec![(
        "k",
        Tensor::f32(vec![2, 2, 1], vec![10., 20., 30., 40.]),
    )]);
    let out = execute(&g, &inputs, &HashMap::<String, Tensor>::new(), &caches).unwrap();
    assert_eq!(f32s(&out.outputs["out"]), &[31., 72.]);
    assert_eq!(out.caches["k0"].shape, vec![2, 3, 1]);
    assert_eq!(f32s(&out.caches["k0"]), &[1., 10., 20., 2., 30., 40.]);

    // An empty cache (past = 0) is a valid start.
    let empty = named(vec![("k0", Tensor::f32(vec![2, 0, 1], vec![]))]);
    let out = execute(&g, &inputs, &HashMap::<String, Tensor>::new(), &empty).unwrap();
    assert_eq!(f32s(&out.caches["k0"]), &[10., 20., 30., 40.]);

    let err = execute(
        &g,
        &inputs,
        &HashMap::<String, Tensor>::new(),
        &HashMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ExecError::Cache { name, .. } if name == "k0"),
        "{err}"
    );
}

#[test]
fn tensor_bytes_round_trip_unaligned() {
    let t = Tensor::f32(vec![2, 2], vec![1.5, -2.0, 3.25, 0.0]);
    let mut buf = vec![0u8];
    buf.extend(t.to_bytes());
    assert_eq!(
        Tensor::from_bytes(DType::F32, &[2, 2], &buf[1..]).unwrap(),
        t
    );
    let err = Tensor::from_bytes(DType::F32, &[2, 3], &buf[1..]).unwrap_err();
    assert!(
        err.starts_with("16 bytes do not hold") && err.ends_with("(24 bytes)"),
        "{err}"
    );
    for t in [
        Tensor::i64(vec![2], vec![-1, 1 << 40]),
        Tensor::bf16(vec![1], vec![bf16::from_f32(0.1)]),
        Tensor::bool(vec![3], vec![true, false, true]),
        Tensor::i32(vec![], vec![7]),
    ] {
        assert_eq!(
            Tensor::from_bytes(t.dtype(), &t.shape, &t.to_bytes()).unwrap(),
            t
        );
    }
}

#[test]
fn tensors_round_trip_through_safetensors() {
    let tensors = vec![
        ("a".to_string(), Tensor::f32(vec![2], vec![1.0, 2.0])),
        ("m".to_string(), Tensor::bool(vec![2], vec![false, true])),
        ("g".to_string(), Tensor::i64(vec![1, 3], vec![1, 4, 4])),
    ];
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, t) in &tensors {
        assert_eq!(
            &Tensor::from_safetensors(&st.tensor(name).unwrap()).unwrap(),
            t
        );
    }
    // A safetensors file is a WeightSource too.
    let w = st.weight("g").unwrap();
    assert_eq!((w.dtype, w.shape.clone()), (DType::I64, vec![1, 3]));
}

/// `x · transpose(W)` as a linear layer lowers it: the transpose is read through strides.
#[test]
fn matmul_reads_transposed_operands_in_place() {
    let (m, k, n) = (5usize, 7usize, 6usize);
    let wv = values(11, n * k);
    let xv = values(12, m * k);
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[m as i64, k as i64]));
    let w = weight(&mut g, "w", DType::BF16, dims(&[n as i64, k as i64]));
    let wc = g.add(Op::Cast { to: DType::F32 }, &[w]).unwrap();
    let wt = g.add(Op::Transpose { perm: vec![1, 0] }, &[wc]).unwrap();
    let y = g.add(Op::MatMul, &[x, wt]).unwrap();
    g.set_output("out", y);
    let wb: Vec<bf16> = wv.iter().map(|&v| bf16::from_f32(v)).collect();
    let weights = named(vec![("w", Tensor::bf16(vec![n, k], wb.clone()))]);
    let inputs = named(vec![("x", Tensor::f32(vec![m, k], xv.clone()))]);
    let out = execute(&g, &inputs, &weights, &HashMap::new()).unwrap();
    let wt_vals: Vec<f32> = (0..k * n)
        .map(|i| wb[(i % n) * k + i / n].to_f32())
        .collect();
    let (_, want) = naive_matmul(&xv, &[m, k], &wt_vals, &[k, n]);
    for (got, want) in f32s(&out.outputs["out"]).iter().zip(&want) {
        assert!((*got as f64 - want).abs() <= 1e-5, "{got} vs {want}");
    }
    // The f32 weight and the result; no transposed copy.
    assert_eq!(out.peak_bytes, (n * k + m * n) * 4);

    // Batched q·kᵀ with the transpose also read elsewhere (so materialized) and a transposed lhs.
    let (b, s, d) = (2usize, 3usize, 4usize);
    let qv = values(13, b * s * d);
    let kv = values(14, b * s * d);
    let mut g = Graph::new("t");
    let q = input(
        &mut g,
        "q",
        DType::F32,
        dims(&[b as i64, s as i64, d as i64]),
    );
    let kk = input(
        &mut g,
        "k",
        DType::F32,
        dims(&[b as i64, s as i64, d as i64]),
    );
    let kt = g
        .add(
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[kk],
        )
        .unwrap();
    let scores = g.add(Op::MatMul, &[q, kt]).unwrap();
    let qt = g
        .add(
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[q],
        )
        .unwrap();
    let gram = g.add(Op::MatMul, &[qt, q]).unwrap();
    g.set_output("out", scores);
    g.set_output("gram", gram);
    g.set_output("kt", kt);
    let out = try_run(
        &g,
        vec![
            ("q", Tensor::f32(vec![b, s, d], qv.clone())),
            ("k", Tensor::f32(vec![b, s, d], kv.clone())),
        ],
    )
    .unwrap();
    let transpose = |v: &[f32], r: usize, c: usize| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| (0..c * r).map(move |i| v[bi * r * c + (i % r) * c + i / r]))
            .collect()
    };
    let (_, want) = naive_matmul(&qv, &[b, s, d], &transpose(&kv, s, d), &[b, d, s]);
    let (_, want_gram) = naive_matmul(&transpose(&qv, s, d), &[b, d, s], &qv, &[b, s, d]);
    for (got, want) in f32s(&out.outputs["out"])
        .iter()
        .zip(&want)
        .chain(f32s(&out.outputs["gram"]).iter().zip(&want_gram))
    {
        assert!((*got as f64 - want).abs() <= 1e-5, "{got} vs {want}");
    }
    assert_eq!(f32s(&out.outputs["kt"]), transpose(&kv, s, d).as_slice());
}

#[test]
fn int_matmul_with_transposed_rhs() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::I64, dims(&[2, 2]));
    let b = input(&mut g, "b", DType::I64, dims(&[3, 2]));
    let bt = g.add(Op::Transpose { perm: vec![1, 0] }, &[b]).unwrap();
    let y = g.add(Op::MatMul, &[a, bt]).unwrap();
    g.set_output("out", y);
    let out = run(
        &g,
        vec![
            ("a", Tensor::i64(vec![2, 2], vec![1, 2, 3, 4])),
            ("b", Tensor::i64(vec![3, 2], vec![1, 0, 0, 1, 1, 1])),
        ],
    );
    assert_eq!(i64s(&out), &[1, 2, 3, 3, 4, 7]);
}

/// Counts the nodes it computes; claims `claimed` (a unary op over its operand).
struct Counting {
    claimed: usize,
    computed: std::cell::Cell<usize>,
}

impl vl3c_reference::Accelerate for Counting {
    fn claim(&self, g: &Graph, node: usize) -> Option<Vec<NodeId>> {
        (node == self.claimed).then(|| g.nodes[node].inputs.clone())
    }
    fn compute(
        &self,
        _: &Graph,
        _: usize,
        ops: &dyn vl3c_reference::Operands,
    ) -> Result<vl3c_reference::Computed, String> {
        self.computed.set(self.computed.get() + 1);
        let x = ops.get(0).map_err(|e| e.to_string())?.into_owned();
        let doubled = f32s(&x).iter().map(|v| 2.0 * v).collect();
        Ok(vl3c_reference::Computed::Value(Tensor::f32(
            x.shape.clone(),
            doubled,
        )))
    }
}

#[test]
fn execute_for_runs_only_what_the_wanted_outputs_read() {
    // `all` = 2x (claimed), `last` = exp(x); asking for `last` must not run the claim.
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[3]));
    let all = g.add(Op::Unary(UnaryOp::Neg), &[x]).unwrap();
    let last = g.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    g.set_output("all", all);
    g.set_output("last", last);
    let inputs = named(vec![("x", Tensor::f32(vec![3], vec![0.5, 1.0, 2.0]))]);
    let none = HashMap::<String, Tensor>::new();
    let accel = Counting {
        claimed: all.index(),
        computed: std::cell::Cell::new(0),
    };
    let run_for = |wanted: &[&str]| {
        vl3c_reference::execute_for(&g, &inputs, &none, &HashMap::new(), &accel, wanted)
    };

    let full = vl3c_reference::execute_with(&g, &inputs, &none, &HashMap::new(), &accel).unwrap();
    assert_eq!(accel.computed.get(), 1);
    assert_eq!(f32s(&full.outputs["all"]), &[1.0, 2.0, 4.0]);

    let only = run_for(&["last"]).unwrap();
    assert_eq!(accel.computed.get(), 1, "the claim only `all` reads ran");
    assert_eq!(only.outputs.len(), 1);
    assert_eq!(f32s(&only.outputs["last"]), f32s(&full.outputs["last"]));

    let both = run_for(&["last", "all"]).unwrap();
    assert_eq!(accel.computed.get(), 2);
    assert_eq!(both.outputs.len(), 2);

    match run_for(&["logits"]) {
        Err(ExecError::Output { name, message }) => {
            assert_eq!(name, "logits");
            assert!(message.contains("not an output"), "{message}");
        }
        other => panic!("expected an output error, got {other:?}"),
    }
}
