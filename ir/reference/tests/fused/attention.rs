//! `Attention` against the frontend's chain: optional rope on q (and k), `repeat_kv` for GQA,
//! `matmul(q, kᵀ) · scale`, `select(allowed, s, -inf)`, softmax, `matmul(probs, v)`.

use super::*;

#[derive(Clone, Debug)]
struct AttnCase {
    hk: usize,
    group: usize,
    n: usize,
    past: usize,
    d: usize,
    mask: AttentionMask,
    /// 0: no rotation, 1: q only, 2: q and k.
    rope: u8,
    /// Tables `[1, n, d]` rather than `[n, d]`.
    table_rank3: bool,
    /// Where a new segment starts (Segments only).
    cuts: Vec<bool>,
    seed: u64,
}

impl AttnCase {
    fn t(&self) -> usize {
        self.n + self.past
    }
    fn hq(&self) -> usize {
        self.hk * self.group
    }
    fn table_shape(&self) -> Vec<usize> {
        if self.table_rank3 {
            vec![1, self.n, self.d]
        } else {
            vec![self.n, self.d]
        }
    }
    fn segments(&self) -> Tensor {
        let mut s = 0;
        let v = (0..self.n).map(|i| {
            s += (i > 0 && self.cuts[i]) as i64;
            s
        });
        Tensor::i64(vec![self.n], v.collect())
    }
}

fn attn_strategy(max_n: usize, max_past: usize) -> impl Strategy<Value = AttnCase> {
    let shape = (
        1usize..4,
        prop::sample::select(vec![1usize, 2, 4]),
        1..=max_n,
        0..=max_past,
        1usize..9,
    );
    let mode = (
        prop::sample::select(vec![
            AttentionMask::Full,
            AttentionMask::Causal,
            AttentionMask::Segments,
        ]),
        0u8..3,
        any::<bool>(),
        prop::collection::vec(prop::bool::weighted(0.25), max_n),
        any::<u64>(),
    );
    (shape, mode).prop_map(
        |((hk, group, n, past, half), (mask, rope, table_rank3, cuts, seed))| {
            // Key rotation and segment masks need as many keys as queries.
            let past = if rope == 2 || mask == AttentionMask::Segments {
                0
            } else {
                past
            };
            AttnCase {
                hk,
                group,
                n,
                past,
                d: 2 * half,
                mask,
                rope,
                table_rank3,
                cuts,
                seed,
            }
        },
    )
}

/// Query head j reads kv head j / group: `[hk, t, d]` → `[hk·group, t, d]`.
fn repeat_kv(g: &mut Graph, x: NodeId, c: &AttnCase) -> NodeId {
    if c.group == 1 {
        return x;
    }
    let (t, d) = (c.t(), c.d);
    let x = op(
        g,
        Op::Reshape {
            shape: dims(&[c.hk, 1, t, d]),
        },
        &[x],
    );
    let x = op(
        g,
        Op::Broadcast {
            shape: dims(&[c.hk, c.group, t, d]),
        },
        &[x],
    );
    op(
        g,
        Op::Reshape {
            shape: dims(&[c.hq(), t, d]),
        },
        &[x],
    )
}

fn allowed(g: &mut Graph, c: &AttnCase, seg: Option<NodeId>) -> Option<NodeId> {
    let (n, t) = (c.n as i64, c.t() as i64);
    match c.mask {
        AttentionMask::Full => None,
        AttentionMask::Causal => {
            let q = op(
                g,
                Op::Iota {
                    len: Dim::Const(n),
                    start: Dim::Const(c.past as i64),
                    dtype: DType::I64,
                },
                &[],
            );
            let q = op(
                g,
                Op::Reshape {
                    shape: vec![Dim::Const(n), Dim::Const(1)],
                },
                &[q],
            );
            let k = op(
                g,
                Op::Iota {
                    len: Dim::Const(t),
                    start: Dim::Const(0),
                    dtype: DType::I64,
                },
                &[],
            );
            let k = op(
                g,
                Op::Reshape {
                    shape: vec![Dim::Const(1), Dim::Const(t)],
                },
                &[k],
            );
            Some(bin(g, BinaryOp::Le, k, q))
        }
        AttentionMask::Segments => {
            let s = seg.expect("segments input");
            let col = op(
                g,
                Op::Reshape {
                    shape: vec![Dim::Const(n), Dim::Const(1)],
                },
                &[s],
            );
            let row = op(
                g,
                Op::Reshape {
                    shape: vec![Dim::Const(1), Dim::Const(n)],
                },
                &[s],
            );
            Some(bin(g, BinaryOp::Eq, col, row))
        }
    }
}

