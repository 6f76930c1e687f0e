//! Soundness: each rule (with the rules it builds on) rewrites a random-shaped primitive graph,
//! the optimized graph must contain the fused form, and the reference executor must give the
//! same outputs before and after on random data (f32, 1e-5 relative, 1e-6 absolute).

use proptest::prelude::*;
use std::collections::HashMap;
use vl3c_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar, TensorType, UnaryOp};
use vl3c_passes::{convert, cost, extract, lang::ENode, rules};
use vl3c_runtime::exec::{execute, Tensor, TensorData};

type Cost = fn(&ENode, &TensorType, &[&TensorType]) -> Option<f64>;

/// Saturates with the named rules and extracts (a `prefer` cost overrides the roofline).
fn rewrite(g: &Graph, names: &[&str], prefer: Option<Cost>) -> Graph {
    let (egraph, roots, _) = convert::to_egraph(g);
    let runner = egg::Runner::<ENode, _, ()>::new(vl3c_passes::analysis::TensorAnalysis)
        .with_egraph(egraph)
        .with_iter_limit(20)
        .run(&rules::named(names));
    let eg = runner.egraph;
    let roots = convert::Roots {
        outputs: roots
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), eg.find(*id)))
            .collect(),
        effects: roots.effects.iter().map(|id| eg.find(*id)).collect(),
    };
    let c = move |n: &ENode, out: &TensorType, ins: &[&TensorType], wo: bool| {
        prefer
            .and_then(|p| p(n, out, ins))
            .unwrap_or_else(|| cost::op_cost(&cost::Target::CPU, n.op(), out, ins, wo))
    };
    let choice = extract::extract(&eg, roots.all(), &c).unwrap();
    convert::from_egraph(g, &eg, &choice, &roots).unwrap()
}

struct G {
    g: Graph,
    feeds: HashMap<String, Tensor>,
    weights: HashMap<String, Tensor>,
    seed: u64,
}

