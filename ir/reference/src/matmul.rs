//! Batched matmul `[..., m, k] × [..., k, n]` with broadcast batch dims. Floats go through the
//! `gemm` crate in f32 (reduced-precision operands widened first, the result rounded once);
//! ints use a plain i64 loop. Either operand may arrive as the untransposed source of a
//! last-two-dims transpose (`x · Wᵀ` of a linear layer), read through strides instead of copied.

use super::shape::{broadcast_shape, broadcast_strides, for_each_offset};
use super::tensor::{Tensor, TensorData};

/// gemm's own thread split over rayon's pool (0 = every rayon thread).
const PARALLELISM: gemm::Parallelism = gemm::Parallelism::Rayon(0);

struct Plan {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// Per output matrix, the index of the lhs and rhs matrix it reads.
    pairs: Vec<(usize, usize)>,
}

fn plan(a: &[usize], b: &[usize]) -> Result<Plan, String> {
    if a.len() < 2 || b.len() < 2 {
        return Err(format!("operands need rank >= 2, got {a:?} and {b:?}"));
    }
    let (ab, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(format!("contraction dims differ: {a:?} × {b:?}"));
    }
    let batch = broadcast_shape(ab, bb)?;
    let (sa, sb) = (
        broadcast_strides(ab, &batch)?,
        broadcast_strides(bb, &batch)?,
    );
    let mut ia = Vec::new();
    let mut ib = Vec::new();
    for_each_offset(&batch, &sa, |o| ia.push(o));
    for_each_offset(&batch, &sb, |o| ib.push(o));
    Ok(Plan {
        batch,
        m,
        k,
        n,
        pairs: ia.into_iter().zip(ib).collect(),
    })
}

/// Row and column strides of one stored matrix of logical shape `[rows, cols]`.
#[derive(Clone, Copy)]
pub struct Layout {
    rs: usize,
    cs: usize,
}

impl Layout {
    /// A row-major `[rows, cols]` matrix, or, when `transposed`, one stored as its row-major
    /// `[cols, rows]` transpose.
    pub fn new(rows: usize, cols: usize, transposed: bool) -> Layout {
        if transposed {
            Layout { rs: 1, cs: rows }
        } else {
            Layout { rs: cols, cs: 1 }
        }
    }
}

/// The shape an operand has once its pending transpose (if any) is applied.
fn logical_shape(x: &Tensor, transposed: bool) -> Result<Vec<usize>, String> {
    let mut s = x.shape.clone();
    let r = s.len();
    if transposed {
        if r < 2 {
            return Err(format!("cannot transpose the last two dims of {s:?}"));
        }
        s.swap(r - 2, r - 1);
    }
    Ok(s)
}

/// `a × b`, where `a_t` / `b_t` say the operand is the transpose of the given tensor's last two dims.
pub fn matmul(a: &Tensor, a_t: bool, b: &Tensor, b_t: bool) -> Result<Tensor, String> {
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operand dtypes differ: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let p = plan(&logical_shape(a, a_t)?, &logical_shape(b, b_t)?)?;
    let (m, k, n) = (p.m, p.k, p.n);
    let mut shape = p.batch.clone();
    shape.extend([m, n]);
    let total: usize = shape.iter().product();
    let (la, lb) = (Layout::new(m, k, a_t), Layout::new(k, n, b_t));
    let data = match &a.data {
        TensorData::Bool(_) => return Err("matmul of bool".into()),
        TensorData::I32(_) | TensorData::I64(_) => {
            let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
            let mut out = vec![0i64; total];
            for (bi, &(ia, ib)) in p.pairs.iter().enumerate() {
                let (x, y) = (
                    &x[ia * m * k..(ia + 1) * m * k],
                    &y[ib * k * n..(ib + 1) * k * n],
                );
                let o = &mut out[bi * m * n..(bi + 1) * m * n];
                for i in 0..m {
                    for l in 0..k {
                        let xv = x[i * la.rs + l * la.cs];
                        for j in 0..n {
                            o[i * n + j] = o[i * n + j]
                                .wrapping_add(xv.wrapping_mul(y[l * lb.rs + j * lb.cs]));
                        }
                    }
                }
            }
            TensorData::from_i64(a.dtype(), out)
        }
        _ => {
            let (x, y) = (a.as_f32(), b.as_f32());
            let mut out = vec![0f32; total];
            // A shared rhs and a whole (unbroadcast) lhs: the batch folds into m, one gemm call.
            let lhs_whole = p.pairs.iter().enumerate().all(|(i, &(ia, _))| ia == i);
            let rhs_shared = p.pairs.iter().all(|&(_, ib)| ib == 0);
            if lhs_whole && rhs_shared && !a_t {
                gemm_f32(&x, la, &y, lb, &mut out, p.pairs.len() * m, k, n);
            } else {
                for (bi, &(ia, ib)) in p.pairs.iter().enumerate() {
                    gemm_f32(
                        &x[ia * m * k..(ia + 1) * m * k],
                        la,
                        &y[ib * k * n..(ib + 1) * k * n],
                        lb,
                        &mut out[bi * m * n..(bi + 1) * m * n],
                        m,
                        k,
                        n,
                    );
                }
            }
            TensorData::from_f32(a.dtype(), out)
        }
    };
    Ok(Tensor { shape, data })
}

/// `out[m, n] = x[m, k] · y[k, n]`; `out` row-major, the operands as their layouts say.
/// Panics when a slice's length disagrees with `m`, `k`, `n` (a caller's bug, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    x: &[f32],
    lx: Layout,
    y: &[f32],
    ly: Layout,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(
        x.len() == m * k && y.len() == k * n && out.len() == m * n,
        "gemm operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: the three slices hold exactly m·k, k·n and m·n elements (asserted above), each
    // layout addresses every element of its matrix exactly once inside it, and `out` is borrowed mutably
    // so it cannot alias the operands. With read_dst = false, dst = beta · x·y.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            lx.cs as isize,
            lx.rs as isize,
            y.as_ptr(),
            ly.cs as isize,
            ly.rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            PARALLELISM,
        );
    }
}
