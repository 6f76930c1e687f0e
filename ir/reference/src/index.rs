//! Data-dependent indexing: gather, masked row select/scatter, and the vision position and
//! segment ids computed from `grid_thw`.

use super::tensor::{map_data, Tensor, TensorData};

fn indices(idx: &Tensor) -> Result<Vec<i64>, String> {
    match &idx.data {
        TensorData::I32(_) | TensorData::I64(_) => Ok(idx.to_i64_vec()),
        _ => Err(format!("indices must be integer, got {}", idx.dtype())),
    }
}

/// index_select along `axis`; negative indices are errors (the IR never wraps them).
pub fn gather(data: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor, String> {
    let rank = data.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let ids = indices(idx)?;
    let dim = data.shape[axis];
    if let Some((pos, bad)) = ids
        .iter()
        .enumerate()
        .find(|(_, &i)| i < 0 || i as u64 >= dim as u64)
    {
        return Err(format!(
            "index {bad} (at position {pos}) is out of range for dim {axis} of size {dim}"
        ));
    }
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    fn pick<T: Copy>(v: &[T], ids: &[i64], outer: usize, dim: usize, inner: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * ids.len() * inner);
        for o in 0..outer {
            for &i in ids {
                let start = (o * dim + i as usize) * inner;
                out.extend_from_slice(&v[start..start + inner]);
            }
        }
        out
    }
    let out = map_data!(&data.data, v => pick(v, &ids, outer, dim, inner));
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(Tensor { shape, data: out })
}

fn row_mask<'a>(data: &Tensor, mask: &'a Tensor) -> Result<&'a [bool], String> {
    let TensorData::Bool(m) = &mask.data else {
        return Err(format!("mask must be bool, got {}", mask.dtype()));
    };
    if mask.shape.len() != 1 || data.shape.is_empty() || data.shape[0] != mask.shape[0] {
        return Err(format!(
            "mask {:?} does not match the rows of {:?}",
            mask.shape, data.shape
        ));
    }
    Ok(m)
}

pub fn masked_select(data: &Tensor, mask: &Tensor) -> Result<Tensor, String> {
    let m = row_mask(data, mask)?;
    let row: usize = data.shape[1..].iter().product();
    fn rows<T: Copy>(v: &[T], m: &[bool], row: usize) -> Vec<T> {
        let mut out = Vec::new();
        for (r, _) in m.iter().enumerate().filter(|(_, &keep)| keep) {
            out.extend_from_slice(&v[r * row..(r + 1) * row]);
        }
        out
    }
    let out = map_data!(&data.data, v => rows(v, m, row));
    let mut shape = data.shape.clone();
    shape[0] = m.iter().filter(|&&b| b).count();
    Ok(Tensor { shape, data: out })
}

pub fn masked_scatter(base: &Tensor, mask: &Tensor, src: &Tensor) -> Result<Tensor, String> {
    let m = row_mask(base, mask)?;
    let count = m.iter().filter(|&&b| b).count();
    if src.shape.len() != base.shape.len() || src.shape[1..] != base.shape[1..] {
        return Err(format!(
            "source rows {:?} do not fit base rows {:?}",
            src.shape, base.shape
        ));
    }
    if src.shape[0] != count {
        return Err(format!(
            "mask selects {count} rows but the source has {}",
            src.shape[0]
        ));
    }
    let row: usize = base.shape[1..].iter().product();
    fn scatter<T: Copy>(base: &[T], m: &[bool], src: &[T], row: usize) -> Vec<T> {
        let mut out = base.to_vec();
        let rows = m.iter().enumerate().filter(|(_, &b)| b).map(|(r, _)| r);
        for (next, r) in rows.enumerate() {
            out[r * row..(r + 1) * row].copy_from_slice(&src[next * row..(next + 1) * row]);
        }
        out
    }
    macro_rules! by_dtype {
        ($($var:ident),*) => {
            match (&base.data, &src.data) {
                $((TensorData::$var(b), TensorData::$var(s)) => TensorData::$var(scatter(b, m, s, row)),)*
                _ => return Err(format!("operand dtypes differ: {} and {}", base.dtype(), src.dtype())),
            }
        };
    }
    let data = by_dtype!(F32, F16, BF16, I32, I64, Bool);
    Ok(Tensor {
        shape: base.shape.clone(),
        data,
    })
}

