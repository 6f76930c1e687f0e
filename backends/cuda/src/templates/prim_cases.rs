//! The cases of the primitive glue templates: every glue op at the shapes the optimized 2B, 7B
//! and fixture graphs hold (`vl3c opt --print-after`), with short sequences, and odd lengths (1,
//! 7, 129). Weight-sized tensors the graphs only touch under `fold` (evaluated at compile time)
//! appear at the fixtures' sizes; a gather's embedding table keeps its hidden size but 1000 rows
//! of vocabulary, since every case materialises its inputs.

use super::cache::CacheAppend;
use super::chain::{single, ElementwiseChain};
use super::index::MaskedRows;
use super::reduce::Reduce;
use super::{Case, Template};
use vl3c_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar, TensorType, UnaryOp};

/// `"4*n_merged"`, `"seq_len + past_len"`, `"128"` as a dim.
fn dim(text: &str) -> Dim {
    text.split('+')
        .map(|term| {
            term.split('*')
                .map(|f| f.trim())
                .map(|f| {
                    f.parse::<i64>()
                        .map(Dim::Const)
                        .unwrap_or_else(|_| Dim::sym(f))
                })
                .fold(Dim::Const(1), |a, b| a * b)
        })
        .fold(Dim::Const(0), |a, b| a + b)
}

fn ty(dtype: DType, dims: &[&str]) -> TensorType {
    TensorType::new(dtype, dims.iter().map(|d| dim(d)).collect())
}

fn f32t(dims: &[&str]) -> TensorType {
    ty(DType::F32, dims)
}

fn i64t(dims: &[&str]) -> TensorType {
    ty(DType::I64, dims)
}

fn at(t: impl Template + Clone + 'static, sizes: &[&[(&str, i64)]]) -> Vec<Case> {
    sizes.iter().map(|s| Case::new(t.clone(), s)).collect()
}

fn layout_cases() -> Vec<Case> {
    let perm_102 = || Op::Transpose {
        perm: vec![1, 0, 2],
    };
    let mut out = Vec::new();
    // q/k/v heads split off the projection (2B, 7B, vision), and attention's output merged back.
    out.extend(at(
        single(perm_102(), &[f32t(&["seq_len", "12", "128"])]),
        &[&[("seq_len", 7)], &[("seq_len", 1)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["seq_len", "2", "128"])]),
        &[&[("seq_len", 129)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["seq_len", "28", "128"])]),
        &[&[("seq_len", 7)], &[("seq_len", 129)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["seq_len", "4", "128"])]),
        &[&[("seq_len", 1)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["12", "seq_len", "128"])]),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["n_merged", "16", "72"])]),
        &[&[("n_merged", 7)], &[("n_merged", 1)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["16", "4*n_merged", "72"])]),
        &[&[("n_merged", 3)]],
    ));
    out.extend(at(
        single(perm_102(), &[f32t(&["n_merged", "1", "72"])]),
        &[&[("n_merged", 129)]],
    ));
    out.extend(at(
        single(Op::Transpose { perm: vec![1, 0] }, &[f32t(&["32", "37"])]),
        &[&[]],
    ));
    out.extend(at(
        single(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[f32t(&["3", "seq_len", "5"])],
        ),
        &[&[("seq_len", 7)]],
    ));

    let reshape = |shape: &[&str]| Op::Reshape {
        shape: shape.iter().map(|d| dim(d)).collect(),
    };
    out.extend(at(
        single(
            reshape(&["seq_len", "12", "128"]),
            &[f32t(&["seq_len", "1536"])],
        ),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(reshape(&["seq_len"]), &[i64t(&["1", "seq_len"])]),
        &[&[("seq_len", 129)]],
    ));
    out.extend(at(
        single(
            reshape(&["4*n_merged", "1152"]),
            &[f32t(&["4*n_merged", "16", "72"])],
        ),
        &[&[("n_merged", 1)]],
    ));

    let slice = |axis, start: i64, end: i64| Op::Slice {
        axis,
        start: Dim::Const(start),
        end: Dim::Const(end),
    };
    out.extend(at(
        single(slice(1, 1536, 1792), &[f32t(&["seq_len", "2048"])]),
        &[&[("seq_len", 7)], &[("seq_len", 1)]],
    ));
    out.extend(at(
        single(slice(1, 3584, 4096), &[f32t(&["seq_len", "4608"])]),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(slice(1, 2304, 3456), &[f32t(&["4*n_merged", "3456"])]),
        &[&[("n_merged", 2)]],
    ));
    out.extend(at(
        single(slice(1, 1, 2), &[i64t(&["n_merged", "2"])]),
        &[&[("n_merged", 129)]],
    ));
    out.extend(at(
        single(
            Op::Slice {
                axis: 0,
                start: dim("past_len"),
                end: dim("past_len + 3"),
            },
            &[f32t(&["past_len + 5", "9"])],
        ),
        &[&[("past_len", 4)]],
    ));

    out.extend(at(
        single(
            Op::Concat { axis: 1 },
            &[f32t(&["seq_len", "64"]), f32t(&["seq_len", "64"])],
        ),
        &[&[("seq_len", 7)], &[("seq_len", 1)]],
    ));
    let quarter = f32t(&["n_merged", "18"]);
    out.extend(at(
        single(
            Op::Concat { axis: 1 },
            &[quarter.clone(), quarter.clone(), quarter.clone(), quarter],
        ),
        &[&[("n_merged", 129)]],
    ));
    out.extend(at(
        single(
            Op::Concat { axis: 0 },
            &[f32t(&["1152"]), f32t(&["1152"]), f32t(&["1152"])],
        ),
        &[&[]],
    ));
    out.extend(at(
        single(
            Op::Concat { axis: 1 },
            &[f32t(&["32", "32"]), f32t(&["32", "16"])],
        ),
        &[&[]],
    ));

    let append = |heads: &str| {
        let (past, new) = (
            f32t(&[heads, "past_len", "128"]),
            f32t(&[heads, "seq_len", "128"]),
        );
        CacheAppend::new(1, past, new).expect("types check")
    };
    out.extend(at(
        append("2"),
        &[
            &[("past_len", 0), ("seq_len", 7)],
            &[("past_len", 129), ("seq_len", 1)],
        ],
    ));
    out.extend(at(append("4"), &[&[("past_len", 7), ("seq_len", 1)]]));
    // An engine's cache allocated at its capacity (here exactly full, as the cache state is).
    let with_capacity = append("2").with_capacity(dim("capacity"));
    out.extend(at(
        with_capacity,
        &[&[("past_len", 5), ("seq_len", 2), ("capacity", 7)]],
    ));
    let broadcast = Op::Broadcast {
        shape: vec![Dim::Const(3), dim("seq_len"), Dim::Const(64)],
    };
    out.extend(at(
        single(broadcast, &[f32t(&["seq_len", "1"])]),
        &[&[("seq_len", 7)]],
    ));
    out
}

