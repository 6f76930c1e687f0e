//! The cuBLASLt call descriptor: `describe` on row-major graph nodes, then `emulate` of the
//! column-major call against a plain row-major loop; planted layout mistakes must fail.

use vl3c_cuda::emu::DeviceBuffer;
use vl3c_cuda::gemm::{
    describe, describe_with, emulate, CallError, ComputeType, DataType, EmulateError, Epilogue,
    Extent, GemmCall, Inputs, Transpose, WeightLayout,
};
use vl3c_cuda::kir::Ty;
use vl3c_cuda::templates::Sizes;
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// `out[tokens, n] = x[tokens, k] · w[k, n] (+ bias) (+ residual)`, tokens = `4*n_merged` as in
/// the vision graphs.
fn fused_node(dtype: DType, k: i64, n: i64, bias: bool, residual: bool) -> (Graph, NodeId) {
    let mut g = Graph::new("gemm");
    let tokens = g.declare_symbol("n_merged", 1, 1024) * 4i64;
    let input = |g: &mut Graph, name: &str, shape: Vec<Dim>| {
        g.add_source(
            Op::Input { name: name.into() },
            TensorType::new(dtype, shape),
        )
        .unwrap()
    };
    let x = input(&mut g, "x", vec![tokens.clone(), k.into()]);
    let w = input(&mut g, "w", vec![k.into(), n.into()]);
    let mut operands = vec![x, w];
    if bias {
        operands.push(input(&mut g, "bias", vec![n.into()]));
    }
    if residual {
        operands.push(input(&mut g, "residual", vec![tokens, n.into()]));
    }
    let op = if bias || residual {
        Op::FusedMatMul { bias, residual }
    } else {
        Op::MatMul
    };
    let node = g.add(op, &operands).unwrap();
    (g, node)
}

/// Deterministic values in [-1, 1), exact in bf16.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
            half::bf16::from_f32(v).to_f32()
        })
        .collect()
}

fn dims(v: &[i64]) -> Vec<Dim> {
    v.iter().map(|&d| Dim::from(d)).collect()
}

fn sizes(n_merged: i64) -> Sizes {
    [("n_merged".to_string(), n_merged)].into_iter().collect()
}

struct Problem {
    tokens: usize,
    k: usize,
    n: usize,
    x: Vec<f32>,
    w_kn: Vec<f32>,
    bias: Vec<f32>,
    residual: Vec<f32>,
}

impl Problem {
    fn new(tokens: usize, k: usize, n: usize) -> Problem {
        Problem {
            tokens,
            k,
            n,
            x: values(tokens * k, 1),
            w_kn: values(k * n, 2),
            bias: values(n, 3),
            residual: values(tokens * n, 4),
        }
    }

    fn w_nk(&self) -> Vec<f32> {
        let mut t = vec![0f32; self.k * self.n];
        for l in 0..self.k {
            for j in 0..self.n {
                t[j * self.k + l] = self.w_kn[l * self.n + j];
            }
        }
        t
    }

    /// The row-major loop the descriptor must reproduce, f32 accumulation in k order.
    fn expected(&self, bias: bool, residual: bool, ty: Ty) -> Vec<f32> {
        let mut out = vec![0f32; self.tokens * self.n];
        for i in 0..self.tokens {
            for j in 0..self.n {
                let mut acc = 0f32;
                for l in 0..self.k {
                    acc += self.w_kn[l * self.n + j] * self.x[i * self.k + l];
                }
                if residual {
                    acc += self.residual[i * self.n + j];
                }
                if bias {
                    acc += self.bias[j];
                }
                out[i * self.n + j] = if ty == Ty::Bf16 {
                    half::bf16::from_f32(acc).to_f32()
                } else {
                    acc
                };
            }
        }
        out
    }