/// The (t, h, w) rows of an i64 `[n, 3]` grid, checked non-negative.
fn grid_rows(grid: &Tensor) -> Result<Vec<[usize; 3]>, String> {
    let TensorData::I64(g) = &grid.data else {
        return Err(format!("grid must be i64, got {}", grid.dtype()));
    };
    if grid.shape.len() != 2 || grid.shape[1] != 3 {
        return Err(format!("grid must be [n, 3], got {:?}", grid.shape));
    }
    g.chunks_exact(3)
        .enumerate()
        .map(|(i, r)| {
            match (
                usize::try_from(r[0]),
                usize::try_from(r[1]),
                usize::try_from(r[2]),
            ) {
                (Ok(t), Ok(h), Ok(w)) => Ok([t, h, w]),
                _ => Err(format!("grid entry {i} {r:?} has a negative size")),
            }
        })
        .collect()
}

/// Row count Σ t·h·w, checked for overflow before anything is allocated.
fn patch_count(rows: &[[usize; 3]], expected: Option<usize>) -> Result<usize, String> {
    let total = rows
        .iter()
        .try_fold(0usize, |acc, [t, h, w]| {
            t.checked_mul(*h)
                .and_then(|x| x.checked_mul(*w))
                .and_then(|x| acc.checked_add(x))
        })
        .ok_or_else(|| "grid patch count overflows".to_string())?;
    match expected {
        Some(len) if len != total => Err(format!(
            "len is {len} but the grid holds Σt·h·w = {total} patches"
        )),
        _ => Ok(total),
    }
}

/// transformers' `get_vision_position_ids`: per entry, the (row, col) of every patch in
/// merge-block-major order — blocks of m×m patches row by row, patches within a block row by row —
/// repeated for each of the t frames.
/// `expected` (the node's `len`, when already bound) is checked before anything is allocated.
pub fn vision_position_ids(
    grid: &Tensor,
    merge: &Tensor,
    expected: Option<usize>,
) -> Result<Tensor, String> {
    let rows = grid_rows(grid)?;
    let TensorData::I64(ms) = &merge.data else {
        return Err(format!("merge sizes must be i64, got {}", merge.dtype()));
    };
    if merge.shape != [rows.len()] {
        return Err(format!(
            "merge sizes {:?} do not match {} grid entries",
            merge.shape,
            rows.len()
        ));
    }
    let total = patch_count(&rows, expected)?;
    let mut out = Vec::with_capacity(total * 2);
    for (e, ([t, h, w], &m)) in rows.iter().zip(ms).enumerate() {
        let m = usize::try_from(m)
            .ok()
            .filter(|&m| m > 0)
            .ok_or(format!("merge size {m} of entry {e} is not positive"))?;
        if h % m != 0 || w % m != 0 {
            return Err(format!(
                "grid entry {e} ({h}x{w}) is not divisible by merge size {m}"
            ));
        }
        let mut frame = Vec::with_capacity(h * w * 2);
        for bh in 0..h / m {
            for bw in 0..w / m {
                for i in 0..m {
                    for j in 0..m {
                        frame.push((bh * m + i) as i64);
                        frame.push((bw * m + j) as i64);
                    }
                }
            }
        }
        for _ in 0..*t {
            out.extend_from_slice(&frame);
        }
    }
    Ok(Tensor {
        shape: vec![total, 2],
        data: TensorData::I64(out),
    })
}

/// The running frame index of every patch, over all entries in order.
pub fn segment_ids(grid: &Tensor, expected: Option<usize>) -> Result<Tensor, String> {
    let rows = grid_rows(grid)?;
    let total = patch_count(&rows, expected)?;
    let mut out = Vec::with_capacity(total);
    let mut frame = 0i64;
    for [t, h, w] in rows {
        for _ in 0..t {
            out.extend(std::iter::repeat_n(frame, h * w));
            frame += 1;
        }
    }
    Ok(Tensor {
        shape: vec![total],
        data: TensorData::I64(out),
    })
}
