//! The fused ops the optimizer introduces. Each computes, element for element and in the same
//! order, what the primitive chain it replaces computes in f32 (see `Builder` in vl3c-frontends:
//! `softmax`, `layer_norm`, `rms_norm`, `gelu_tanh`, `gelu_erf`, `silu`, `apply_rope`, `linear`,
//! `attention`), so on f32 graphs a fused op agrees with its chain bit for bit, or within an ulp
//! where gemm's blocking differs. Sums accumulate in f64 as `reduce` does. Reduced-precision
//! operands are widened to f32 and the result is rounded to the node's dtype once, at the end
//! (the chain would round every intermediate).
//!
//! Softmax rows that are entirely `-inf` (or hold a NaN) give NaN, as torch and the chain do:
//! `x - max` is then NaN.

use super::erf::erf;
use super::matmul::{gemm_f32, matmul, Layout};
use super::shape::{broadcast_shape, expand};
use super::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use std::borrow::Cow;
use vl3c_ir::{Activation, AttentionMask, DType};

/// Rows shorter than this run sequentially: rayon's split costs more than the work.
const PAR_MIN_ELEMS: usize = 1 << 14;

fn floats<'a>(x: &'a Tensor, what: &str) -> Result<Cow<'a, [f32]>, String> {
    if !x.dtype().is_float() {
        return Err(format!("{what} must be a float tensor, got {}", x.dtype()));
    }
    Ok(x.as_f32())
}

fn same_dtype(x: &Tensor, others: &[&Tensor]) -> Result<(), String> {
    match others.iter().find(|o| o.dtype() != x.dtype()) {
        Some(o) => Err(format!(
            "operand dtypes differ: {} and {}",
            x.dtype(),
            o.dtype()
        )),
        None => Ok(()),
    }
}

fn last_dim(x: &Tensor) -> Result<usize, String> {
    x.shape
        .last()
        .copied()
        .ok_or_else(|| "needs rank >= 1".to_string())
}

fn finish(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor {
        shape,
        data: TensorData::from_f32(dtype, v),
    }
}

/// Applies `f` to every row of `row` elements, in parallel when there is enough work.
fn rows_mut(v: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if row == 0 {
        return;
    }
    if v.len() >= PAR_MIN_ELEMS {
        v.par_chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        v.chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// `Σ v` in f64 from +0, in order, as `reduce` accumulates.
fn sum_f64(v: impl Iterator<Item = f32>) -> f64 {
    v.fold(0f64, |acc, x| acc + x as f64)
}

/// `(Σ v) / n` rounded to f32: `reduce_mean`.
fn mean(v: impl Iterator<Item = f32>, n: usize) -> f32 {
    (sum_f64(v) / n as f64) as f32
}

/// `rsqrt` as the executor's unary op computes it.
fn rsqrt(x: f32) -> f32 {
    (1.0 / (x as f64).sqrt()) as f32
}

/// In-place softmax of one row: reduce_max, sub, exp, reduce_sum, div.
fn softmax_row(r: &mut [f32]) {
    let max = r.iter().fold(f32::NEG_INFINITY, |a, &b| {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else {
            a.max(b)
        }
    });
    for x in r.iter_mut() {
        *x = ((*x - max) as f64).exp() as f32;
    }
    let sum = sum_f64(r.iter().copied()) as f32;
    for x in r.iter_mut() {
        *x /= sum;
    }
}

pub fn softmax(x: &Tensor) -> Result<Tensor, String> {
    let d = last_dim(x)?;
    let mut v = floats(x, "softmax input")?.into_owned();
    rows_mut(&mut v, d, |_, r| softmax_row(r));
    Ok(finish(x.dtype(), x.shape.clone(), v))
}

fn norm_param<'a>(p: &'a Tensor, d: usize, what: &str) -> Result<Cow<'a, [f32]>, String> {
    if p.shape != [d] {
        return Err(format!("{what} has shape {:?}, not [{d}]", p.shape));
    }
    floats(p, what)
}

