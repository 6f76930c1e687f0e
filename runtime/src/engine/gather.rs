//! The claimed embedding lookup: rows of a stored table read in place from `weights.bin`, so a
//! decode step copies one row instead of decoding the whole table (the reference path's
//! `weight` operand), and a tied table is read from the LM head's packed weight.

use crate::exec::Tensor;
use vl3c_cpu::PackedBf16;
use vl3c_engine::{TensorEntry, TensorLayout};
use vl3c_ir::DType;

/// `table[ids]` along axis 0, `table` being `bytes` as `e` stores it: the `[v, h]` weight when
/// not `transposed`, else the `[h, v]` matmul weight (packed bf16 panels or raw f32). Indices
/// out of `[0, v)` are errors, as the reference's `gather`.
pub(crate) fn rows(
    bytes: &[u8],
    e: &TensorEntry,
    transposed: bool,
    ids: &Tensor,
    dtype: DType,
) -> Result<Tensor, String> {
    let idx = match ids.dtype() {
        DType::I32 | DType::I64 => ids.to_i64_vec(),
        d => return Err(format!("indices must be integer, got {d}")),
    };
    let [a, b] = e.shape[..] else {
        return Err(format!("stored table has shape {:?}, not 2-D", e.shape));
    };
    let (v, h) = if transposed { (b, a) } else { (a, b) };
    if let Some((pos, bad)) = idx
        .iter()
        .enumerate()
        .find(|(_, &i)| i < 0 || i as u64 >= v as u64)
    {
        return Err(format!(
            "index {bad} (at position {pos}) is out of range for dim 0 of size {v}"
        ));
    }
    let mut shape = ids.shape.clone();
    shape.push(h);
    match (&e.layout, transposed) {
        (TensorLayout::Raw, false) => {
            let stored = e
                .dtype
                .parse::<DType>()
                .map_err(|_| format!("stored dtype `{}`", e.dtype))?;
            if stored != dtype {
                return Err(format!(
                    "stored table is {stored}, the gather yields {dtype}"
                ));
            }
            let row = h * dtype.size_bytes();
            let mut out = Vec::with_capacity(idx.len() * row);
            for &i in &idx {
                out.extend_from_slice(&bytes[i as usize * row..(i as usize + 1) * row]);
            }
            Tensor::from_bytes(dtype, &shape, &out)
        }
        (TensorLayout::PackedBf16 { n, k }, true) => {
            let w = PackedBf16::from_bytes(bytes, *n, *k).map_err(|e| e.to_string())?;
            let mut out = vec![0f32; idx.len() * h];
            for (&i, o) in idx.iter().zip(out.chunks_mut(h)) {
                w.row_f32(i as usize, o);
            }
            // The stored values were the table's (exact), so rounding back is exact.
            Ok(Tensor::from_f32(dtype, shape, out))
        }
        (TensorLayout::Raw, true) => {
            let w: &[f32] =
                bytemuck::try_cast_slice(bytes).map_err(|e| format!("stored weight: {e}"))?;
            let mut out = Vec::with_capacity(idx.len() * h);
            for &i in &idx {
                out.extend((0..h).map(|r| w[r * v + i as usize]));
            }
            Ok(Tensor::from_f32(dtype, shape, out))
        }
        (TensorLayout::PackedBf16 { .. }, false) => {
            Err("a packed table must be the transposed matmul weight".into())
        }
    }
}
