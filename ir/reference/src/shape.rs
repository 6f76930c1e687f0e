//! Data movement: reshape, transpose, broadcast, concat, slice, and the strided-walk helpers
//! the other families share.

use super::tensor::{map_data, Tensor, TensorData};
use std::borrow::Cow;

/// Row-major strides, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of concrete shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let y = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Ok(x),
                (1, _) => Ok(y),
                (_, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// Strides of `in_shape` read as `out_shape`: 0 along broadcast (and missing leading) dims.
pub fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> Result<Vec<usize>, String> {
    if in_shape.len() > out_shape.len() {
        return Err(format!("cannot broadcast {in_shape:?} to {out_shape:?}"));
    }
    let lead = out_shape.len() - in_shape.len();
    let s = strides(in_shape);
    (0..out_shape.len())
        .map(|i| {
            if i < lead {
                return Ok(0);
            }
            let d = in_shape[i - lead];
            if d == out_shape[i] {
                Ok(if d == 1 { 0 } else { s[i - lead] })
            } else if d == 1 {
                Ok(0)
            } else {
                Err(format!("cannot broadcast {in_shape:?} to {out_shape:?}"))
            }
        })
        .collect()
}

/// Calls `f` with the offset `Σ idx[i]·strides[i]` for every index of `shape`, in row-major order.
pub fn for_each_offset(shape: &[usize], strides: &[usize], mut f: impl FnMut(usize)) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..n {
        f(off);
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// `data` (of `in_shape`) broadcast to `out_shape`; borrowed when nothing changes.
pub fn expand<'a, T: Copy>(
    data: &'a [T],
    in_shape: &[usize],
    out_shape: &[usize],
) -> Result<Cow<'a, [T]>, String> {
    if in_shape == out_shape {
        return Ok(Cow::Borrowed(data));
    }
    let s = broadcast_strides(in_shape, out_shape)?;
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for_each_offset(out_shape, &s, |o| out.push(data[o]));
    Ok(Cow::Owned(out))
}

pub fn reshape(x: Tensor, shape: Vec<usize>) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    if n != x.numel() {
        return Err(format!(
            "cannot reshape {:?} into {shape:?}: element counts differ",
            x.shape
        ));
    }
    Ok(Tensor {
        shape,
        data: x.data,
    })
}

/// Output dim i is input dim `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("{perm:?} is not a permutation of rank {rank}"));
    }
    let in_strides = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let walk: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    fn gather<T: Copy>(v: &[T], shape: &[usize], walk: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(v.len());
        for_each_offset(shape, walk, |o| out.push(v[o]));
        out
    }
    let data = map_data!(&x.data, v => gather(v, &shape, &walk));
    Ok(Tensor { shape, data })
}

pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    let data = map_data!(&x.data, v => expand(v, &x.shape, shape)?.into_owned());
    Ok(Tensor {
        shape: shape.to_vec(),
        data,
    })
}

pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = *xs.first().ok_or("concat of nothing")?;
    let rank = first.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for x in xs {
        let fits = x.dtype() == first.dtype()
            && x.shape.len() == rank
            && (0..rank).all(|i| i == axis || x.shape[i] == first.shape[i]);
        if !fits {
            return Err(format!(
                "cannot concat {}{:?} with {}{:?} on axis {axis}",
                first.dtype(),
                first.shape,
                x.dtype(),
                x.shape
            ));
        }
        shape[axis] += x.shape[axis];
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    fn join<T: Copy>(parts: Vec<(&[T], usize)>, outer: usize, total: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for (v, chunk) in &parts {
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let total: usize = shape.iter().product();
    macro_rules! by_dtype {
        ($($var:ident),*) => {
            match &first.data {
                $(TensorData::$var(_) => TensorData::$var(join(
                    xs.iter()
                        .map(|x| match &x.data {
                            TensorData::$var(v) => (v.as_slice(), x.shape[axis] * inner),
                            _ => unreachable!("dtypes checked above"),
                        })
                        .collect(),
                    outer,
                    total,
                )),)*
            }
        };
    }
    let data = by_dtype!(F32, F16, BF16, I32, I64, Bool);
    Ok(Tensor { shape, data })
}

/// `[start, end)` along `axis`.
pub fn slice(x: &Tensor, axis: usize, start: i64, end: i64) -> Result<Tensor, String> {
    let rank = x.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let dim = x.shape[axis];
    if start < 0 || end < start || end as u64 > dim as u64 {
        return Err(format!(
            "slice [{start}, {end}) out of range for dim {axis} of size {dim}"
        ));
    }
    let (start, end) = (start as usize, end as usize);
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    fn cut<T: Copy>(
        v: &[T],
        outer: usize,
        dim: usize,
        inner: usize,
        start: usize,
        end: usize,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (end - start) * inner);
        for o in 0..outer {
            let base = o * dim * inner;
            out.extend_from_slice(&v[base + start * inner..base + end * inner]);
        }
        out
    }
    let data = map_data!(&x.data, v => cut(v, outer, dim, inner, start, end));
    let mut shape = x.shape.clone();
    shape[axis] = end - start;
    Ok(Tensor { shape, data })
}
