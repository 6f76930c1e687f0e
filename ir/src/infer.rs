//! Dtype and shape rules of every op. The builder and the verifier share them.

use crate::{AttentionMask, BinaryOp, DType, Dim, Op, ReduceOp, Scalar, TensorType, UnaryOp};

type Result<T> = std::result::Result<T, String>;

fn same_dim(a: &Dim, b: &Dim) -> bool {
    a == b || a.simplify() == b.simplify()
}

pub fn shapes_equal(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_dim(x, y))
}

fn fmt_shape(s: &[Dim]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Numpy broadcasting: align right, equal dims or 1.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let one = Dim::Const(1);
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank {
                &a[i + a.len() - rank]
            } else {
                &one
            };
            let y = if i + b.len() >= rank {
                &b[i + b.len() - rank]
            } else {
                &one
            };
            if same_dim(x, y) || *y == one {
                Ok(x.clone())
            } else if *x == one {
                Ok(y.clone())
            } else {
                Err(format!(
                    "shapes {} and {} do not broadcast",
                    fmt_shape(a),
                    fmt_shape(b)
                ))
            }
        })
        .collect()
}

fn product(shape: &[Dim]) -> Dim {
    shape.iter().fold(Dim::Const(1), |acc, d| acc * d.clone())
}

fn expect_arity(op: &Op, n: usize) -> Result<()> {
    match op.arity() {
        Some(a) if a != n => Err(format!("takes {a} operands, got {n}")),
        None if n == 0 => Err("takes at least one operand".into()),
        _ => Ok(()),
    }
}

fn expect_same_dtype(a: &TensorType, b: &TensorType) -> Result<()> {
    if a.dtype != b.dtype {
        return Err(format!(
            "operand dtypes differ: {} and {}",
            a.dtype, b.dtype
        ));
    }
    Ok(())
}

fn expect_axis(axis: usize, rank: usize) -> Result<()> {
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(())
}

