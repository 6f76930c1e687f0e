//! Every fused op against the primitive chain it replaces (as the frontend's `Builder` spells
//! it), both run by the reference executor on random data and shapes. They must agree within
//! 1e-5 relative or 1e-6 absolute; each test prints the worst ulp and relative gap it saw.

use half::bf16;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;
use vl3c_ir::{
    Activation, AttentionMask, BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar,
    TensorType, UnaryOp,
};
use vl3c_reference::{execute, Tensor, TensorData};

// ---- graph building, mirroring frontends/src/lower/builder.rs ----

fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Const(d as i64)).collect()
}

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
    g.add_source(
        Op::Input { name: name.into() },
        TensorType::new(dtype, dims(shape)),
    )
    .unwrap()
}

fn op(g: &mut Graph, o: Op, ins: &[NodeId]) -> NodeId {
    g.add(o, ins).unwrap_or_else(|e| panic!("{e}"))
}

fn bin(g: &mut Graph, b: BinaryOp, x: NodeId, y: NodeId) -> NodeId {
    op(g, Op::Binary(b), &[x, y])
}

fn un(g: &mut Graph, u: UnaryOp, x: NodeId) -> NodeId {
    op(g, Op::Unary(u), &[x])
}

fn scalar(g: &mut Graph, v: f64) -> NodeId {
    op(
        g,
        Op::Constant {
            value: Scalar::Float(v),
            dtype: DType::F32,
        },
        &[],
    )
}

fn bin_scalar(g: &mut Graph, b: BinaryOp, x: NodeId, v: f64) -> NodeId {
    let c = scalar(g, v);
    bin(g, b, x, c)
}

fn reduce(g: &mut Graph, r: ReduceOp, x: NodeId) -> NodeId {
    let ax = g.ty(x).rank() - 1;
    op(
        g,
        Op::Reduce {
            op: r,
            axes: vec![ax],
            keep_dims: true,
        },
        &[x],
    )
}

fn softmax(g: &mut Graph, x: NodeId) -> NodeId {
    let max = reduce(g, ReduceOp::Max, x);
    let shifted = bin(g, BinaryOp::Sub, x, max);
    let e = un(g, UnaryOp::Exp, shifted);
    let sum = reduce(g, ReduceOp::Sum, e);
    bin(g, BinaryOp::Div, e, sum)
}

fn layer_norm(g: &mut Graph, x: NodeId, w: NodeId, b: NodeId, eps: f64) -> NodeId {
    let mean = reduce(g, ReduceOp::Mean, x);
    let centered = bin(g, BinaryOp::Sub, x, mean);
    let sq = bin(g, BinaryOp::Mul, centered, centered);
    let var = reduce(g, ReduceOp::Mean, sq);
    let var_eps = bin_scalar(g, BinaryOp::Add, var, eps);
    let inv = un(g, UnaryOp::Rsqrt, var_eps);
    let normed = bin(g, BinaryOp::Mul, centered, inv);
    let scaled = bin(g, BinaryOp::Mul, normed, w);
    bin(g, BinaryOp::Add, scaled, b)
}

fn rms_norm(g: &mut Graph, x: NodeId, w: NodeId, eps: f64) -> NodeId {
    let sq = bin(g, BinaryOp::Mul, x, x);
    let ms = reduce(g, ReduceOp::Mean, sq);
    let ms_eps = bin_scalar(g, BinaryOp::Add, ms, eps);
    let inv = un(g, UnaryOp::Rsqrt, ms_eps);
    let normed = bin(g, BinaryOp::Mul, x, inv);
    bin(g, BinaryOp::Mul, normed, w)
}

fn activation(g: &mut Graph, a: Activation, x: NodeId) -> NodeId {
    match a {
        Activation::GeluTanh => {
            let x2 = bin(g, BinaryOp::Mul, x, x);
            let x3 = bin(g, BinaryOp::Mul, x2, x);
            let cubic = bin_scalar(g, BinaryOp::Mul, x3, 0.044715);
            let inner = bin(g, BinaryOp::Add, x, cubic);
            let scaled = bin_scalar(g, BinaryOp::Mul, inner, (2.0 / std::f64::consts::PI).sqrt());
            let t = un(g, UnaryOp::Tanh, scaled);
            let one_plus = bin_scalar(g, BinaryOp::Add, t, 1.0);
            let half_x = bin_scalar(g, BinaryOp::Mul, x, 0.5);
            bin(g, BinaryOp::Mul, half_x, one_plus)
        }
        Activation::GeluErf => {
            let scaled = bin_scalar(g, BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2);
            let e = un(g, UnaryOp::Erf, scaled);
            let one_plus = bin_scalar(g, BinaryOp::Add, e, 1.0);
            let half_x = bin_scalar(g, BinaryOp::Mul, x, 0.5);
            bin(g, BinaryOp::Mul, half_x, one_plus)
        }
        Activation::Silu => {
            let neg = un(g, UnaryOp::Neg, x);
            let e = un(g, UnaryOp::Exp, neg);
            let den = bin_scalar(g, BinaryOp::Add, e, 1.0);
            bin(g, BinaryOp::Div, x, den)
        }
    }
}