fn index_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let table = |hidden: &str| ty(DType::BF16, &["1000", hidden]);
    out.extend(at(
        single(Op::Gather { axis: 0 }, &[table("1536"), i64t(&["seq_len"])]),
        &[&[("seq_len", 7)], &[("seq_len", 1)]],
    ));
    out.extend(at(
        single(Op::Gather { axis: 0 }, &[table("3584"), i64t(&["seq_len"])]),
        &[&[("seq_len", 7)], &[("seq_len", 129)]],
    ));
    out.extend(at(
        single(
            Op::Gather { axis: 0 },
            &[f32t(&["99", "32"]), i64t(&["1", "seq_len"])],
        ),
        &[&[("seq_len", 129)]],
    ));
    out.extend(at(
        single(
            Op::Gather { axis: 1 },
            &[f32t(&["3", "10", "4"]), i64t(&["seq_len"])],
        ),
        &[&[("seq_len", 7)]],
    ));

    let grid = [i64t(&["n_entries", "3"]), i64t(&["n_entries"])];
    let vpi = |len: &str| Op::VisionPositionIds { len: dim(len) };
    out.extend(at(
        single(vpi("n_merged"), &grid),
        &[
            &[("n_entries", 1), ("n_merged", 7)],
            &[("n_entries", 3), ("n_merged", 129)],
        ],
    ));
    out.extend(at(
        single(vpi("4*n_merged"), &grid),
        &[
            &[("n_entries", 2), ("n_merged", 9)],
            &[("n_entries", 1), ("n_merged", 1)],
        ],
    ));
    let seg = |len: &str| Op::SegmentIds { len: dim(len) };
    out.extend(at(
        single(seg("n_merged"), &grid[..1]),
        &[
            &[("n_entries", 3), ("n_merged", 129)],
            &[("n_entries", 1), ("n_merged", 1)],
        ],
    ));
    out.extend(at(
        single(seg("4*n_merged"), &grid[..1]),
        &[&[("n_entries", 2), ("n_merged", 7)]],
    ));

    let select = |row: &str| {
        MaskedRows::select(f32t(&["n_video_tokens", row]), dim("n_video_kept"))
            .expect("types check")
    };
    out.extend(at(
        select("1536"),
        &[
            &[("n_video_tokens", 7), ("n_video_kept", 3)],
            &[("n_video_tokens", 1), ("n_video_kept", 1)],
        ],
    ));
    out.extend(at(
        select("32"),
        &[&[("n_video_tokens", 1500), ("n_video_kept", 1100)]],
    ));
    out.extend(at(
        select("3584"),
        &[&[("n_video_tokens", 7), ("n_video_kept", 7)]],
    ));
    out.extend(at(
        select("1536"),
        &[&[("n_video_tokens", 600), ("n_video_kept", 450)]],
    ));
    let scatter = |row: &str| {
        MaskedRows::scatter(f32t(&["seq_len", row]), f32t(&["n_image_tokens", row]))
            .expect("types check")
    };
    out.extend(at(
        scatter("1536"),
        &[&[("seq_len", 7), ("n_image_tokens", 3)]],
    ));
    out.extend(at(
        scatter("32"),
        &[
            &[("seq_len", 129), ("n_image_tokens", 64)],
            &[("seq_len", 1), ("n_image_tokens", 0)],
        ],
    ));
    out.extend(at(
        scatter("3584"),
        &[&[("seq_len", 7), ("n_image_tokens", 7)]],
    ));
    out
}