    fn run(
        &self,
        call: &GemmCall,
        layout: WeightLayout,
        ty: Ty,
        n_merged: i64,
    ) -> Result<Vec<f32>, EmulateError> {
        let w = match layout {
            WeightLayout::Nk => self.w_nk(),
            WeightLayout::Kn => self.w_kn.clone(),
        };
        let a = DeviceBuffer::from_f32(ty, &w);
        let b = DeviceBuffer::from_f32(ty, &self.x);
        let c = DeviceBuffer::from_f32(ty, &self.residual);
        let bias = DeviceBuffer::from_f32(ty, &self.bias);
        let mut d = DeviceBuffer::new(ty, self.tokens * self.n);
        emulate(
            call,
            &sizes(n_merged),
            &a,
            &b,
            Some(&c),
            Some(&bias),
            &mut d,
        )?;
        Ok(d.to_f32())
    }
}

fn check(dtype: DType, ty: Ty, layout: WeightLayout, bias: bool, residual: bool) {
    let (k, n, n_merged) = (40, 24, 3);
    let (g, node) = fused_node(dtype, k, n, bias, residual);
    let call = describe(&g, node, layout).unwrap();
    let p = Problem::new(4 * n_merged as usize, k as usize, n as usize);
    let got = p.run(&call, layout, ty, n_merged).unwrap();
    let want = p.expected(bias, residual, ty);
    let ulp = if ty == Ty::Bf16 { 1e-2 } else { 1e-5 };
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= ulp * w.abs().max(1.0),
            "{layout:?} bias={bias} residual={residual} [{i}]: {g} vs {w}"
        );
    }
}

/// An f32 node over a bf16 checkpoint's weight: A and B bf16 on the tensor cores (f32
/// accumulation), C, D and the bias f32. The values are bf16, so the products are exact and the
/// result is the f32 loop's.
#[test]
fn bf16_inputs_keep_c_d_and_bias_in_f32() {
    let (k, n, n_merged) = (40, 24, 3);
    let (g, node) = fused_node(DType::F32, k, n, true, true);
    let call = describe_with(&g, node, WeightLayout::Nk, Inputs::Bf16).unwrap();
    assert_eq!(
        (call.a.ty, call.b.ty, call.c.ty, call.d.ty),
        (DataType::Bf16, DataType::Bf16, DataType::F32, DataType::F32)
    );
    assert_eq!(call.compute, ComputeType::F32);
    assert_eq!(call.epilogue, Epilogue::Bias { ty: DataType::F32 });
    assert_eq!(
        describe(&g, node, WeightLayout::Nk).unwrap().compute,
        ComputeType::F32Pedantic,
        "f32 inputs: no TF32"
    );

    let p = Problem::new(4 * n_merged as usize, k as usize, n as usize);
    let a = DeviceBuffer::from_f32(Ty::Bf16, &p.w_nk());
    let b = DeviceBuffer::from_f32(Ty::Bf16, &p.x);
    let c = DeviceBuffer::from_f32(Ty::F32, &p.residual);
    let bias = DeviceBuffer::from_f32(Ty::F32, &p.bias);
    let mut d = DeviceBuffer::new(Ty::F32, p.tokens * p.n);
    emulate(
        &call,
        &sizes(n_merged),
        &a,
        &b,
        Some(&c),
        Some(&bias),
        &mut d,
    )
    .unwrap();
    let want = p.expected(true, true, Ty::F32);
    for (i, (got, w)) in d.to_f32().iter().zip(&want).enumerate() {
        assert!(
            (got - w).abs() <= 1e-5 * w.abs().max(1.0),
            "[{i}]: {got} vs {w}"
        );
    }
    // B must be the rounded copy: an f32 B is a type error, not a silent conversion.
    let f32_b = DeviceBuffer::from_f32(Ty::F32, &p.x);
    let e = emulate(
        &call,
        &sizes(n_merged),
        &a,
        &f32_b,
        Some(&c),
        Some(&bias),
        &mut d,
    )
    .unwrap_err();
    assert!(matches!(e, EmulateError::Type { operand: "B", .. }), "{e}");

    let (g, node) = fused_node(DType::BF16, k, n, false, false);
    let e = describe_with(&g, node, WeightLayout::Nk, Inputs::Bf16).unwrap_err();
    assert!(e.message.contains("bf16 inputs are for f32 nodes"), "{e}");
}