/// The primitive graph (`fused` false) or the single `attention` node.
fn attn_graph(c: &AttnCase, fused: bool) -> Graph {
    let mut g = Graph::new("attn");
    let (hq, hk, n, t, d) = (c.hq(), c.hk, c.n, c.t(), c.d);
    let mut q = input(&mut g, "q", DType::F32, &[hq, n, d]);
    let mut k = input(&mut g, "k", DType::F32, &[hk, t, d]);
    let mut v = input(&mut g, "v", DType::F32, &[hk, t, d]);
    let tables = (c.rope > 0).then(|| {
        let ts = c.table_shape();
        (
            input(&mut g, "cos", DType::F32, &ts),
            input(&mut g, "sin", DType::F32, &ts),
        )
    });
    let seg = (c.mask == AttentionMask::Segments).then(|| input(&mut g, "seg", DType::I64, &[n]));
    let scale = 1.0 / (d as f64).sqrt();
    let out = if fused {
        let mut ins = vec![q, k, v];
        ins.extend(tables.map(|(c, s)| [c, s]).into_iter().flatten());
        ins.extend(seg);
        let o = Op::Attention {
            scale,
            mask: c.mask,
            rope_q: c.rope > 0,
            rope_k: c.rope == 2,
        };
        op(&mut g, o, &ins)
    } else {
        if let Some((cos, sin)) = tables {
            q = apply_rope(&mut g, q, cos, sin);
            if c.rope == 2 {
                k = apply_rope(&mut g, k, cos, sin);
            }
        }
        k = repeat_kv(&mut g, k, c);
        v = repeat_kv(&mut g, v, c);
        let kt = op(
            &mut g,
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[k],
        );
        let scores = op(&mut g, Op::MatMul, &[q, kt]);
        let mut s = bin_scalar(&mut g, BinaryOp::Mul, scores, scale);
        if let Some(a) = allowed(&mut g, c, seg) {
            let neg_inf = scalar(&mut g, f64::NEG_INFINITY);
            s = op(&mut g, Op::Select, &[a, s, neg_inf]);
        }
        let probs = softmax(&mut g, s);
        op(&mut g, Op::MatMul, &[probs, v])
    };
    g.set_output("out", out);
    g
}

fn attn_inputs(c: &AttnCase) -> Vec<(&'static str, Tensor)> {
    let mut rng = Rng(c.seed);
    let (hq, hk, n, t, d) = (c.hq(), c.hk, c.n, c.t(), c.d);
    let mut ins = vec![
        ("q", rng.vec(&[hq, n, d])),
        ("k", rng.vec(&[hk, t, d])),
        ("v", rng.vec(&[hk, t, d])),
    ];
    if c.rope > 0 {
        // Real tables: cos/sin of one angle per element, so the rotation preserves norms.
        let angles = rng.vec(&c.table_shape()).to_f32_vec();
        let ts = c.table_shape();
        ins.push((
            "cos",
            Tensor::f32(ts.clone(), angles.iter().map(|a| (a * 3.0).cos()).collect()),
        ));
        ins.push((
            "sin",
            Tensor::f32(ts, angles.iter().map(|a| (a * 3.0).sin()).collect()),
        ));
    }
    if c.mask == AttentionMask::Segments {
        ins.push(("seg", c.segments()));
    }
    ins
}

fn attn_case(c: &AttnCase) -> Gap {
    let ins = attn_inputs(c);
    let (a, b) = both(&attn_graph(c, false), &attn_graph(c, true), &ins);
    assert_eq!(b.shape, vec![c.hq(), c.n, c.d]);
    agree(&a, &b)
}

#[test]
fn attention_matches_chain() {
    check("attention", 160, attn_strategy(12, 6), |c| attn_case(&c));
}

/// The cases the strategy may under-sample, spelled out: decode (n = 1) over a long cache,
/// prefill with past, each GQA ratio with key rotation, many segments.
#[test]
fn attention_named_cases() {
    let base = AttnCase {
        hk: 2,
        group: 1,
        n: 1,
        past: 0,
        d: 8,
        mask: AttentionMask::Causal,
        rope: 1,
        table_rank3: false,
        cuts: vec![false; 16],
        seed: 7,
    };
    let mut cases = vec![
        AttnCase {
            n: 1,
            past: 37,
            group: 4,
            ..base.clone()
        },
        AttnCase {
            n: 5,
            past: 9,
            group: 2,
            rope: 0,
            ..base.clone()
        },
        AttnCase {
            n: 16,
            mask: AttentionMask::Full,
            past: 3,
            ..base.clone()
        },
    ];
    for group in [1, 2, 4] {
        cases.push(AttnCase {
            n: 9,
            group,
            rope: 2,
            ..base.clone()
        });
        cases.push(AttnCase {
            n: 9,
            group,
            rope: 2,
            table_rank3: true,
            ..base.clone()
        });
    }
    let cuts = (0..16).map(|i| i % 3 == 0 || i == 7).collect();
    cases.push(AttnCase {
        n: 16,
        mask: AttentionMask::Segments,
        rope: 2,
        cuts,
        ..base.clone()
    });
    let mut worst = Gap::default();
    for c in &cases {
        worst.merge(attn_case(c));
    }
    eprintln!(
        "attention named cases: worst gap {} ulp, {:.2e} relative",
        worst.ulps, worst.rel
    );
}

/// A vision-encoder-sized call (1024 patches in 4 frames, 16 heads of 72, q and k rotated):
/// the fused op agrees with the chain and does not take longer.
#[test]
fn attention_at_image_scale() {
    let cuts = (0..1024).map(|i| i % 256 == 0).collect();
    let c = AttnCase {
        hk: 16,
        group: 1,
        n: 1024,
        past: 0,
        d: 72,
        mask: AttentionMask::Segments,
        rope: 2,
        table_rank3: false,
        cuts,
        seed: 3,
    };
    let ins = attn_inputs(&c);
    let (p, f) = (attn_graph(&c, false), attn_graph(&c, true));
    let t0 = Instant::now();
    let a = run(&p, &ins);
    let t1 = Instant::now();
    let b = run(&f, &ins);
    let t2 = Instant::now();
    let gap = agree(&a, &b);
    eprintln!(
        "attention 16×1024×72 segments: chain {:.0} ms, fused {:.0} ms; worst gap {} ulp, {:.2e} relative",
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        gap.ulps,
        gap.rel
    );
}