fn elementwise_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let x = f32t(&["seq_len", "128"]);
    for op in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Abs,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ] {
        out.extend(at(
            single(Op::Unary(op), std::slice::from_ref(&x)),
            &[&[("seq_len", 7)]],
        ));
    }
    out.extend(at(
        single(Op::Unary(UnaryOp::Neg), &[i64t(&["seq_len"])]),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(Op::Unary(UnaryOp::Abs), &[ty(DType::I32, &["seq_len"])]),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(Op::Unary(UnaryOp::Cos), &[f32t(&["1", "seq_len", "128"])]),
        &[&[("seq_len", 129)]],
    ));

    // Broadcasting as the rope tables do it, and every binary op on each dtype that allows it.
    out.extend(at(
        single(
            Op::Binary(BinaryOp::Mul),
            &[f32t(&["seq_len", "1"]), f32t(&["64"])],
        ),
        &[&[("seq_len", 7)], &[("seq_len", 129)]],
    ));
    out.extend(at(
        single(Op::Binary(BinaryOp::Div), &[f32t(&["64"]), f32t(&[])]),
        &[&[]],
    ));
    let row = [f32t(&["seq_len", "1536"]), f32t(&["1536"])];
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Lt,
        BinaryOp::Ge,
        BinaryOp::Eq,
    ] {
        out.extend(at(single(Op::Binary(op), &row), &[&[("seq_len", 7)]]));
    }
    let bf = [
        ty(DType::BF16, &["seq_len", "3584"]),
        ty(DType::BF16, &["seq_len", "3584"]),
    ];
    out.extend(at(
        single(Op::Binary(BinaryOp::Mul), &bf),
        &[&[("seq_len", 1)]],
    ));
    let ints = [i64t(&["seq_len", "3"]), i64t(&["3"])];
    for op in [
        BinaryOp::Add,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Ne,
        BinaryOp::Le,
    ] {
        out.extend(at(single(Op::Binary(op), &ints), &[&[("seq_len", 7)]]));
    }
    out.extend(at(
        single(
            Op::Binary(BinaryOp::Sub),
            &[ty(DType::I32, &["seq_len"]), ty(DType::I32, &["seq_len"])],
        ),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        single(Op::Binary(BinaryOp::Eq), &[i64t(&["seq_len"]), i64t(&[])]),
        &[&[("seq_len", 7)]],
    ));
    let bools = [ty(DType::Bool, &["seq_len"]), ty(DType::Bool, &["seq_len"])];
    for op in [BinaryOp::And, BinaryOp::Or, BinaryOp::Lt] {
        out.extend(at(single(Op::Binary(op), &bools), &[&[("seq_len", 7)]]));
    }
    let select = [
        ty(DType::Bool, &["seq_len", "1"]),
        f32t(&["seq_len", "64"]),
        f32t(&[]),
    ];
    out.extend(at(single(Op::Select, &select), &[&[("seq_len", 7)]]));

    for (from, to) in [
        (DType::BF16, DType::F32),
        (DType::F32, DType::BF16),
        (DType::I64, DType::F32),
        (DType::F32, DType::I64),
        (DType::F32, DType::I32),
        (DType::F32, DType::Bool),
        (DType::Bool, DType::F32),
        (DType::I64, DType::I32),
        (DType::I64, DType::Bool),
    ] {
        out.extend(at(
            single(Op::Cast { to }, &[ty(from, &["seq_len", "1536"])]),
            &[&[("seq_len", 7)]],
        ));
    }
    out.extend(at(
        single(
            Op::Iota {
                len: dim("seq_len"),
                start: dim("past_len"),
                dtype: DType::I64,
            },
            &[],
        ),
        &[
            &[("seq_len", 7), ("past_len", 0)],
            &[("seq_len", 1), ("past_len", 129)],
        ],
    ));
    out.extend(at(
        single(
            Op::Iota {
                len: Dim::Const(64),
                start: Dim::Const(0),
                dtype: DType::F32,
            },
            &[],
        ),
        &[&[]],
    ));
    out.extend(at(
        single(
            Op::Constant {
                value: Scalar::Int(151655),
                dtype: DType::I64,
            },
            &[],
        ),
        &[&[]],
    ));
    out.extend(at(
        single(
            Op::Constant {
                value: Scalar::Float(1e6),
                dtype: DType::F32,
            },
            &[],
        ),
        &[&[]],
    ));
    out
}