#[test]
fn describes_the_transposed_product_in_column_major() {
    let (g, node) = fused_node(DType::BF16, 1536, 2048, true, true);
    let call = describe(&g, node, WeightLayout::Nk).unwrap();
    assert_eq!((call.transa, call.transb), (Transpose::T, Transpose::N));
    assert_eq!(
        (call.m.clone(), call.k.clone()),
        (Extent::Const(2048), Extent::Const(1536))
    );
    assert_eq!(
        call.n.eval(&sizes(5)),
        Ok(20),
        "n is the token count, 4*n_merged"
    );
    assert_eq!(
        (call.a.ld.clone(), call.b.ld.clone(), call.d.ld.clone()),
        (
            Extent::Const(1536),
            Extent::Const(1536),
            Extent::Const(2048)
        )
    );
    assert_eq!(
        call.a.rows,
        Extent::Const(1536),
        "the [N, K] weight is column-major K×N"
    );
    assert_eq!(
        call.b.cols, call.n,
        "the activations are column-major K×tokens"
    );
    assert_eq!(
        (call.alpha, call.beta),
        (1.0, 1.0),
        "the residual is C with beta = 1"
    );
    assert_eq!(call.epilogue, Epilogue::Bias { ty: DataType::Bf16 });
    assert_eq!(call.compute, ComputeType::F32);
    assert_eq!(
        (
            call.operands.a,
            call.operands.b,
            call.operands.bias,
            call.operands.c
        ),
        (1, 0, Some(2), Some(3))
    );
    let r = call.resolve(&sizes(5)).unwrap();
    assert_eq!((r.m, r.n, r.k), (2048, 20, 1536));

    let (g, node) = fused_node(DType::F32, 64, 128, false, false);
    let call = describe(&g, node, WeightLayout::Kn).unwrap();
    assert_eq!(
        call.compute,
        ComputeType::F32Pedantic,
        "f32 checkpoints get no TF32"
    );
    assert_eq!(
        (call.transa, call.a.ld.clone(), call.beta, call.epilogue),
        (Transpose::N, Extent::Const(128), 0.0, Epilogue::Default)
    );
}

#[test]
fn round_trips_through_json() {
    let (g, node) = fused_node(DType::BF16, 1536, 256, true, false);
    let call = describe(&g, node, WeightLayout::Nk).unwrap();
    let text = serde_json::to_string(&call).unwrap();
    assert_eq!(serde_json::from_str::<GemmCall>(&text).unwrap(), call);
}

#[test]
fn emulated_call_matches_the_row_major_loop() {
    for layout in [WeightLayout::Nk, WeightLayout::Kn] {
        for (bias, residual) in [(false, false), (true, false), (false, true), (true, true)] {
            check(DType::F32, Ty::F32, layout, bias, residual);
            check(DType::BF16, Ty::Bf16, layout, bias, residual);
        }
    }
}

