//! Graph-building helpers that spell the model's building blocks in primitive ops.
//! They emit nothing fused: discovering fusion is the optimizer's job.

use vl3c_ir::{
    BinaryOp, DType, Dim, Graph, IrError, NodeId, Op, ReduceOp, Scalar, TensorType, UnaryOp,
};

pub type Result<T> = std::result::Result<T, IrError>;

/// Wraps a graph under construction; `weight_dtype` tells the stored dtype of each checkpoint
/// tensor, and every value is computed in `compute` (f32 for the reference path).
pub struct Builder<'a> {
    pub g: Graph,
    weight_dtype: &'a dyn Fn(&str) -> DType,
    pub compute: DType,
}

impl<'a> Builder<'a> {
    pub fn new(name: &str, weight_dtype: &'a dyn Fn(&str) -> DType) -> Self {
        Builder {
            g: Graph::new(name),
            weight_dtype,
            compute: DType::F32,
        }
    }

    pub fn finish(self) -> Graph {
        self.g
    }

    pub fn sym(&mut self, name: &str, min: i64, max: i64) -> Dim {
        self.g.declare_symbol(name, min, max)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Vec<Dim>) -> Result<NodeId> {
        self.g.add_source(
            Op::Input { name: name.into() },
            TensorType::new(dtype, shape),
        )
    }

    /// A checkpoint tensor as stored (no cast).
    pub fn raw_weight(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        let ty = TensorType::new(
            (self.weight_dtype)(name),
            shape.iter().map(|&d| Dim::from(d)).collect(),
        );
        self.g.add_source(Op::Weight { name: name.into() }, ty)
    }