fn reduce_cases() -> Vec<Case> {
    let r = |op, axes: &[usize], keep, t: TensorType| {
        Reduce::new(op, axes.to_vec(), keep, t).expect("types check")
    };
    let mut out = Vec::new();
    out.extend(at(
        r(ReduceOp::Sum, &[1], false, f32t(&["seq_len", "1536"])),
        &[&[("seq_len", 7)], &[("seq_len", 1)]],
    ));
    out.extend(at(
        r(ReduceOp::Sum, &[1], true, f32t(&["seq_len", "8960"])),
        &[&[("seq_len", 129)]],
    ));
    out.extend(at(
        r(ReduceOp::Mean, &[2], true, f32t(&["12", "seq_len", "128"])),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        r(ReduceOp::Mean, &[1], true, f32t(&["n_merged", "1152"])),
        &[&[("n_merged", 129)]],
    ));
    out.extend(at(
        r(
            ReduceOp::Max,
            &[1],
            true,
            ty(DType::BF16, &["seq_len", "3584"]),
        ),
        &[&[("seq_len", 1)]],
    ));
    out.extend(at(
        r(ReduceOp::Max, &[0], false, f32t(&["seq_len", "64"])),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        r(ReduceOp::Sum, &[0, 2], true, f32t(&["4", "seq_len", "8"])),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        r(ReduceOp::Sum, &[1], false, i64t(&["seq_len", "3"])),
        &[&[("seq_len", 7)]],
    ));
    out.extend(at(
        r(ReduceOp::Max, &[0, 1], false, i64t(&["seq_len", "3"])),
        &[&[("seq_len", 129)]],
    ));
    out
}

/// Builds a chain graph node by node (the cases are code: a type error panics).
struct ChainGraph(Graph);

impl ChainGraph {
    fn input(&mut self, name: &str, t: TensorType) -> NodeId {
        self.0
            .add_source(Op::Input { name: name.into() }, t)
            .expect("an input")
    }
    fn add(&mut self, op: Op, inputs: &[NodeId]) -> NodeId {
        self.0
            .add(op, inputs)
            .unwrap_or_else(|e| panic!("a chain case does not type-check: {e}"))
    }
    fn constant(&mut self, v: f64) -> NodeId {
        self.add(
            Op::Constant {
                value: Scalar::Float(v),
                dtype: DType::F32,
            },
            &[],
        )
    }
    fn chain(mut self, outputs: &[(&str, NodeId)]) -> ElementwiseChain {
        for (name, id) in outputs {
            self.0.set_output(*name, *id);
        }
        ElementwiseChain::new(self.0).unwrap_or_else(|e| panic!("a chain case is not a chain: {e}"))
    }
}