#[test]
fn planted_wrong_leading_dimension_is_caught() {
    let (k, n, n_merged) = (40, 24, 3);
    let (g, node) = fused_node(DType::F32, k, n, true, true);
    let good = describe(&g, node, WeightLayout::Nk).unwrap();
    let p = Problem::new(4 * n_merged as usize, k as usize, n as usize);

    // lda = N where the [N, K] weight needs K: reaches past the weight.
    let mut call = good.clone();
    call.a.ld = Extent::Const(n + k);
    assert!(matches!(
        p.run(&call, WeightLayout::Nk, Ty::F32, n_merged),
        Err(EmulateError::OutOfBounds { operand: "A", .. })
    ));
    // ldb smaller than the stored rows: cuBLASLt's own invalid-value check.
    let mut call = good.clone();
    call.b.ld = Extent::Const(k - 1);
    assert!(matches!(
        p.run(&call, WeightLayout::Nk, Ty::F32, n_merged),
        Err(EmulateError::Call(_))
    ));
    // ldd too large for the output buffer.
    let mut call = good.clone();
    call.d.ld = Extent::Const(n + 1);
    call.c.ld = Extent::Const(n + 1);
    assert!(matches!(
        p.run(&call, WeightLayout::Nk, Ty::F32, n_merged),
        Err(EmulateError::OutOfBounds { .. })
    ));
    // The weight stored [K, N] but described as [N, K]: op(A) has the wrong shape.
    let mut call = good.clone();
    call.transa = Transpose::N;
    let e = p
        .run(&call, WeightLayout::Nk, Ty::F32, n_merged)
        .unwrap_err();
    assert!(
        matches!(&e, EmulateError::Call(CallError::Invalid(m)) if m == "op(A) is 40×24 but the product needs 24×40"),
        "{e}"
    );
    // A row-major reading of the activations (ldb = tokens, transposed) is out of shape too.
    let mut call = good;
    call.transb = Transpose::T;
    let e = p
        .run(&call, WeightLayout::Nk, Ty::F32, n_merged)
        .unwrap_err();
    assert!(
        matches!(&e, EmulateError::Call(CallError::Invalid(m)) if m == "op(B) is 12×40 but the product needs 40×12"),
        "{e}"
    );
}

#[test]
fn uninitialised_residual_is_caught() {
    let (g, node) = fused_node(DType::F32, 16, 8, false, true);
    let call = describe(&g, node, WeightLayout::Nk).unwrap();
    let p = Problem::new(4, 16, 8);
    let a = DeviceBuffer::from_f32(Ty::F32, &p.w_nk());
    let b = DeviceBuffer::from_f32(Ty::F32, &p.x);
    let c = DeviceBuffer::new(Ty::F32, 4 * 8);
    let mut d = DeviceBuffer::new(Ty::F32, 4 * 8);
    let got = emulate(&call, &sizes(1), &a, &b, Some(&c), None, &mut d);
    assert!(
        matches!(got, Err(EmulateError::Uninitialised { operand: "C", .. })),
        "{got:?}"
    );
}

#[test]
fn batched_matmul_is_a_strided_batch() {
    let mut g = Graph::new("batched");
    let f32_input = |g: &mut Graph, name: &str, shape: Vec<Dim>| {
        g.add_source(
            Op::Input { name: name.into() },
            TensorType::new(DType::F32, shape),
        )
        .unwrap()
    };
    let x = f32_input(&mut g, "x", dims(&[3, 5, 8]));
    let w = f32_input(&mut g, "w", dims(&[3, 8, 6]));
    let node = g.add(Op::MatMul, &[x, w]).unwrap();
    let call = describe(&g, node, WeightLayout::Kn).unwrap();
    assert_eq!(call.batch_count, Extent::Const(3));
    assert_eq!(
        (
            call.a.batch_stride.clone(),
            call.b.batch_stride.clone(),
            call.d.batch_stride.clone()
        ),
        (Extent::Const(48), Extent::Const(40), Extent::Const(30))
    );

    let (xs, ws) = (values(3 * 5 * 8, 7), values(3 * 8 * 6, 8));
    let a = DeviceBuffer::from_f32(Ty::F32, &ws);
    let b = DeviceBuffer::from_f32(Ty::F32, &xs);
    let mut d = DeviceBuffer::new(Ty::F32, 3 * 5 * 6);
    emulate(&call, &Sizes::new(), &a, &b, None, None, &mut d).unwrap();
    let got = d.to_f32();
    for bt in 0..3 {
        for i in 0..5 {
            for j in 0..6 {
                let mut acc = 0f32;
                for l in 0..8 {
                    acc += ws[bt * 48 + l * 6 + j] * xs[bt * 40 + i * 8 + l];
                }
                assert_eq!(got[bt * 30 + i * 6 + j], acc, "batch {bt} ({i}, {j})");
            }
        }
    }
}