pub fn infer_type(op: &Op, ins: &[&TensorType]) -> Result<TensorType> {
    expect_arity(op, ins.len())?;
    let ty = match op {
        Op::Input { .. } | Op::Weight { .. } | Op::CacheRead { .. } => {
            return Err("source ops have declared types".into());
        }
        Op::Constant { value, dtype } => {
            let ok = match value {
                Scalar::Float(_) => dtype.is_float(),
                Scalar::Int(_) => dtype.is_int(),
                Scalar::Bool(_) => *dtype == DType::Bool,
            };
            if !ok {
                return Err(format!("literal {value:?} cannot have dtype {dtype}"));
            }
            TensorType::new(*dtype, vec![])
        }
        Op::Iota { len, dtype, .. } => {
            if *dtype == DType::Bool {
                return Err("iota cannot be bool".into());
            }
            TensorType::new(*dtype, vec![len.clone()])
        }
        Op::MatMul => {
            let (a, b) = (ins[0], ins[1]);
            expect_same_dtype(a, b)?;
            if a.dtype == DType::Bool {
                return Err("matmul of bool".into());
            }
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!(
                    "operands need rank >= 2, got {} and {}",
                    a.rank(),
                    b.rank()
                ));
            }
            let (m, k1) = (&a.shape[a.rank() - 2], &a.shape[a.rank() - 1]);
            let (k2, n) = (&b.shape[b.rank() - 2], &b.shape[b.rank() - 1]);
            if !same_dim(k1, k2) {
                return Err(format!(
                    "contraction dims differ: {} × {}",
                    fmt_shape(&a.shape),
                    fmt_shape(&b.shape)
                ));
            }
            let mut shape = broadcast_shapes(&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])?;
            shape.push(m.clone());
            shape.push(n.clone());
            TensorType::new(a.dtype, shape)
        }
        Op::Unary(u) => {
            let a = ins[0];
            let ok = match u {
                UnaryOp::Neg | UnaryOp::Abs => a.dtype != DType::Bool,
                _ => a.dtype.is_float(),
            };
            if !ok {
                return Err(format!("{u} is not defined on {}", a.dtype));
            }
            a.clone()
        }
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            expect_same_dtype(x, y)?;
            if b.is_logical() && x.dtype != DType::Bool {
                return Err(format!("{b} needs bool operands, got {}", x.dtype));
            }
            if !b.is_logical() && !b.is_comparison() && x.dtype == DType::Bool {
                return Err(format!("{b} is not defined on bool"));
            }
            if *b == BinaryOp::Pow && !x.dtype.is_float() {
                return Err("pow needs float operands".into());
            }
            let shape = broadcast_shapes(&x.shape, &y.shape)?;
            let dtype = if b.is_comparison() {
                DType::Bool
            } else {
                x.dtype
            };
            TensorType::new(dtype, shape)
        }
        Op::Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool {
                return Err(format!("condition must be bool, got {}", c.dtype));
            }
            expect_same_dtype(a, b)?;
            let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
            TensorType::new(a.dtype, shape)
        }
        Op::Reduce {
            op: r,
            axes,
            keep_dims,
        } => {
            let a = ins[0];
            if axes.is_empty() {
                return Err("no axes to reduce".into());
            }
            for (i, ax) in axes.iter().enumerate() {
                expect_axis(*ax, a.rank())?;
                if axes[..i].contains(ax) {
                    return Err(format!("axis {ax} listed twice"));
                }
            }
            if *r == ReduceOp::Mean && !a.dtype.is_float() || a.dtype == DType::Bool {
                return Err(format!("{r} is not defined on {}", a.dtype));
            }
            let shape = (0..a.rank())
                .filter_map(|i| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(a.shape[i].clone()),
                    (true, true) => Some(Dim::Const(1)),
                    (true, false) => None,
                })
                .collect();
            TensorType::new(a.dtype, shape)
        }
        Op::Reshape { shape } => {
            let a = ins[0];
            if !same_dim(&product(&a.shape), &product(shape)) {
                return Err(format!(
                    "cannot reshape {} into {}: element counts differ",
                    fmt_shape(&a.shape),
                    fmt_shape(shape)
                ));
            }
            TensorType::new(a.dtype, shape.clone())
        }
        Op::Transpose { perm } => {
            let a = ins[0];
            let mut seen = vec![false; a.rank()];
            if perm.len() != a.rank()
                || perm
                    .iter()
                    .any(|&p| p >= a.rank() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "{perm:?} is not a permutation of rank {}",
                    a.rank()
                ));
            }
            TensorType::new(a.dtype, perm.iter().map(|&p| a.shape[p].clone()).collect())
        }
        Op::Broadcast { shape } => {
            let a = ins[0];
            if a.rank() > shape.len() || !shapes_equal(&broadcast_shapes(&a.shape, shape)?, shape) {
                return Err(format!(
                    "cannot broadcast {} to {}",
                    fmt_shape(&a.shape),
                    fmt_shape(shape)
                ));
            }
            TensorType::new(a.dtype, shape.clone())
        }
        Op::Concat { axis } | Op::CacheAppend { axis, .. } => {
            let first = ins[0];
            expect_axis(*axis, first.rank())?;
            let mut len = Dim::Const(0);
            for t in ins {
                expect_same_dtype(first, t)?;
                let compatible = t.rank() == first.rank()
                    && (0..first.rank())
                        .all(|i| i == *axis || same_dim(&t.shape[i], &first.shape[i]));
                if !compatible {
                    return Err(format!(
                        "cannot concat {} with {} on axis {axis}",
                        fmt_shape(&first.shape),
                        fmt_shape(&t.shape)
                    ));
                }
                len = len + t.shape[*axis].clone();
            }
            let mut shape = first.shape.clone();
            shape[*axis] = len;
            TensorType::new(first.dtype, shape)
        }
        Op::Slice { axis, start, end } => {
            let a = ins[0];
            expect_axis(*axis, a.rank())?;
            if let (Some(s), Some(e)) = (start.as_const(), end.as_const()) {
                if s < 0 || e < s {
                    return Err(format!("bad slice [{s}, {e})"));
                }
                if let Some(n) = a.shape[*axis].as_const() {
                    if e > n {
                        return Err(format!("slice end {e} beyond dim {n}"));
                    }
                }
            }
            let mut shape = a.shape.clone();
            shape[*axis] = end.clone() + Dim::Const(-1) * start.clone();
            TensorType::new(a.dtype, shape)
        }
        Op::Gather { axis } => {
            let (data, idx) = (ins[0], ins[1]);
            expect_axis(*axis, data.rank())?;
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integer, got {}", idx.dtype));
            }
            let mut shape = data.shape[..*axis].to_vec();
            shape.extend(idx.shape.iter().cloned());
            shape.extend(data.shape[axis + 1..].iter().cloned());
            TensorType::new(data.dtype, shape)
        }
        Op::Cast { to } => TensorType::new(*to, ins[0].shape.clone()),
        Op::MaskedSelect { len } => {
            let (data, mask) = (ins[0], ins[1]);
            check_row_mask(data, mask)?;
            let mut shape = data.shape.clone();
            shape[0] = len.clone();
            TensorType::new(data.dtype, shape)
        }
        Op::MaskedScatter => {
            let (base, mask, src) = (ins[0], ins[1], ins[2]);
            check_row_mask(base, mask)?;
            expect_same_dtype(base, src)?;
            if src.rank() != base.rank() || !shapes_equal(&src.shape[1..], &base.shape[1..]) {
                return Err(format!(
                    "source rows {} do not fit base rows {}",
                    fmt_shape(&src.shape),
                    fmt_shape(&base.shape)
                ));
            }
            base.clone()
        }
        Op::VisionPositionIds { len } => {
            check_grid(ins[0])?;
            let m = ins[1];
            if m.dtype != DType::I64 || m.rank() != 1 || !same_dim(&m.shape[0], &ins[0].shape[0]) {
                return Err(format!(
                    "merge sizes must be i64[{}], got {m}",
                    ins[0].shape[0]
                ));
            }
            TensorType::new(DType::I64, vec![len.clone(), Dim::Const(2)])
        }
        Op::SegmentIds { len } => {
            check_grid(ins[0])?;
            TensorType::new(DType::I64, vec![len.clone()])
        }
        Op::Softmax | Op::Activation(_) => {
            expect_float(ins[0])?;
            ins[0].clone()
        }
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
            let x = ins[0];
            expect_float(x)?;
            let width = x.shape.last().ok_or("needs rank >= 1")?;
            for p in &ins[1..] {
                expect_same_dtype(x, p)?;
                if p.rank() != 1 || !same_dim(&p.shape[0], width) {
                    return Err(format!("parameter {p} does not match the last dim of {x}"));
                }
            }
            x.clone()
        }
        Op::SwiGlu => {
            expect_same_dtype(ins[0], ins[1])?;
            expect_float(ins[0])?;
            TensorType::new(
                ins[0].dtype,
                broadcast_shapes(&ins[0].shape, &ins[1].shape)?,
            )
        }
        Op::Rope => {
            let x = ins[0];
            expect_float(x)?;
            check_rope_tables(x, ins[1], ins[2])?;
            x.clone()
        }
        Op::FusedMatMul { bias, .. } => {
            let product = infer_type(&Op::MatMul, &ins[..2])?;
            let mut epilogue = product.clone();
            for e in &ins[2..] {
                expect_same_dtype(&product, e)?;
                epilogue =
                    TensorType::new(product.dtype, broadcast_shapes(&epilogue.shape, &e.shape)?);
            }
            if !shapes_equal(&epilogue.shape, &product.shape) {
                return Err(format!(
                    "epilogue operands widen the product {product} to {epilogue}"
                ));
            }
            if *bias && ins[2].rank() != 1 {
                return Err(format!("bias must be 1-D, got {}", ins[2]));
            }
            product
        }
        Op::Attention {
            mask,
            rope_q,
            rope_k,
            ..
        } => {
            let (q, k, v) = (ins[0], ins[1], ins[2]);
            expect_float(q)?;
            expect_same_dtype(q, k)?;
            expect_same_dtype(q, v)?;
            if q.rank() != 3 || k.rank() != 3 || v.rank() != 3 {
                return Err(format!(
                    "q, k, v must be [heads, len, head_dim], got {q}, {k}, {v}"
                ));
            }
            if !shapes_equal(&k.shape, &v.shape) || !same_dim(&q.shape[2], &k.shape[2]) {
                return Err(format!(
                    "k {k} and v {v} must match each other and q's head_dim"
                ));
            }
            let (hq, hk) = (q.shape[0].as_const(), k.shape[0].as_const());
            if let (Some(hq), Some(hk)) = (hq, hk) {
                if hk == 0 || hq % hk != 0 {
                    return Err(format!("{hq} query heads cannot share {hk} kv heads"));
                }
            }
            let mut rest = 3;
            if *rope_q || *rope_k {
                check_rope_tables(q, ins[3], ins[4])?;
                rest = 5;
            }
            if (*mask == AttentionMask::Segments || *rope_k) && !same_dim(&q.shape[1], &k.shape[1])
            {
                return Err("segment masks and key rotation need as many keys as queries".into());
            }
            if *mask == AttentionMask::Segments {
                let seg = ins[rest];
                if seg.dtype != DType::I64
                    || seg.rank() != 1
                    || !same_dim(&seg.shape[0], &q.shape[1])
                {
                    return Err(format!("segments must be i64[{}], got {seg}", q.shape[1]));
                }
            }
            q.clone()
        }
        Op::SpatialMerge { merge } => {
            let x = ins[0];
            expect_float(x)?;
            let group = Dim::Const((merge * merge) as i64);
            if x.rank() != 2 || *merge == 0 {
                return Err(format!("needs [rows, features] and merge >= 1, got {x}"));
            }
            let rows = x.shape[0].clone().floor_div(group.clone());
            if !same_dim(&(rows.clone() * group), &x.shape[0]) {
                return Err(format!(
                    "{} rows do not split into groups of {}",
                    x.shape[0],
                    merge * merge
                ));
            }
            TensorType::new(x.dtype, vec![rows, x.shape[1].clone()])
        }
        Op::DiffFramePrune { len, merge, .. } => {
            let (pixels, grid) = (ins[0], ins[1]);
            check_grid(grid)?;
            if pixels.rank() != 2 || !pixels.dtype.is_float() || *merge == 0 {
                return Err(format!(
                    "pixels must be float [patches, values], got {pixels}"
                ));
            }
            TensorType::new(DType::Bool, vec![len.clone()])
        }
        Op::Fold => ins[0].clone(),
    };
    Ok(ty)
}