    /// A checkpoint tensor in the compute dtype.
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        let w = self.raw_weight(name, shape)?;
        self.cast(w, self.compute)
    }

    pub fn cache_read(&mut self, name: &str, shape: Vec<Dim>) -> Result<NodeId> {
        self.g.add_source(
            Op::CacheRead { name: name.into() },
            TensorType::new(self.compute, shape),
        )
    }

    pub fn op(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        self.g.add(op, inputs)
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        if self.g.ty(x).dtype == to {
            return Ok(x);
        }
        self.op(Op::Cast { to }, &[x])
    }

    pub fn scalar(&mut self, v: f64) -> Result<NodeId> {
        self.op(
            Op::Constant {
                value: Scalar::Float(v),
                dtype: self.compute,
            },
            &[],
        )
    }

    pub fn int(&mut self, v: i64) -> Result<NodeId> {
        self.op(
            Op::Constant {
                value: Scalar::Int(v),
                dtype: DType::I64,
            },
            &[],
        )
    }

    pub fn unary(&mut self, u: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.op(Op::Unary(u), &[x])
    }

    pub fn binary(&mut self, b: BinaryOp, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.op(Op::Binary(b), &[x, y])
    }

    pub fn add(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, x, y)
    }

    pub fn mul(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, x, y)
    }

    pub fn mul_scalar(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let c = self.scalar(v)?;
        self.mul(x, c)
    }

    pub fn add_scalar(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let c = self.scalar(v)?;
        self.add(x, c)
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axis: usize) -> Result<NodeId> {
        self.op(
            Op::Reduce {
                op,
                axes: vec![axis],
                keep_dims: true,
            },
            &[x],
        )
    }

    pub fn reshape(&mut self, x: NodeId, shape: Vec<Dim>) -> Result<NodeId> {
        self.op(Op::Reshape { shape }, &[x])
    }

    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.op(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    pub fn matmul(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.op(Op::MatMul, &[x, y])
    }

    pub fn slice(&mut self, x: NodeId, axis: usize, start: i64, end: i64) -> Result<NodeId> {
        self.op(
            Op::Slice {
                axis,
                start: start.into(),
                end: end.into(),
            },
            &[x],
        )
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        self.op(Op::Concat { axis }, xs)
    }

    pub fn last_axis(&self, x: NodeId) -> usize {
        self.g.ty(x).rank() - 1
    }

    pub fn shape(&self, x: NodeId) -> Vec<Dim> {
        self.g.ty(x).shape.clone()
    }

    /// `x Wᵀ (+ b)` for a torch `Linear` with weight `[out, in]`.
    pub fn linear(
        &mut self,
        x: NodeId,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<NodeId> {
        let w = self.weight(&format!("{prefix}.weight"), &[out, inp])?;
        let wt = self.transpose(w, &[1, 0])?;
        let y = self.matmul(x, wt)?;
        if !bias {
            return Ok(y);
        }
        let b = self.weight(&format!("{prefix}.bias"), &[out])?;
        self.add(y, b)
    }

    /// torch `LayerNorm` over the last axis, with weight and bias.
    pub fn layer_norm(
        &mut self,
        x: NodeId,
        prefix: &str,
        width: usize,
        eps: f64,
    ) -> Result<NodeId> {
        let ax = self.last_axis(x);
        let mean = self.reduce(ReduceOp::Mean, x, ax)?;
        let centered = self.binary(BinaryOp::Sub, x, mean)?;
        let sq = self.mul(centered, centered)?;
        let var = self.reduce(ReduceOp::Mean, sq, ax)?;
        let var_eps = self.add_scalar(var, eps)?;
        let inv = self.unary(UnaryOp::Rsqrt, var_eps)?;
        let normed = self.mul(centered, inv)?;
        let w = self.weight(&format!("{prefix}.weight"), &[width])?;
        let b = self.weight(&format!("{prefix}.bias"), &[width])?;
        let scaled = self.mul(normed, w)?;
        self.add(scaled, b)
    }

    /// Qwen2 `RMSNorm`: `x · rsqrt(mean(x²) + eps) · weight`.
    pub fn rms_norm(&mut self, x: NodeId, name: &str, width: usize, eps: f64) -> Result<NodeId> {
        let ax = self.last_axis(x);
        let sq = self.mul(x, x)?;
        let ms = self.reduce(ReduceOp::Mean, sq, ax)?;
        let ms_eps = self.add_scalar(ms, eps)?;
        let inv = self.unary(UnaryOp::Rsqrt, ms_eps)?;
        let normed = self.mul(x, inv)?;
        let w = self.weight(name, &[width])?;
        self.mul(normed, w)
    }

    /// Numerically stable softmax over the last axis.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        let ax = self.last_axis(x);
        let max = self.reduce(ReduceOp::Max, x, ax)?;
        let shifted = self.binary(BinaryOp::Sub, x, max)?;
        let e = self.unary(UnaryOp::Exp, shifted)?;
        let sum = self.reduce(ReduceOp::Sum, e, ax)?;
        self.binary(BinaryOp::Div, e, sum)
    }

    /// `gelu_pytorch_tanh`: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    pub fn gelu_tanh(&mut self, x: NodeId) -> Result<NodeId> {
        let x2 = self.mul(x, x)?;
        let x3 = self.mul(x2, x)?;
        let cubic = self.mul_scalar(x3, 0.044715)?;
        let inner = self.add(x, cubic)?;
        let scaled = self.mul_scalar(inner, (2.0 / std::f64::consts::PI).sqrt())?;
        let t = self.unary(UnaryOp::Tanh, scaled)?;
        let one_plus = self.add_scalar(t, 1.0)?;
        let half_x = self.mul_scalar(x, 0.5)?;
        self.mul(half_x, one_plus)
    }

    /// Exact `nn.GELU()`: `0.5·x·(1 + erf(x/√2))`.
    pub fn gelu_erf(&mut self, x: NodeId) -> Result<NodeId> {
        let scaled = self.mul_scalar(x, std::f64::consts::FRAC_1_SQRT_2)?;
        let e = self.unary(UnaryOp::Erf, scaled)?;
        let one_plus = self.add_scalar(e, 1.0)?;
        let half_x = self.mul_scalar(x, 0.5)?;
        self.mul(half_x, one_plus)
    }

    /// `silu(x) = x / (1 + exp(-x))`.
    pub fn silu(&mut self, x: NodeId) -> Result<NodeId> {
        let neg = self.unary(UnaryOp::Neg, x)?;
        let e = self.unary(UnaryOp::Exp, neg)?;
        let den = self.add_scalar(e, 1.0)?;
        self.binary(BinaryOp::Div, x, den)
    }

    /// `1 / theta^(2k/dim)` for k < dim/2, as transformers computes its RoPE `inv_freq` in f32.
    pub fn rope_inv_freq(&mut self, dim: usize, theta: f64) -> Result<NodeId> {
        let k = self.op(
            Op::Iota {
                len: Dim::from(dim / 2),
                start: Dim::Const(0),
                dtype: DType::I64,
            },
            &[],
        )?;
        let kf = self.cast(k, self.compute)?;
        let even = self.mul_scalar(kf, 2.0)?;
        let dim_c = self.scalar(dim as f64)?;
        let exponent = self.binary(BinaryOp::Div, even, dim_c)?;
        let base = self.scalar(theta)?;
        let pow = self.binary(BinaryOp::Pow, base, exponent)?;
        self.unary(UnaryOp::Recip, pow)
    }

    /// `positions [n]` (integer) times `inv_freq [f]` → angles `[n, f]` in f32.
    pub fn rope_angles(&mut self, positions: NodeId, inv_freq: NodeId) -> Result<NodeId> {
        let n = self.shape(positions)[0].clone();
        let p = self.cast(positions, self.compute)?;
        let col = self.reshape(p, vec![n, Dim::Const(1)])?;
        self.mul(col, inv_freq)
    }

    /// `x·cos + rotate_half(x)·sin` on the last axis (NeoX pairing of i and i + d/2).
    pub fn apply_rope(&mut self, x: NodeId, cos: NodeId, sin: NodeId) -> Result<NodeId> {
        let ax = self.last_axis(x);
        let Some(d) = self.shape(x)[ax].as_const() else {
            return Err(IrError {
                node: None,
                op: "rope".into(),
                message: format!("head dim {} is not a constant", self.shape(x)[ax]),
            });
        };
        let lo = self.slice(x, ax, 0, d / 2)?;
        let hi = self.slice(x, ax, d / 2, d)?;
        let neg_hi = self.unary(UnaryOp::Neg, hi)?;
        let rotated = self.concat(&[neg_hi, lo], ax)?;
        let a = self.mul(x, cos)?;
        let b = self.mul(rotated, sin)?;
        self.add(a, b)
    }

    /// Attention of `q [h, n, d]` over `k, v [h, t, d]` with a bool `allowed [n, t]` mask.
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        allowed: NodeId,
        head_dim: usize,
    ) -> Result<NodeId> {
        let kt = self.transpose(k, &[0, 2, 1])?;
        let scores = self.matmul(q, kt)?;
        let scaled = self.mul_scalar(scores, 1.0 / (head_dim as f64).sqrt())?;
        let neg_inf = self.scalar(f64::NEG_INFINITY)?;
        let masked = self.op(Op::Select, &[allowed, scaled, neg_inf])?;
        let probs = self.softmax(masked)?;
        self.matmul(probs, v)
    }
}