#[test]
fn rejects_what_is_not_one_cublaslt_call() {
    let mut g = Graph::new("bad");
    let input = |g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>| {
        g.add_source(
            Op::Input { name: name.into() },
            TensorType::new(dtype, shape),
        )
        .unwrap()
    };
    let x = input(&mut g, "x", DType::F32, dims(&[4, 8]));
    let w = input(&mut g, "w", DType::F32, dims(&[8, 6]));
    let row = input(&mut g, "row", DType::F32, dims(&[1, 6]));
    let neg = g.add(Op::Unary(vl3c_ir::UnaryOp::Neg), &[x]).unwrap();
    let e = describe(&g, neg, WeightLayout::Nk).unwrap_err();
    assert!(
        e.node == neg.0 && e.message.ends_with("is not a matmul"),
        "{e}"
    );
    let fused = g
        .add(
            Op::FusedMatMul {
                bias: false,
                residual: true,
            },
            &[x, w, row],
        )
        .unwrap();
    let e = describe(&g, fused, WeightLayout::Nk).unwrap_err();
    assert!(
        e.message.starts_with("residual") && e.message.contains("is not the result's shape"),
        "a broadcast residual is not C: {e}"
    );
    let xi = input(&mut g, "xi", DType::I32, dims(&[4, 8]));
    let wi = input(&mut g, "wi", DType::I32, dims(&[8, 6]));
    let int = g.add(Op::MatMul, &[xi, wi]).unwrap();
    let e = describe(&g, int, WeightLayout::Nk).unwrap_err();
    assert!(
        e.message.starts_with("cuBLASLt calls are bf16 or f32, not"),
        "integer matmul: {e}"
    );
}

/// NMSE as test-kernels computes it: Σ(got − want)² / Σ want².
fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    err / norm
}

/// The 2B's q|k|v and o projections and a vision-sized f32 one, at 8 tokens (`4*n_merged`),
/// against the reference executor: describe + emulate must compute what the graph means, with
/// the weight stored [N, K] as the engine stores it (a square weight read transposed fails here).
#[test]
fn emulated_call_matches_the_reference_executor() {
    use std::collections::HashMap;
    use vl3c_reference::{execute_sized, Tensor};
    for (dtype, ty, k, n, bias, residual) in [
        (DType::BF16, Ty::Bf16, 1536, 2048, true, false),
        (DType::BF16, Ty::Bf16, 1536, 1536, false, true),
        (DType::F32, Ty::F32, 1152, 1152, true, true),
    ] {
        let (mut g, node) = fused_node(dtype, k, n, bias, residual);
        g.set_output("out", node);
        let n_merged = 2;
        let p = Problem::new(4 * n_merged as usize, k as usize, n as usize);
        let tokens = p.tokens;
        let (k, n) = (k as usize, n as usize);
        let mut inputs = HashMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::from_f32(dtype, vec![tokens, k], p.x.clone()),
        );
        inputs.insert(
            "w".to_string(),
            Tensor::from_f32(dtype, vec![k, n], p.w_kn.clone()),
        );
        inputs.insert(
            "bias".to_string(),
            Tensor::from_f32(dtype, vec![n], p.bias.clone()),
        );
        inputs.insert(
            "residual".to_string(),
            Tensor::from_f32(dtype, vec![tokens, n], p.residual.clone()),
        );
        let symbols: HashMap<String, i64> =
            [("n_merged".to_string(), n_merged)].into_iter().collect();
        let no_weights: HashMap<String, Tensor> = HashMap::new();
        let want = execute_sized(&g, &inputs, &no_weights, &HashMap::new(), &symbols)
            .unwrap()
            .outputs["out"]
            .as_f32()
            .into_owned();

        let call = describe(&g, node, WeightLayout::Nk).unwrap();
        let got = p.run(&call, WeightLayout::Nk, ty, n_merged).unwrap();
        let limit = if ty == Ty::Bf16 { 5e-4 } else { 1e-7 };
        let e = nmse(&got, &want);
        assert!(
            e <= limit,
            "{dtype} {k}×{n} bias={bias} residual={residual}: nmse {e:e}"
        );
    }
}