/// `(x - mean)·rsqrt(mean((x - mean)²) + eps)·w + b` over the last axis.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor, String> {
    same_dtype(x, &[w, b])?;
    let d = last_dim(x)?;
    let (w, b) = (norm_param(w, d, "weight")?, norm_param(b, d, "bias")?);
    let eps = eps as f32;
    let mut v = floats(x, "layer_norm input")?.into_owned();
    rows_mut(&mut v, d, |_, r| {
        let m = mean(r.iter().copied(), d);
        for x in r.iter_mut() {
            *x -= m;
        }
        let var = mean(r.iter().map(|&c| c * c), d);
        let inv = rsqrt(var + eps);
        for (j, x) in r.iter_mut().enumerate() {
            *x = *x * inv * w[j] + b[j];
        }
    });
    Ok(finish(x.dtype(), x.shape.clone(), v))
}

/// `x·rsqrt(mean(x²) + eps)·w` over the last axis.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor, String> {
    same_dtype(x, &[w])?;
    let d = last_dim(x)?;
    let w = norm_param(w, d, "weight")?;
    let eps = eps as f32;
    let mut v = floats(x, "rms_norm input")?.into_owned();
    rows_mut(&mut v, d, |_, r| {
        let inv = rsqrt(mean(r.iter().map(|&x| x * x), d) + eps);
        for (j, x) in r.iter_mut().enumerate() {
            *x = *x * inv * w[j];
        }
    });
    Ok(finish(x.dtype(), x.shape.clone(), v))
}

fn silu(x: f32) -> f32 {
    x / (((-x) as f64).exp() as f32 + 1.0)
}

fn activation_fn(a: Activation) -> fn(f32) -> f32 {
    match a {
        Activation::GeluTanh => |x| {
            let cubic = x * x * x * 0.044715f64 as f32;
            let scaled = (x + cubic) * (2.0 / std::f64::consts::PI).sqrt() as f32;
            let t = (scaled as f64).tanh() as f32;
            x * 0.5 * (t + 1.0)
        },
        Activation::GeluErf => |x| {
            let e = erf((x * std::f64::consts::FRAC_1_SQRT_2 as f32) as f64) as f32;
            x * 0.5 * (e + 1.0)
        },
        Activation::Silu => silu,
    }
}

pub fn activation(a: Activation, x: &Tensor) -> Result<Tensor, String> {
    let f = activation_fn(a);
    let v = floats(x, "activation input")?;
    let out = if v.len() >= PAR_MIN_ELEMS {
        v.par_iter().map(|&x| f(x)).collect()
    } else {
        v.iter().map(|&x| f(x)).collect()
    };
    Ok(finish(x.dtype(), x.shape.clone(), out))
}

/// `silu(gate)·up`, broadcast.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor, String> {
    same_dtype(gate, &[up])?;
    let shape = broadcast_shape(&gate.shape, &up.shape)?;
    let (g, u) = (floats(gate, "gate")?, floats(up, "up")?);
    let (g, u) = (
        expand(&g, &gate.shape, &shape)?,
        expand(&u, &up.shape, &shape)?,
    );
    let out = g.iter().zip(u.iter()).map(|(&g, &u)| silu(g) * u).collect();
    Ok(finish(gate.dtype(), shape, out))
}