fn apply_rope(g: &mut Graph, x: NodeId, cos: NodeId, sin: NodeId) -> NodeId {
    let ax = g.ty(x).rank() - 1;
    let d = g.ty(x).shape[ax].as_const().unwrap();
    let lo = op(
        g,
        Op::Slice {
            axis: ax,
            start: Dim::Const(0),
            end: Dim::Const(d / 2),
        },
        &[x],
    );
    let hi = op(
        g,
        Op::Slice {
            axis: ax,
            start: Dim::Const(d / 2),
            end: Dim::Const(d),
        },
        &[x],
    );
    let neg_hi = un(g, UnaryOp::Neg, hi);
    let rotated = op(g, Op::Concat { axis: ax }, &[neg_hi, lo]);
    let a = bin(g, BinaryOp::Mul, x, cos);
    let b = bin(g, BinaryOp::Mul, rotated, sin);
    bin(g, BinaryOp::Add, a, b)
}

// ---- data, running, comparing ----

/// Deterministic uniform data in [-2, 2) from a seed (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn vec(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(
            shape.to_vec(),
            (0..n).map(|_| self.unit() * 4.0 - 2.0).collect(),
        )
    }
}

fn run(g: &Graph, inputs: &[(&str, Tensor)]) -> Tensor {
    let inputs: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let mut out = execute(
        g,
        &inputs,
        &HashMap::<String, Tensor>::new(),
        &HashMap::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out.outputs.remove("out").expect("output `out`")
}

/// Runs the primitive graph and the fused graph on the same inputs.
fn both(prim: &Graph, fused: &Graph, inputs: &[(&str, Tensor)]) -> (Tensor, Tensor) {
    (run(prim, inputs), run(fused, inputs))
}

/// Worst gaps seen: ulps and relative difference.
#[derive(Clone, Copy, Debug, Default)]
struct Gap {
    ulps: u64,
    rel: f64,
}

impl Gap {
    fn merge(&mut self, o: Gap) {
        self.ulps = self.ulps.max(o.ulps);
        self.rel = self.rel.max(o.rel);
    }
}

fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let i = x.to_bits() as i32 as i64;
        if i < 0 {
            i64::from(i32::MIN) - i
        } else {
            i
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Asserts `fused` agrees with `prim` elementwise (NaN with NaN, equal infinities).
fn agree(prim: &Tensor, fused: &Tensor) -> Gap {
    assert_eq!(prim.shape, fused.shape, "shapes");
    assert_eq!(prim.dtype(), fused.dtype(), "dtypes");
    let (p, f) = (prim.to_f32_vec(), fused.to_f32_vec());
    let mut gap = Gap::default();
    for (i, (&a, &b)) in p.iter().zip(&f).enumerate() {
        if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
            assert!(
                a.is_nan() && b.is_nan() || a == b,
                "element {i}: primitive {a} vs fused {b}"
            );
            continue;
        }
        let diff = (a as f64 - b as f64).abs();
        let rel = diff / (a.abs().max(b.abs()) as f64).max(f64::MIN_POSITIVE);
        assert!(
            diff <= 1e-6 || rel <= 1e-5,
            "element {i}: primitive {a} vs fused {b} (rel {rel:e})"
        );
        gap.merge(Gap {
            ulps: if prim.dtype() == DType::F32 {
                ulps(a, b)
            } else {
                0
            },
            rel: if diff == 0.0 { 0.0 } else { rel },
        });
    }
    gap
}

/// Runs `case` on `cases` values of `strategy`, shrinking failures, and prints the worst gap.
fn check<S: Strategy>(name: &str, cases: u32, strategy: S, case: impl Fn(S::Value) -> Gap) {
    let worst = RefCell::new(Gap::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |v| {
            worst.borrow_mut().merge(case(v));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let w = worst.into_inner();
    eprintln!(
        "{name}: worst gap {} ulp, {:.2e} relative over {cases} cases",
        w.ulps, w.rel
    );
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 1..4)
}

// ---- the ops ----

#[test]
fn softmax_matches_chain() {
    check(
        "softmax",
        48,
        (shape_strategy(), any::<u64>(), 0u32..3),
        |(shape, seed, neg_inf)| {
            let mut rng = Rng(seed);
            let mut x = rng.vec(&shape);
            // Some masked entries (never a row's first), and with neg_inf == 2 one all -inf row: NaN.
            let d = *shape.last().unwrap();
            if let TensorData::F32(v) = &mut x.data {
                for (i, e) in v.iter_mut().enumerate() {
                    if neg_inf > 0 && i % d != 0 && rng.unit() < 0.3 || neg_inf == 2 && i < d {
                        *e = f32::NEG_INFINITY;
                    }
                }
            }
            let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
            let (xp, xf) = (
                input(&mut p, "x", DType::F32, &shape),
                input(&mut f, "x", DType::F32, &shape),
            );
            let y = softmax(&mut p, xp);
            p.set_output("out", y);
            let y = op(&mut f, Op::Softmax, &[xf]);
            f.set_output("out", y);
            let (a, b) = both(&p, &f, &[("x", x)]);
            agree(&a, &b)
        },
    );
}

fn norm_case(shape: &[usize], seed: u64, rms: bool, dtype: DType) -> Gap {
    let mut rng = Rng(seed);
    let d = *shape.last().unwrap();
    let eps = if rms { 1e-6 } else { 1e-5 };
    let data = [rng.vec(shape), rng.vec(&[d]), rng.vec(&[d])];
    let data = data.map(|t| Tensor::from_f32(dtype, t.shape.clone(), t.to_f32_vec()));
    // The chain runs in f32 on the same (rounded) values; the fused op in `dtype`.
    let mut p = Graph::new("p");
    let xp = input(&mut p, "x", DType::F32, shape);
    let wp = input(&mut p, "w", DType::F32, &[d]);
    let bp = input(&mut p, "b", DType::F32, &[d]);
    let y = if rms {
        rms_norm(&mut p, xp, wp, eps)
    } else {
        layer_norm(&mut p, xp, wp, bp, eps)
    };
    let y = op(&mut p, Op::Cast { to: dtype }, &[y]);
    p.set_output("out", y);
    let mut f = Graph::new("f");
    let xf = input(&mut f, "x", dtype, shape);
    let wf = input(&mut f, "w", dtype, &[d]);
    let bf = input(&mut f, "b", dtype, &[d]);
    let y = if rms {
        op(&mut f, Op::RmsNorm { eps }, &[xf, wf])
    } else {
        op(&mut f, Op::LayerNorm { eps }, &[xf, wf, bf])
    };
    f.set_output("out", y);
    let f32s = |t: &Tensor| Tensor::f32(t.shape.clone(), t.to_f32_vec());
    let a = run(
        &p,
        &[
            ("x", f32s(&data[0])),
            ("w", f32s(&data[1])),
            ("b", f32s(&data[2])),
        ],
    );
    let b = run(
        &f,
        &[
            ("x", data[0].clone()),
            ("w", data[1].clone()),
            ("b", data[2].clone()),
        ],
    );
    if dtype != DType::F32 {
        // One rounding of the same f32 value: bit-identical.
        assert_eq!(a, b, "{dtype} norm differs from the f32 chain rounded once");
    }
    agree(&a, &b)
}

#[test]
fn layer_norm_matches_chain() {
    check(
        "layer_norm",
        48,
        (shape_strategy(), any::<u64>()),
        |(s, seed)| norm_case(&s, seed, false, DType::F32),
    );
}

#[test]
fn rms_norm_matches_chain() {
    check(
        "rms_norm",
        48,
        (shape_strategy(), any::<u64>()),
        |(s, seed)| norm_case(&s, seed, true, DType::F32),
    );
}

#[test]
fn bf16_norms_round_the_f32_chain_once() {
    check(
        "layer_norm bf16",
        24,
        (shape_strategy(), any::<u64>()),
        |(s, seed)| norm_case(&s, seed, false, DType::BF16),
    );
    check(
        "rms_norm bf16",
        24,
        (shape_strategy(), any::<u64>()),
        |(s, seed)| norm_case(&s, seed, true, DType::BF16),
    );
    let x = Tensor::bf16(vec![2], vec![bf16::from_f32(1.0), bf16::from_f32(3.0)]);
    let mut f = Graph::new("f");
    let xf = input(&mut f, "x", DType::BF16, &[2]);
    let y = op(&mut f, Op::Softmax, &[xf]);
    f.set_output("out", y);
    let out = run(&f, &[("x", x)]);
    assert_eq!(out.dtype(), DType::BF16);
    let v = out.to_f32_vec();
    assert!(
        (v[0] - 0.1192).abs() < 4e-3 && (v[1] - 0.8808).abs() < 4e-3,
        "{v:?}"
    );
}

#[test]
fn activations_match_chain() {
    for a in [Activation::GeluTanh, Activation::GeluErf, Activation::Silu] {
        check(
            a.mnemonic(),
            32,
            (shape_strategy(), any::<u64>()),
            |(shape, seed)| {
                let x = Rng(seed)
                    .vec(&shape)
                    .to_f32_vec()
                    .into_iter()
                    .map(|v| v * 3.0)
                    .collect();
                let x = Tensor::f32(shape.clone(), x);
                let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
                let xp = input(&mut p, "x", DType::F32, &shape);
                let y = activation(&mut p, a, xp);
                p.set_output("out", y);
                let xf = input(&mut f, "x", DType::F32, &shape);
                let y = op(&mut f, Op::Activation(a), &[xf]);
                f.set_output("out", y);
                let (pa, fa) = both(&p, &f, &[("x", x)]);
                agree(&pa, &fa)
            },
        );
    }
}

/// `shape` with some dims set to 1 and some leading dims dropped: a shape that broadcasts into it.
fn broadcastable(shape: &[usize], bits: u32) -> Vec<usize> {
    let drop = (bits as usize) % shape.len();
    shape[drop..]
        .iter()
        .enumerate()
        .map(|(i, &d)| if bits >> (i + 4) & 1 == 1 { 1 } else { d })
        .collect()
}

#[test]
fn swiglu_matches_chain() {
    check(
        "swiglu",
        48,
        (shape_strategy(), any::<u64>(), any::<u32>(), any::<bool>()),
        |(shape, seed, bits, flip)| {
            let small = broadcastable(&shape, bits);
            let (gs, us) = if flip { (small, shape) } else { (shape, small) };
            let mut rng = Rng(seed);
            let (gate, up) = (rng.vec(&gs), rng.vec(&us));
            let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
            let (gp, upp) = (
                input(&mut p, "g", DType::F32, &gs),
                input(&mut p, "u", DType::F32, &us),
            );
            let act = activation(&mut p, Activation::Silu, gp);
            let y = bin(&mut p, BinaryOp::Mul, act, upp);
            p.set_output("out", y);
            let (gf, uf) = (
                input(&mut f, "g", DType::F32, &gs),
                input(&mut f, "u", DType::F32, &us),
            );
            let y = op(&mut f, Op::SwiGlu, &[gf, uf]);
            f.set_output("out", y);
            let (a, b) = both(&p, &f, &[("g", gate), ("u", up)]);
            agree(&a, &b)
        },
    );
}

#[test]
fn rope_matches_chain() {
    let strategy = (
        prop::collection::vec(1usize..5, 0..3),
        1usize..5,
        any::<u64>(),
        any::<u32>(),
    );
    check("rope", 48, strategy, |(mut shape, half, seed, bits)| {
        shape.push(2 * half);
        let mut ts = broadcastable(&shape, bits);
        *ts.last_mut().unwrap() = 2 * half; // the tables always span the rotated dim
        let mut rng = Rng(seed);
        let (x, cos, sin) = (rng.vec(&shape), rng.vec(&ts), rng.vec(&ts));
        let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
        let ins = |g: &mut Graph| {
            [
                input(g, "x", DType::F32, &shape),
                input(g, "cos", DType::F32, &ts),
                input(g, "sin", DType::F32, &ts),
            ]
        };
        let [xp, cp, sp] = ins(&mut p);
        let y = apply_rope(&mut p, xp, cp, sp);
        p.set_output("out", y);
        let fi = ins(&mut f);
        let y = op(&mut f, Op::Rope, &fi);
        f.set_output("out", y);
        let (a, b) = both(&p, &f, &[("x", x), ("cos", cos), ("sin", sin)]);
        agree(&a, &b)
    });
}

#[derive(Clone, Debug)]
struct MatMulCase {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// `b` is the transpose of a `[n, k]` tensor (a linear layer's weight).
    b_t: bool,
    /// `a` is the transpose of a `[.., k, m]` tensor.
    a_t: bool,
    bias: bool,
    residual: bool,
    seed: u64,
}

fn matmul_case(c: &MatMulCase, dtype: DType) -> Gap {
    let mut rng = Rng(c.seed);
    let mut a_shape = c.batch.clone();
    a_shape.extend(if c.a_t { [c.k, c.m] } else { [c.m, c.k] });
    let b_shape = if c.b_t {
        vec![c.n, c.k]
    } else {
        vec![c.k, c.n]
    };
    let mut out_shape = c.batch.clone();
    out_shape.extend([c.m, c.n]);
    let round = |t: Tensor| Tensor::from_f32(dtype, t.shape.clone(), t.to_f32_vec());
    let data = [
        rng.vec(&a_shape),
        rng.vec(&b_shape),
        rng.vec(&[c.n]),
        rng.vec(&out_shape),
    ]
    .map(round);
    let build = |g: &mut Graph, dtype: DType, fused: bool| {
        let mut a = input(g, "a", dtype, &a_shape);
        let mut b = input(g, "b", dtype, &b_shape);
        if c.a_t {
            let r = a_shape.len();
            let perm: Vec<usize> = (0..r - 2).chain([r - 1, r - 2]).collect();
            a = op(g, Op::Transpose { perm }, &[a]);
        }
        if c.b_t {
            b = op(g, Op::Transpose { perm: vec![1, 0] }, &[b]);
        }
        let bias = c.bias.then(|| input(g, "bias", dtype, &[c.n]));
        let residual = c.residual.then(|| input(g, "res", dtype, &out_shape));
        let y = if fused {
            let ins: Vec<NodeId> = [a, b].into_iter().chain(bias).chain(residual).collect();
            op(
                g,
                Op::FusedMatMul {
                    bias: c.bias,
                    residual: c.residual,
                },
                &ins,
            )
        } else {
            let y = op(g, Op::MatMul, &[a, b]);
            let y = bias.map_or(y, |bb| bin(g, BinaryOp::Add, y, bb));
            let y = residual.map_or(y, |r| bin(g, BinaryOp::Add, y, r));
            op(g, Op::Cast { to: DType::F32 }, &[y])
        };
        g.set_output("out", y);
    };
    let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
    build(&mut p, DType::F32, false);
    build(&mut f, dtype, true);
    let names = ["a", "b", "bias", "res"];
    let f32s: Vec<(&str, Tensor)> = names
        .iter()
        .zip(&data)
        .map(|(n, t)| (*n, Tensor::f32(t.shape.clone(), t.to_f32_vec())))
        .collect();
    let a = run(&p, &f32s);
    let b = run(
        &f,
        &names
            .iter()
            .zip(&data)
            .map(|(n, t)| (*n, t.clone()))
            .collect::<Vec<_>>(),
    );
    if dtype != DType::F32 {
        let rounded = Tensor::from_f32(dtype, a.shape.clone(), a.to_f32_vec());
        assert_eq!(
            rounded, b,
            "{dtype} fused matmul differs from the f32 chain rounded once"
        );
        return agree(&rounded, &b);
    }
    agree(&a, &b)
}

fn matmul_strategy() -> impl Strategy<Value = MatMulCase> {
    let dims = (
        prop::collection::vec(1usize..4, 0..3),
        1usize..9,
        1usize..9,
        1usize..9,
    );
    let flags = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    );
    (dims, flags).prop_map(
        |((batch, m, k, n), (b_t, a_t, bias, residual, seed))| MatMulCase {
            batch,
            m,
            k,
            n,
            b_t,
            a_t,
            bias,
            residual,
            seed,
        },
    )
}

#[test]
fn fused_matmul_matches_chain() {
    check("fused_matmul", 64, matmul_strategy(), |c| {
        matmul_case(&c, DType::F32)
    });
    check("fused_matmul bf16", 24, matmul_strategy(), |c| {
        matmul_case(&c, DType::BF16)
    });
}

#[test]
fn spatial_merge_matches_reshape_and_mean() {
    check(
        "spatial_merge",
        32,
        (1usize..4, 1usize..6, 1usize..7, any::<u64>()),
        |(m, n, feat, seed)| {
            let x = Rng(seed).vec(&[m * m * n, feat]);
            let (mut p, mut f) = (Graph::new("p"), Graph::new("f"));
            let xp = input(&mut p, "x", DType::F32, &[m * m * n, feat]);
            let r = op(
                &mut p,
                Op::Reshape {
                    shape: dims(&[n, m * m, feat]),
                },
                &[xp],
            );
            let y = op(
                &mut p,
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: vec![1],
                    keep_dims: false,
                },
                &[r],
            );
            p.set_output("out", y);
            let xf = input(&mut f, "x", DType::F32, &[m * m * n, feat]);
            let y = op(&mut f, Op::SpatialMerge { merge: m }, &[xf]);
            f.set_output("out", y);
            let (a, b) = both(&p, &f, &[("x", x)]);
            agree(&a, &b)
        },
    );
}

/// Attention, in its own file for length.
#[path = "fused/attention.rs"]
mod attention;
