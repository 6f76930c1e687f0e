//! Reductions. Float sums and means accumulate in f64 so the f32 result is within an ulp or two
//! of the exact value, tighter than torch's own f32 pairwise sums.

use super::shape::{for_each_offset, strides};
use super::tensor::{Tensor, TensorData};
use vl3c_ir::ReduceOp;

pub fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], keep_dims: bool) -> Result<Tensor, String> {
    let rank = x.shape.len();
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank || axes[..i].contains(&a) {
            return Err(format!("bad reduction axes {axes:?} for rank {rank}"));
        }
    }
    // Each input element adds into the output slot given by its kept coordinates: walking the
    // input with the output's strides (0 on reduced axes) yields that slot.
    let kept: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let kept_strides = strides(&kept);
    let walk: Vec<usize> = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                0
            } else {
                kept_strides[i]
            }
        })
        .collect();
    let n_out: usize = kept.iter().product();
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let shape: Vec<usize> = if keep_dims {
        kept
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape[i])
            .collect()
    };
    if op == ReduceOp::Max && count == 0 && n_out > 0 {
        return Err("max over an empty dimension".into());
    }
    let data = match &x.data {
        TensorData::Bool(_) => return Err(format!("{op} is not defined on bool")),
        TensorData::I32(_) | TensorData::I64(_) => {
            let v = x.to_i64_vec();
            let mut acc = vec![if op == ReduceOp::Max { i64::MIN } else { 0 }; n_out];
            let mut i = 0;
            for_each_offset(&x.shape, &walk, |o| {
                acc[o] = match op {
                    ReduceOp::Max => acc[o].max(v[i]),
                    _ => acc[o].wrapping_add(v[i]),
                };
                i += 1;
            });
            if op == ReduceOp::Mean {
                return Err(format!("{op} is not defined on {}", x.dtype()));
            }
            TensorData::from_i64(x.dtype(), acc)
        }
        _ => {
            let v = x.as_f32();
            let out: Vec<f32> = if op == ReduceOp::Max {
                let mut acc = vec![f32::NEG_INFINITY; n_out];
                let mut i = 0;
                for_each_offset(&x.shape, &walk, |o| {
                    let (a, b) = (acc[o], v[i]);
                    // NaN wins, as in torch.amax
                    acc[o] = if a.is_nan() || b.is_nan() {
                        f32::NAN
                    } else {
                        a.max(b)
                    };
                    i += 1;
                });
                acc
            } else {
                let mut acc = vec![0f64; n_out];
                let mut i = 0;
                for_each_offset(&x.shape, &walk, |o| {
                    acc[o] += v[i] as f64;
                    i += 1;
                });
                let div = if op == ReduceOp::Mean {
                    count as f64
                } else {
                    1.0
                };
                acc.into_iter().map(|s| (s / div) as f32).collect()
            };
            TensorData::from_f32(x.dtype(), out)
        }
    };
    Ok(Tensor { shape, data })
}