fn chain_cases() -> Vec<Case> {
    let mut out = Vec::new();
    // The LLM's rope table: positions past_len.. times inverse frequencies, duplicated, cos and sin.
    let mut g = ChainGraph(Graph::new("rope_table"));
    let positions = g.add(
        Op::Iota {
            len: dim("seq_len"),
            start: dim("past_len"),
            dtype: DType::I64,
        },
        &[],
    );
    let positions = g.add(Op::Cast { to: DType::F32 }, &[positions]);
    let positions = g.add(
        Op::Reshape {
            shape: vec![dim("seq_len"), Dim::Const(1)],
        },
        &[positions],
    );
    let inv_freq = g.input("inv_freq", f32t(&["64"]));
    let angles = g.add(Op::Binary(BinaryOp::Mul), &[positions, inv_freq]);
    let angles = g.add(Op::Concat { axis: 1 }, &[angles, angles]);
    let angles = g.add(
        Op::Reshape {
            shape: vec![Dim::Const(1), dim("seq_len"), Dim::Const(128)],
        },
        &[angles],
    );
    let (cos, sin) = (
        g.add(Op::Unary(UnaryOp::Cos), &[angles]),
        g.add(Op::Unary(UnaryOp::Sin), &[angles]),
    );
    out.extend(at(
        g.chain(&[("cos", cos), ("sin", sin)]),
        &[
            &[("seq_len", 7), ("past_len", 0)],
            &[("seq_len", 1), ("past_len", 129)],
        ],
    ));

    // The vision rope table: 2-D positions from grid_thw, each axis times 18 frequencies.
    let mut g = ChainGraph(Graph::new("vision_rope_table"));
    let grid = g.input("grid_thw", i64t(&["n_entries", "3"]));
    let merge = g.input("merge_sizes", i64t(&["n_entries"]));
    let ids = g.add(
        Op::VisionPositionIds {
            len: dim("4*n_merged"),
        },
        &[grid, merge],
    );
    let freq = g.input("freq", f32t(&["18"]));
    let mut axes = Vec::new();
    for axis in 0..2 {
        let col = g.add(
            Op::Slice {
                axis: 1,
                start: Dim::Const(axis),
                end: Dim::Const(axis + 1),
            },
            &[ids],
        );
        let col = g.add(
            Op::Reshape {
                shape: vec![dim("4*n_merged")],
            },
            &[col],
        );
        let col = g.add(Op::Cast { to: DType::F32 }, &[col]);
        let col = g.add(
            Op::Reshape {
                shape: vec![dim("4*n_merged"), Dim::Const(1)],
            },
            &[col],
        );
        axes.push(g.add(Op::Binary(BinaryOp::Mul), &[col, freq]));
    }
    let angles = g.add(
        Op::Concat { axis: 1 },
        &[axes[0], axes[1], axes[0], axes[1]],
    );
    let angles = g.add(
        Op::Reshape {
            shape: vec![dim("4*n_merged"), Dim::Const(1), Dim::Const(72)],
        },
        &[angles],
    );
    let cos = g.add(Op::Unary(UnaryOp::Cos), &[angles]);
    let cos = g.add(
        Op::Transpose {
            perm: vec![1, 0, 2],
        },
        &[cos],
    );
    let sin = g.add(Op::Unary(UnaryOp::Sin), &[angles]);
    let sin = g.add(
        Op::Transpose {
            perm: vec![1, 0, 2],
        },
        &[sin],
    );
    out.extend(at(
        g.chain(&[("cos", cos), ("sin", sin)]),
        &[
            &[("n_entries", 2), ("n_merged", 9)],
            &[("n_entries", 3), ("n_merged", 33)],
            &[("n_entries", 4), ("n_merged", 1024)],
        ],
    ));

    // The embedding: token ids gathered from a bf16 table, widened to f32.
    let mut g = ChainGraph(Graph::new("embed"));
    let table = g.input("embed_tokens", ty(DType::BF16, &["1000", "1536"]));
    let ids = g.input("input_ids", i64t(&["1", "seq_len"]));
    let ids = g.add(
        Op::Reshape {
            shape: vec![dim("seq_len")],
        },
        &[ids],
    );
    let rows = g.add(Op::Gather { axis: 0 }, &[table, ids]);
    let rows = g.add(Op::Cast { to: DType::F32 }, &[rows]);
    out.extend(at(g.chain(&[("out", rows)]), &[&[("seq_len", 7)]]));

    // Inverse frequencies: θ^(-2i/d), and the unary ops that need positive operands.
    let mut g = ChainGraph(Graph::new("inv_freq"));
    let i = g.add(
        Op::Iota {
            len: Dim::Const(64),
            start: Dim::Const(0),
            dtype: DType::I64,
        },
        &[],
    );
    let i = g.add(Op::Cast { to: DType::F32 }, &[i]);
    let two = g.constant(2.0);
    let d = g.constant(128.0);
    let theta = g.constant(1e6);
    let e = g.add(Op::Binary(BinaryOp::Mul), &[i, two]);
    let e = g.add(Op::Binary(BinaryOp::Div), &[e, d]);
    let p = g.add(Op::Binary(BinaryOp::Pow), &[theta, e]);
    let p = g.add(Op::Unary(UnaryOp::Recip), &[p]);
    out.extend(at(g.chain(&[("out", p)]), &[&[]]));

    let mut g = ChainGraph(Graph::new("positive"));
    let x = g.input("x", f32t(&["seq_len", "128"]));
    let x = g.add(Op::Unary(UnaryOp::Abs), &[x]);
    let half = g.constant(0.5);
    let x = g.add(Op::Binary(BinaryOp::Add), &[x, half]);
    let (log, sqrt, rsqrt) = (
        g.add(Op::Unary(UnaryOp::Log), &[x]),
        g.add(Op::Unary(UnaryOp::Sqrt), &[x]),
        g.add(Op::Unary(UnaryOp::Rsqrt), &[x]),
    );
    let y = g.input("y", f32t(&["128"]));
    let pow = g.add(Op::Binary(BinaryOp::Pow), &[x, y]);
    out.extend(at(
        g.chain(&[("log", log), ("sqrt", sqrt), ("rsqrt", rsqrt), ("pow", pow)]),
        &[&[("seq_len", 7)]],
    ));

    // pow's special cases: negative bases with integral and fractional exponents, zero bases.
    let mut g = ChainGraph(Graph::new("pow_signs"));
    let x = g.input("x", i64t(&["seq_len", "8"]));
    let x = g.add(Op::Cast { to: DType::F32 }, &[x]);
    let scale = g.constant(0.1);
    let x = g.add(Op::Binary(BinaryOp::Mul), &[x, scale]);
    let e = g.input("e", i64t(&["8"]));
    let ten = g.add(
        Op::Constant {
            value: Scalar::Int(10),
            dtype: DType::I64,
        },
        &[],
    );
    let e = g.add(Op::Binary(BinaryOp::Div), &[e, ten]);
    let e = g.add(Op::Cast { to: DType::F32 }, &[e]);
    let pow = g.add(Op::Binary(BinaryOp::Pow), &[x, e]);
    out.extend(at(g.chain(&[("out", pow)]), &[&[("seq_len", 7)]]));

    // Float→int casts saturate (and the kernel never makes the undefined C++ conversion).
    let mut g = ChainGraph(Graph::new("saturating_casts"));
    let x = g.input("x", i64t(&["seq_len", "4"]));
    let x = g.add(Op::Cast { to: DType::F32 }, &[x]);
    let big = g.constant(1e18);
    let x = g.add(Op::Binary(BinaryOp::Mul), &[x, big]);
    let (wide, narrow) = (
        g.add(Op::Cast { to: DType::I64 }, &[x]),
        g.add(Op::Cast { to: DType::I32 }, &[x]),
    );
    out.extend(at(
        g.chain(&[("wide", wide), ("narrow", narrow)]),
        &[&[("seq_len", 7)]],
    ));

    // max/min propagate NaN (log of the negative inputs), seen through `v == v`.
    let mut g = ChainGraph(Graph::new("nan_propagation"));
    let x = g.input("x", f32t(&["seq_len", "64"]));
    let y = g.input("y", f32t(&["64"]));
    let log = g.add(Op::Unary(UnaryOp::Log), &[x]);
    let (max, min) = (
        g.add(Op::Binary(BinaryOp::Max), &[log, y]),
        g.add(Op::Binary(BinaryOp::Min), &[y, log]),
    );
    let (max_ok, min_ok) = (
        g.add(Op::Binary(BinaryOp::Eq), &[max, max]),
        g.add(Op::Binary(BinaryOp::Eq), &[min, min]),
    );
    let both = g.add(Op::Binary(BinaryOp::And), &[max_ok, min_ok]);
    out.extend(at(g.chain(&[("out", both)]), &[&[("seq_len", 7)]]));
    out
}

pub(crate) fn cases() -> Vec<Case> {
    let mut out = layout_cases();
    out.extend(index_cases());
    out.extend(elementwise_cases());
    out.extend(reduce_cases());
    out.extend(chain_cases());
    out
}