impl G {
    fn new(seed: u64) -> G {
        G {
            g: Graph::new("t"),
            feeds: HashMap::new(),
            weights: HashMap::new(),
            seed,
        }
    }
    fn data(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self
                    .seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }
    fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        let v = self.data(shape.iter().product());
        self.feeds.insert(
            name.into(),
            Tensor {
                shape: shape.to_vec(),
                data: TensorData::from_f32(DType::F32, v),
            },
        );
        self.g
            .add_source(
                Op::Input { name: name.into() },
                TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)).collect()),
            )
            .unwrap()
    }
    fn weight(&mut self, name: &str, shape: &[usize]) -> NodeId {
        let v = self.data(shape.iter().product());
        self.weights.insert(
            name.into(),
            Tensor {
                shape: shape.to_vec(),
                data: TensorData::from_f32(DType::F32, v),
            },
        );
        self.g
            .add_source(
                Op::Weight { name: name.into() },
                TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)).collect()),
            )
            .unwrap()
    }
    fn op(&mut self, op: Op, ins: &[NodeId]) -> NodeId {
        self.g.add(op, ins).unwrap_or_else(|e| panic!("{e}"))
    }
    fn bin(&mut self, b: BinaryOp, x: NodeId, y: NodeId) -> NodeId {
        self.op(Op::Binary(b), &[x, y])
    }
    fn un(&mut self, u: UnaryOp, x: NodeId) -> NodeId {
        self.op(Op::Unary(u), &[x])
    }
    fn c(&mut self, v: f64) -> NodeId {
        self.op(
            Op::Constant {
                value: Scalar::Float(v),
                dtype: DType::F32,
            },
            &[],
        )
    }
    fn bin_c(&mut self, b: BinaryOp, x: NodeId, v: f64) -> NodeId {
        let c = self.c(v);
        self.bin(b, x, c)
    }
    fn red(&mut self, r: ReduceOp, x: NodeId) -> NodeId {
        let ax = self.g.ty(x).rank() - 1;
        self.op(
            Op::Reduce {
                op: r,
                axes: vec![ax],
                keep_dims: true,
            },
            &[x],
        )
    }
    fn softmax(&mut self, x: NodeId) -> NodeId {
        let m = self.red(ReduceOp::Max, x);
        let s = self.bin(BinaryOp::Sub, x, m);
        let e = self.un(UnaryOp::Exp, s);
        let sum = self.red(ReduceOp::Sum, e);
        self.bin(BinaryOp::Div, e, sum)
    }
    fn silu(&mut self, x: NodeId) -> NodeId {
        let n = self.un(UnaryOp::Neg, x);
        let e = self.un(UnaryOp::Exp, n);
        let d = self.bin_c(BinaryOp::Add, e, 1.0);
        self.bin(BinaryOp::Div, x, d)
    }
    fn rope(&mut self, x: NodeId, cos: NodeId, sin: NodeId) -> NodeId {
        let ax = self.g.ty(x).rank() - 1;
        let d = self.g.ty(x).shape[ax].as_const().unwrap();
        let lo = self.op(
            Op::Slice {
                axis: ax,
                start: Dim::Const(0),
                end: Dim::Const(d / 2),
            },
            &[x],
        );
        let hi = self.op(
            Op::Slice {
                axis: ax,
                start: Dim::Const(d / 2),
                end: Dim::Const(d),
            },
            &[x],
        );
        let nh = self.un(UnaryOp::Neg, hi);
        let r = self.op(Op::Concat { axis: ax }, &[nh, lo]);
        let a = self.bin(BinaryOp::Mul, x, cos);
        let b = self.bin(BinaryOp::Mul, r, sin);
        self.bin(BinaryOp::Add, a, b)
    }
    fn transpose(&mut self, x: NodeId, perm: &[usize]) -> NodeId {
        self.op(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }
    fn attention(&mut self, q: NodeId, k: NodeId, v: NodeId, allowed: NodeId, d: usize) -> NodeId {
        let kt = self.transpose(k, &[0, 2, 1]);
        let s = self.op(Op::MatMul, &[q, kt]);
        let s = self.bin_c(BinaryOp::Mul, s, 1.0 / (d as f64).sqrt());
        let inf = self.c(f64::NEG_INFINITY);
        let m = self.op(Op::Select, &[allowed, s, inf]);
        let p = self.softmax(m);
        self.op(Op::MatMul, &[p, v])
    }

    /// Rewrites with `names`, checks that `expect` ops appear and `gone` ops vanished, and
    /// compares every output.
    fn check(
        mut self,
        out: NodeId,
        names: &[&str],
        prefer: Option<Cost>,
        expect: &[&str],
        gone: &[&str],
    ) {
        self.g.set_output("y", out);
        let opt = rewrite(&self.g, names, prefer);
        let counts = opt.op_counts();
        for e in expect {
            assert!(
                counts.contains_key(e),
                "{names:?}: no {e} in {counts:?}\n{opt}"
            );
        }
        for e in gone {
            assert!(
                !counts.contains_key(e),
                "{names:?}: {e} left in {counts:?}\n{opt}"
            );
        }
        let run = |g: &Graph| {
            execute(g, &self.feeds, &self.weights, &HashMap::new())
                .unwrap_or_else(|e| panic!("{e}\n{g}"))
                .outputs
                .remove("y")
                .unwrap()
        };
        let (a, b) = (run(&self.g), run(&opt));
        assert_eq!(a.shape, b.shape);
        for (i, (x, y)) in a.as_f32().iter().zip(b.as_f32().iter()).enumerate() {
            let tol = 1e-6 + 1e-5 * x.abs().max(y.abs());
            assert!(
                (x - y).abs() <= tol || (x.is_nan() && y.is_nan()),
                "{names:?}: element {i}: {x} vs {y}"
            );
        }
    }
}

