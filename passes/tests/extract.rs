//! Extraction: never a cycle, even when the e-graph is full of them, and shared merged values
//! are costed once (DAG cost), so merges that pay for themselves are chosen.

use egg::Id;
use vl3c_ir::{BinaryOp, DType, Dim, Graph, Op, TensorType, UnaryOp};
use vl3c_passes::analysis::EGraph;
use vl3c_passes::convert::{from_egraph, to_egraph};
use vl3c_passes::cost::{op_cost, Target};
use vl3c_passes::extract::extract;
use vl3c_passes::lang::ENode;
use vl3c_passes::{optimize, Budget};

fn cpu_cost(node: &ENode, out: &TensorType, ins: &[&TensorType], weight_only: bool) -> f64 {
    op_cost(&Target::CPU, node.op(), out, ins, weight_only)
}

fn input(g: &mut Graph, name: &str, shape: &[i64]) -> vl3c_ir::NodeId {
    let ty = TensorType::new(DType::F32, shape.iter().map(|&d| Dim::Const(d)).collect());
    g.add_source(Op::Input { name: name.into() }, ty).unwrap()
}

/// Every class of `exp(neg(neg(x)))` is merged with its neighbours' so the e-graph holds the
/// cycles `x = neg(neg(x))` and `y = exp(y')`-style self references; extraction must still emit
/// a graph in SSA order.
#[test]
fn cyclic_equivalences_extract_acyclically() {
    let mut g = Graph::new("cycles");
    let x = input(&mut g, "x", &[4, 4]);
    let n1 = g.add(Op::Unary(UnaryOp::Neg), &[x]).unwrap();
    let n2 = g.add(Op::Unary(UnaryOp::Neg), &[n1]).unwrap();
    let e = g.add(Op::Unary(UnaryOp::Exp), &[n2]).unwrap();
    g.set_output("y", e);
    let (mut egraph, roots, class_of): (EGraph, _, Vec<Id>) = to_egraph(&g);
    // neg(neg(x)) = x: the class of x now contains neg(class n1), and n1 contains neg(x).
    egraph.union(class_of[x.index()], class_of[n2.index()]);
    // y = y + 0 style self-loop: the output class contains a node reading itself.
    let zero = egraph.add(ENode::new(
        Op::Constant {
            value: vl3c_ir::Scalar::Float(0.0),
            dtype: DType::F32,
        },
        vec![],
    ));
    let y = class_of[e.index()];
    let loop_node = egraph.add(ENode::new(Op::Binary(BinaryOp::Add), vec![y, zero]));
    egraph.union(y, loop_node);
    egraph.rebuild();
    let roots = vl3c_passes::convert::Roots {
        outputs: roots
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), egraph.find(*id)))
            .collect(),
        effects: vec![],
    };
    let choice = extract(&egraph, roots.all(), &cpu_cost).unwrap();
    let out = from_egraph(&g, &egraph, &choice, &roots).expect("acyclic, verified graph");
    assert_eq!(
        out.op_counts().get("neg"),
        None,
        "neg(neg(x)) is extracted as x"
    );
    assert_eq!(out.op_counts().get("exp"), Some(&1));
}

/// gate/up: two matmuls reading the same input are cheaper as one matmul split in two, once the
/// merged matmul is costed once rather than once per slice.
#[test]
fn merged_matmul_is_chosen_when_it_pays() {
    let mut g = Graph::new("mlp");
    let x = input(&mut g, "x", &[8, 16]);
    let w = |g: &mut Graph, name: &str| {
        g.add_source(
            Op::Weight { name: name.into() },
            TensorType::new(DType::F32, vec![Dim::Const(16), Dim::Const(24)]),
        )
        .unwrap()
    };
    let (wg, wu) = (w(&mut g, "gate"), w(&mut g, "up"));
    let gate = g.add(Op::MatMul, &[x, wg]).unwrap();
    let up = g.add(Op::MatMul, &[x, wu]).unwrap();
    let y = g.add(Op::Binary(BinaryOp::Mul), &[gate, up]).unwrap();
    g.set_output("y", y);
    let (opt, _) = optimize(&g, &Target::CPU, &Budget::default()).unwrap();
    let counts = opt.op_counts();
    assert_eq!(counts.get("matmul"), Some(&1), "{opt}");
    assert_eq!(counts.get("slice"), Some(&2), "{opt}");
}