/// Rotates `x` (f32, `shape`) in place by tables broadcast into `shape`:
/// `x·cos + rotate_half(x)·sin`, with `rotate_half(x) = concat(-x[d/2..], x[..d/2])`.
fn rope_in_place(x: &mut [f32], shape: &[usize], cos: &Tensor, sin: &Tensor) -> Result<(), String> {
    let d = *shape.last().ok_or("rope needs rank >= 1")?;
    if d % 2 != 0 {
        return Err(format!("rope needs an even last dim, got {shape:?}"));
    }
    let mut tables = Vec::new();
    for (t, what) in [(cos, "cos"), (sin, "sin")] {
        if broadcast_shape(shape, &t.shape)? != shape {
            return Err(format!(
                "rope table {what} {:?} does not broadcast into {shape:?}",
                t.shape
            ));
        }
        let v = floats(t, what)?;
        tables.push(expand(&v, &t.shape, shape)?.into_owned());
    }
    let (c, s) = (&tables[0], &tables[1]);
    let h = d / 2;
    let mut rot = vec![0f32; d];
    for (r, row) in x.chunks_mut(d.max(1)).enumerate() {
        let (c, s) = (&c[r * d..(r + 1) * d], &s[r * d..(r + 1) * d]);
        for j in 0..d {
            rot[j] = if j < h { -row[j + h] } else { row[j - h] };
        }
        for j in 0..d {
            row[j] = row[j] * c[j] + rot[j] * s[j];
        }
    }
    Ok(())
}

pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, String> {
    same_dtype(x, &[cos, sin])?;
    let mut v = floats(x, "rope input")?.into_owned();
    rope_in_place(&mut v, &x.shape, cos, sin)?;
    Ok(finish(x.dtype(), x.shape.clone(), v))
}

/// Widens a reduced-precision float tensor to f32 (exact); f32 is borrowed.
fn as_f32_tensor(x: &Tensor) -> Cow<'_, Tensor> {
    match &x.data {
        TensorData::F32(_) => Cow::Borrowed(x),
        _ => Cow::Owned(Tensor {
            shape: x.shape.clone(),
            data: TensorData::F32(x.to_f32_vec()),
        }),
    }
}

/// `a × b (+ bias) (+ residual)`; `a_t`/`b_t` as in `matmul`. The product and each add are
/// rounded to f32 in turn, as the separate ops round them on f32 graphs.
pub fn fused_matmul(
    a: &Tensor,
    a_t: bool,
    b: &Tensor,
    b_t: bool,
    epilogue: &[&Tensor],
) -> Result<Tensor, String> {
    same_dtype(a, &[b])?;
    same_dtype(a, epilogue)?;
    let dtype = a.dtype();
    if !dtype.is_float() {
        return Err(format!("fused_matmul needs float operands, got {dtype}"));
    }
    let product = matmul(&as_f32_tensor(a), a_t, &as_f32_tensor(b), b_t)?;
    let TensorData::F32(mut v) = product.data else {
        unreachable!("f32 matmul of f32 operands")
    };
    for e in epilogue {
        let ev = e.as_f32();
        if broadcast_shape(&product.shape, &e.shape)? != product.shape {
            return Err(format!(
                "epilogue operand {:?} widens the product {:?}",
                e.shape, product.shape
            ));
        }
        let ev = expand(&ev, &e.shape, &product.shape)?;
        for (x, &y) in v.iter_mut().zip(ev.iter()) {
            *x += y;
        }
    }
    Ok(finish(dtype, product.shape, v))
}

/// `(x [m²·n, F])` → `[n, F]`: the f64 mean of each group of m² consecutive rows, as
/// `reduce_mean` over axis 1 of `[n, m², F]`.
pub fn spatial_merge(x: &Tensor, merge: usize) -> Result<Tensor, String> {
    let group = merge * merge;
    let [rows, f] = x.shape[..] else {
        return Err(format!("needs [rows, features], got {:?}", x.shape));
    };
    if group == 0 || rows % group != 0 {
        return Err(format!("{rows} rows do not split into groups of {group}"));
    }
    let v = floats(x, "spatial_merge input")?;
    let n = rows / group;
    let mut out = vec![0f32; n * f];
    for (g, o) in out.chunks_mut(f.max(1)).enumerate().take(n) {
        let block = &v[g * group * f..(g + 1) * group * f];
        for (c, o) in o.iter_mut().enumerate() {
            *o = mean((0..group).map(|r| block[r * f + c]), group);
        }
    }
    Ok(finish(x.dtype(), vec![n, f], out))
}