fn expect_float(t: &TensorType) -> Result<()> {
    if !t.dtype.is_float() {
        return Err(format!("needs a float tensor, got {t}"));
    }
    Ok(())
}

/// cos/sin tables of the operand's dtype whose shape broadcasts into the operand's.
fn check_rope_tables(x: &TensorType, cos: &TensorType, sin: &TensorType) -> Result<()> {
    for t in [cos, sin] {
        expect_same_dtype(x, t)?;
        let joined = broadcast_shapes(&x.shape, &t.shape)?;
        if !shapes_equal(&joined, &x.shape)
            || !t
                .shape
                .last()
                .is_some_and(|d| same_dim(d, x.shape.last().unwrap_or(d)))
        {
            return Err(format!("rope table {t} does not broadcast into {x}"));
        }
    }
    let d = x.shape.last().and_then(Dim::as_const);
    if d.is_some_and(|d| d % 2 != 0) {
        return Err(format!("rope needs an even last dim, got {x}"));
    }
    Ok(())
}

fn check_row_mask(data: &TensorType, mask: &TensorType) -> Result<()> {
    if mask.dtype != DType::Bool || mask.rank() != 1 {
        return Err(format!("mask must be a 1-D bool tensor, got {mask}"));
    }
    if data.rank() == 0 || !same_dim(&data.shape[0], &mask.shape[0]) {
        return Err(format!("mask {mask} does not match the rows of {data}"));
    }
    Ok(())
}

fn check_grid(grid: &TensorType) -> Result<()> {
    if grid.dtype != DType::I64 || grid.rank() != 2 || grid.shape[1] != Dim::Const(3) {
        return Err(format!("grid must be i64[n, 3], got {grid}"));
    }
    Ok(())
}