fn dim() -> impl Strategy<Value = usize> {
    1usize..6
}
fn even() -> impl Strategy<Value = usize> {
    (1usize..5).prop_map(|d| 2 * d)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn softmax(a in dim(), b in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b]);
        let y = t.softmax(x);
        t.check(y, &["softmax"], None, &["softmax"], &["reduce_max"]);
    }

    #[test]
    fn layer_norm(a in dim(), b in 2usize..9, seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b]);
        let (w, bias) = (t.weight("w", &[b]), t.weight("b", &[b]));
        let mean = t.red(ReduceOp::Mean, x);
        let c = t.bin(BinaryOp::Sub, x, mean);
        let sq = t.bin(BinaryOp::Mul, c, c);
        let var = t.red(ReduceOp::Mean, sq);
        let ve = t.bin_c(BinaryOp::Add, var, 1e-6);
        let inv = t.un(UnaryOp::Rsqrt, ve);
        let n = t.bin(BinaryOp::Mul, c, inv);
        let s = t.bin(BinaryOp::Mul, n, w);
        let y = t.bin(BinaryOp::Add, s, bias);
        t.check(y, &["layer-norm"], None, &["layer_norm"], &["rsqrt"]);
    }

    #[test]
    fn rms_norm(a in dim(), b in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b]);
        let w = t.weight("w", &[b]);
        let sq = t.bin(BinaryOp::Mul, x, x);
        let ms = t.red(ReduceOp::Mean, sq);
        let me = t.bin_c(BinaryOp::Add, ms, 1e-6);
        let inv = t.un(UnaryOp::Rsqrt, me);
        let n = t.bin(BinaryOp::Mul, x, inv);
        let y = t.bin(BinaryOp::Mul, n, w);
        t.check(y, &["rms-norm"], None, &["rms_norm"], &["rsqrt"]);
    }

    #[test]
    fn gelu_tanh(a in dim(), b in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b]);
        let x2 = t.bin(BinaryOp::Mul, x, x);
        let x3 = t.bin(BinaryOp::Mul, x2, x);
        let cu = t.bin_c(BinaryOp::Mul, x3, 0.044715);
        let inner = t.bin(BinaryOp::Add, x, cu);
        let sc = t.bin_c(BinaryOp::Mul, inner, (2.0 / std::f64::consts::PI).sqrt());
        let th = t.un(UnaryOp::Tanh, sc);
        let op = t.bin_c(BinaryOp::Add, th, 1.0);
        let hx = t.bin_c(BinaryOp::Mul, x, 0.5);
        let y = t.bin(BinaryOp::Mul, hx, op);
        t.check(y, &["gelu-tanh"], None, &["gelu_tanh"], &["tanh"]);
    }

    #[test]
    fn gelu_erf(a in dim(), b in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b]);
        let s = t.bin_c(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2);
        let e = t.un(UnaryOp::Erf, s);
        let op = t.bin_c(BinaryOp::Add, e, 1.0);
        let hx = t.bin_c(BinaryOp::Mul, x, 0.5);
        let y = t.bin(BinaryOp::Mul, hx, op);
        t.check(y, &["gelu-erf"], None, &["gelu_erf"], &["erf"]);
    }

    #[test]
    fn silu_and_swiglu(a in dim(), b in dim(), seed: u64) {
        let mut t = G::new(seed);
        let (g, u) = (t.input("g", &[a, b]), t.input("u", &[a, b]));
        let s = t.silu(g);
        let y = t.bin(BinaryOp::Mul, s, u);
        t.check(y, &["silu", "swiglu"], None, &["swiglu"], &["exp", "silu"]);
    }

    #[test]
    fn rope(n in dim(), h in dim(), d in even(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[n, h, d]);
        let (c, s) = (t.input("cos", &[n, 1, d]), t.input("sin", &[n, 1, d]));
        let y = t.rope(x, c, s);
        t.check(y, &["rope"], None, &["rope"], &["concat", "neg"]);
    }

    #[test]
    fn transpose_rope(n in 2usize..6, h in 6usize..9, d in even(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[n, h, d]);
        let (c, s) = (t.input("cos", &[n, 1, d]), t.input("sin", &[n, 1, d]));
        let r = t.rope(x, c, s);
        let y = t.transpose(r, &[1, 0, 2]);
        // Prefer the rope that reads the transposed x (its first dim is h).
        let prefer: Cost = |n, _, ins| matches!(n.op(), Op::Rope).then(|| if ins[0].shape[0].as_const() >= Some(6) { 1e-12 } else { 1.0 });
        t.check(y, &["rope", "transpose-rope"], Some(prefer), &["rope"], &[]);
    }

    #[test]
    fn matmul_epilogues(m in dim(), k in dim(), n in 2usize..6, seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[m, k]);
        let r = t.input("r", &[m, n]);
        let w = t.weight("w", &[k, n]);
        let b = t.weight("b", &[n]);
        let y = t.op(Op::MatMul, &[x, w]);
        let y = t.bin(BinaryOp::Add, y, b);
        let y = t.bin(BinaryOp::Add, r, y);
        t.check(y, &["matmul-bias", "matmul-residual", "matmul-residual-rhs", "matmul-bias-residual"], None, &["fused_matmul"], &["add", "matmul"]);
    }

    #[test]
    fn matmul_residual(m in dim(), k in dim(), n in 2usize..6, seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[m, k]);
        let r = t.input("r", &[m, n]);
        let w = t.weight("w", &[k, n]);
        let y = t.op(Op::MatMul, &[x, w]);
        let y = t.bin(BinaryOp::Add, y, r);
        t.check(y, &["matmul-residual-rhs"], None, &["fused_matmul"], &["add"]);
    }

    #[test]
    fn spatial_merge(n in dim(), f in dim(), merge in 2usize..4, seed: u64) {
        let mut t = G::new(seed);
        let g = merge * merge;
        let x = t.input("x", &[g * n, f]);
        let grouped = t.op(Op::Reshape { shape: vec![n.into(), g.into(), f.into()] }, &[x]);
        let y = t.op(Op::Reduce { op: ReduceOp::Mean, axes: vec![1], keep_dims: false }, &[grouped]);
        t.check(y, &["spatial-merge"], None, &["spatial_merge"], &["reduce_mean"]);
    }

    #[test]
    fn matmul_merge(m in dim(), k in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[m, k]);
        let (w1, w2, w3) = (t.weight("w1", &[k, 3]), t.weight("w2", &[k, 5]), t.weight("w3", &[k, 7]));
        let ys: Vec<NodeId> = [w1, w2, w3].iter().map(|w| t.op(Op::MatMul, &[x, *w])).collect();
        let a = t.op(Op::Concat { axis: 1 }, &ys);
        // Tree cost counts a shared matmul once per use; prefer the one against all 15 columns.
        let prefer: Cost = |n, _, ins| matches!(n.op(), Op::MatMul).then(|| if ins[1].shape[1] == Dim::from(15usize) { 1e-12 } else { 1.0 });
        t.check(a, &["matmul-merge"], Some(prefer), &["slice", "concat"], &[]);
    }

    #[test]
    fn matmul_merge_bias(m in dim(), k in dim(), three: bool, fused in prop::collection::vec(any::<bool>(), 3), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[m, k]);
        let widths: &[usize] = if three { &[3, 5, 7] } else { &[3, 5] };
        // Each chain is either already bias-fused or `add(matmul, bias)` left to matmul-bias.
        let ys: Vec<NodeId> = widths.iter().zip(&fused).enumerate().map(|(i, (&n, &f))| {
            let (w, b) = (t.weight(&format!("w{i}"), &[k, n]), t.weight(&format!("b{i}"), &[n]));
            if f {
                t.op(Op::FusedMatMul { bias: true, residual: false }, &[x, w, b])
            } else {
                let y = t.op(Op::MatMul, &[x, w]);
                t.bin(BinaryOp::Add, y, b)
            }
        }).collect();
        let a = t.op(Op::Concat { axis: 1 }, &ys);
        // No `prefer` needed: DAG extraction with the per-op dispatch cost picks the merged
        // matmul itself; a `slice` can only come from a merge, so the merge is what ran.
        t.check(a, &["matmul-bias", "matmul-merge-bias"], None, &["fused_matmul", "slice"], &["add", "matmul"]);
    }

    #[test]
    fn transpose_and_reshape_cancel(a in dim(), b in dim(), c in dim(), seed: u64) {
        let mut t = G::new(seed);
        let x = t.input("x", &[a, b, c]);
        let y = t.transpose(x, &[1, 2, 0]);
        let y = t.transpose(y, &[2, 0, 1]);
        let y = t.op(Op::Reshape { shape: vec![Dim::from(a * b), Dim::from(c)] }, &[y]);
        let y = t.op(Op::Reshape { shape: vec![Dim::from(a), Dim::from(b), Dim::from(c)] }, &[y]);
        let z = t.transpose(y, &[0, 2, 1]);
        let z = t.transpose(z, &[1, 0, 2]);
        t.check(z, &["transpose-identity", "transpose-transpose", "reshape-identity", "reshape-reshape"], None, &["transpose"], &["reshape"]);
    }

    #[test]
    fn encoder_attention(h in dim(), d in even(), segs in prop::collection::vec(1usize..4, 1..4), seed: u64) {
        let n: usize = segs.iter().sum();
        let mut t = G::new(seed);
        let (q, k, v) = (t.input("q", &[n, h, d]), t.input("k", &[n, h, d]), t.input("v", &[n, h, d]));
        let (c, s) = (t.input("cos", &[n, 1, d]), t.input("sin", &[n, 1, d]));
        let ids: Vec<i64> = segs.iter().enumerate().flat_map(|(i, len)| std::iter::repeat_n(i as i64, *len)).collect();
        t.feeds.insert("seg".into(), Tensor { shape: vec![n], data: TensorData::I64(ids) });
        let seg = t.g.add_source(Op::Input { name: "seg".into() }, TensorType::new(DType::I64, vec![Dim::from(n)])).unwrap();
        let col = t.op(Op::Reshape { shape: vec![Dim::from(n), Dim::from(1usize)] }, &[seg]);
        let row = t.op(Op::Reshape { shape: vec![Dim::from(1usize), Dim::from(n)] }, &[seg]);
        let allowed = t.bin(BinaryOp::Eq, col, row);
        let (qr, kr) = (t.rope(q, c, s), t.rope(k, c, s));
        let [q, k, v] = [qr, kr, v].map(|x| t.transpose(x, &[1, 0, 2]));
        let y = t.attention(q, k, v, allowed, d);
        let all: Vec<&str> = rules::all().iter().map(|r| r.name.as_str()).collect::<Vec<_>>().leak().to_vec();
        t.check(y, &all, None, &["attention"], &["softmax", "rope", "exp"]);
    }

    #[test]
    fn decoder_attention(kv in 1usize..3, g in 1usize..4, s in dim(), past in 0usize..4, d in even(), seed: u64) {
        let (hq, total) = (kv * g, past + s);
        let mut t = G::new(seed);
        let q = t.input("q", &[hq, s, d]);
        let (kn, vn) = (t.input("k", &[kv, s, d]), t.input("v", &[kv, s, d]));
        let (pk, pv) = (t.input("pk", &[kv, past, d]), t.input("pv", &[kv, past, d]));
        let (c, sn) = (t.input("cos", &[1, s, d]), t.input("sin", &[1, s, d]));
        let (q, kn) = (t.rope(q, c, sn), t.rope(kn, c, sn));
        let k = t.op(Op::Concat { axis: 1 }, &[pk, kn]);
        let v = t.op(Op::Concat { axis: 1 }, &[pv, vn]);
        let [k, v] = [k, v].map(|x| if g == 1 { x } else {
            let r = t.op(Op::Reshape { shape: [kv, 1, total, d].map(Dim::from).to_vec() }, &[x]);
            let b = t.op(Op::Broadcast { shape: [kv, g, total, d].map(Dim::from).to_vec() }, &[r]);
            t.op(Op::Reshape { shape: [hq, total, d].map(Dim::from).to_vec() }, &[b])
        });
        let qi = t.op(Op::Iota { len: Dim::from(s), start: Dim::from(past), dtype: DType::I64 }, &[]);
        let qi = t.op(Op::Reshape { shape: vec![Dim::from(s), Dim::from(1usize)] }, &[qi]);
        let ki = t.op(Op::Iota { len: Dim::from(total), start: Dim::from(0usize), dtype: DType::I64 }, &[]);
        let ki = t.op(Op::Reshape { shape: vec![Dim::from(1usize), Dim::from(total)] }, &[ki]);
        let allowed = t.bin(BinaryOp::Le, ki, qi);
        let y = t.attention(q, k, v, allowed, d);
        let all: Vec<&str> = rules::all().iter().map(|r| r.name.as_str()).collect::<Vec<_>>().leak().to_vec();
        t.check(y, &all, None, &["attention"], &["softmax", "broadcast", "exp"]);
    }
}