/// `(q, k, v, [cos, sin], [segments])` per `Op::Attention`. One head at a time: its scores
/// `[n, t]` come from one gemm, are scaled, masked to -inf and softmaxed row by row, and one more
/// gemm gives the head's output. Peak scratch is one head's scores.
pub fn attention(
    ops: &[&Tensor],
    scale: f64,
    mask: AttentionMask,
    rope_q: bool,
    rope_k: bool,
) -> Result<Tensor, String> {
    let (q, k, v) = (ops[0], ops[1], ops[2]);
    same_dtype(q, &[k, v])?;
    let (&[hq, n, d], &[hk, t, dk]) = (&q.shape[..], &k.shape[..]) else {
        return Err(format!(
            "q and k must be [heads, len, head_dim], got {:?} and {:?}",
            q.shape, k.shape
        ));
    };
    if v.shape != k.shape || dk != d {
        return Err(format!(
            "k {:?} and v {:?} must match each other and q's head_dim {d}",
            k.shape, v.shape
        ));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(format!("{hq} query heads cannot share {hk} kv heads"));
    }
    let group = hq / hk;
    let mut rest = 3;
    let mut qv = floats(q, "q")?;
    let mut kv = floats(k, "k")?;
    if rope_q || rope_k {
        let (cos, sin) = (ops[3], ops[4]);
        same_dtype(q, &[cos, sin])?;
        if rope_q {
            rope_in_place(qv.to_mut(), &q.shape, cos, sin)?;
        }
        if rope_k {
            if t != n {
                return Err(format!(
                    "key rotation needs as many keys ({t}) as queries ({n})"
                ));
            }
            rope_in_place(kv.to_mut(), &k.shape, cos, sin)?;
        }
        rest = 5;
    }
    let segments = if mask == AttentionMask::Segments {
        let seg = ops[rest];
        if seg.dtype() != DType::I64 || seg.shape != [n] || t != n {
            return Err(format!(
                "segments must be i64[{n}] with as many keys, got {}{:?}",
                seg.dtype(),
                seg.shape
            ));
        }
        seg.to_i64_vec()
    } else {
        Vec::new()
    };
    if mask == AttentionMask::Causal && t < n {
        return Err(format!(
            "causal attention of {n} queries over only {t} keys"
        ));
    }
    let vv = floats(v, "v")?;
    let scale = scale as f32;
    let past = t - n.min(t);
    let mut out = vec![0f32; hq * n * d];
    let mut scores = vec![0f32; n * t];
    for h in 0..hq {
        let kh = h / group;
        let qh = &qv[h * n * d..(h + 1) * n * d];
        let (kmat, vmat) = (
            &kv[kh * t * d..(kh + 1) * t * d],
            &vv[kh * t * d..(kh + 1) * t * d],
        );
        // scores = q_h · k_hᵀ, with k_h read through strides as the [d, t] transpose.
        gemm_f32(
            qh,
            Layout::new(n, d, false),
            kmat,
            Layout::new(d, t, true),
            &mut scores,
            n,
            d,
            t,
        );
        rows_mut(&mut scores, t, |i, row| {
            for (j, s) in row.iter_mut().enumerate() {
                let allowed = match mask {
                    AttentionMask::Full => true,
                    AttentionMask::Causal => j <= past + i,
                    AttentionMask::Segments => segments[i] == segments[j],
                };
                *s = if allowed {
                    *s * scale
                } else {
                    f32::NEG_INFINITY
                };
            }
            softmax_row(row);
        });
        let oh = &mut out[h * n * d..(h + 1) * n * d];
        gemm_f32(
            &scores,
            Layout::new(n, t, false),
            vmat,
            Layout::new(t, d, false),
            oh,
            n,
            t,
            d,
        );
    }
    Ok(finish(q.dtype(), vec![hq, n, d], out))
}
