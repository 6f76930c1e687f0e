//! The claimed matmuls: `a · W (+ epilogue)` with `W` pre-laid-out in `weights.bin` — packed
//! bf16 panels through the GEMV (one row) or GEMM kernels, or a raw f32 `[k, n]`.

use crate::exec::matmul::{gemm_f32, Layout};
use crate::exec::shape::{broadcast_shape, expand};
use crate::exec::Tensor;
use vl3c_cpu::{self as cpu, Backend, Epilogue, GemmMode, PackedBf16};
use vl3c_engine::{TensorEntry, TensorLayout};

/// `a · W (+ epilogue operands, in order)`, `W` the stored `[k, n]` weight (`bytes`).
pub(crate) fn matmul(
    a: &Tensor,
    e: &TensorEntry,
    bytes: &[u8],
    epilogue: &[&Tensor],
    mode: GemmMode,
    threads: usize,
) -> Result<Tensor, String> {
    let (k, n) = (e.shape[0], e.shape[1]);
    if a.shape.last() != Some(&k) {
        return Err(format!(
            "lhs {:?} does not end in the weight's k = {k}",
            a.shape
        ));
    }
    let av = a.as_f32();
    let m = av.len().checked_div(k).unwrap_or(0);
    let mut shape = a.shape.clone();
    *shape.last_mut().expect("rank >= 1") = n;
    // Epilogue operands the kernels fold into their stores: a [n] bias, a full residual.
    let bias = epilogue
        .first()
        .copied()
        .filter(|b| b.numel() == n && b.shape.last() == Some(&n));
    let rest_from = bias.is_some() as usize;
    let residual = epilogue
        .get(rest_from)
        .copied()
        .filter(|r| r.shape == shape && rest_from + 1 == epilogue.len());
    let (bias_v, res_v) = (bias.map(|b| b.as_f32()), residual.map(|r| r.as_f32()));
    let mut c = vec![0f32; m * n];
    let mut applied = 0;
    match e.layout {
        TensorLayout::PackedBf16 { .. } => {
            let w = PackedBf16::from_bytes(bytes, n, k).map_err(|e| e.to_string())?;
            if m == 1 {
                cpu::gemv(&w, &av, &mut c, threads);
                // The GEMV stores the bare product; the adds follow in the reference's order.
                for v in [&bias_v, &res_v].into_iter().flatten() {
                    for (x, &y) in c.iter_mut().zip(v.iter()) {
                        *x += y;
                    }
                }
                applied = rest_from + residual.is_some() as usize;
            } else if m > 1 {
                let ep = Epilogue {
                    bias: bias_v.as_deref(),
                    residual: res_v.as_deref(),
                    accumulate: false,
                };
                c = Vec::with_capacity(m * n);
                cpu::gemm_uninit(
                    &av,
                    &w,
                    &mut c.spare_capacity_mut()[..m * n],
                    threads,
                    &ep,
                    mode,
                    Backend::Auto,
                );
                // SAFETY: gemm_uninit wrote all m·n elements.
                unsafe { c.set_len(m * n) };
                applied = rest_from + residual.is_some() as usize;
            }
        }
        TensorLayout::Raw => {
            let w: &[f32] =
                bytemuck::try_cast_slice(bytes).map_err(|e| format!("stored weight: {e}"))?;
            gemm_f32(
                &av,
                Layout::new(m, k, false),
                w,
                Layout::new(k, n, false),
                &mut c,
                m,
                k,
                n,
            );
        }
    }
    // The rest of the epilogue as the reference's fused_matmul adds it: in order, broadcast.
    for t in &epilogue[applied..] {
        if broadcast_shape(&shape, &t.shape)? != shape {
            return Err(format!(
                "epilogue operand {:?} widens the product {shape:?}",
                t.shape
            ));
        }
        let tv = t.as_f32();
        let tv = expand(&tv, &t.shape, &shape)?;
        for (x, &y) in c.iter_mut().zip(tv.iter()) {
            *x += y;
        }
    }
    Ok(Tensor::f32(shape, c))
}
