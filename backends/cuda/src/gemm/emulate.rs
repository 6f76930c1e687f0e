//! Executes a [`GemmCall`] on emulator buffers, reading every field literally: column-major
//! offsets from the leading dimensions and batch strides, `op(A)`/`op(B)` from the transposes,
//! f32 accumulation, `alpha`/`beta`, the bias epilogue, one rounding to D's type (`set_f32`
//! rounds to nearest even, as cuBLASLt's bf16 output conversion). Every element
//! it touches must lie inside its buffer and (for A, B, C, bias) have been written, so a layout
//! that would read past a weight or the wrong half of an activation fails here.

use super::call::{CallError, DataType, Epilogue, GemmCall, ResolvedLayout, Transpose};
use crate::emu::DeviceBuffer;
use crate::kir::Ty;
use crate::templates::Sizes;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EmulateError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{operand} is a {got:?} buffer but the call declares {want:?}")]
    Type {
        operand: &'static str,
        got: Ty,
        want: DataType,
    },
    #[error("{operand}: the call reaches element {reach} (ld = {ld}, batch stride = {stride}) of a buffer of {len}")]
    OutOfBounds {
        operand: &'static str,
        reach: i64,
        ld: i64,
        stride: i64,
        len: usize,
    },
    #[error("{operand}: element {index} is read but was never written")]
    Uninitialised { operand: &'static str, index: i64 },
    #[error("{0}")]
    Missing(&'static str),
}

/// `d = alpha·op(a)·op(b) + beta·c (+ bias)` as cuBLASLt would compute `call` at `sizes`. `c` is
/// read only when beta ≠ 0 and `bias` only with the bias epilogue.
pub fn emulate(
    call: &GemmCall,
    sizes: &Sizes,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    c: Option<&DeviceBuffer>,
    bias: Option<&DeviceBuffer>,
    d: &mut DeviceBuffer,
) -> Result<(), EmulateError> {
    let r = call.resolve(sizes)?;
    let a = Operand::new("A", a, &r.a, r.batch_count)?;
    let b = Operand::new("B", b, &r.b, r.batch_count)?;
    let c = if call.beta != 0.0 {
        let c = c.ok_or(EmulateError::Missing(
            "beta ≠ 0 reads C, but no C buffer was given",
        ))?;
        Some(Operand::new("C", c, &r.c, r.batch_count)?)
    } else {
        None
    };
    let bias = match call.epilogue {
        Epilogue::Default => None,
        Epilogue::Bias { ty } => {
            let buf = bias.ok_or(EmulateError::Missing(
                "the bias epilogue has no bias buffer",
            ))?;
            let vector = ResolvedLayout {
                ty,
                rows: r.m,
                cols: 1,
                ld: r.m.max(1),
                batch_stride: 0,
            };
            Some(Operand::new("bias", buf, &vector, 1)?)
        }
    };
    check_type("D", d.elem(), r.d.ty)?;
    check_span("D", d.len(), &r.d, r.batch_count)?;

    let element = |op: &Operand, t: Transpose, batch: i64, row: i64, col: i64| match t {
        Transpose::N => op.get(op.layout.offset(batch, row, col)),
        Transpose::T => op.get(op.layout.offset(batch, col, row)),
    };
    for batch in 0..r.batch_count {
        for col in 0..r.n {
            for row in 0..r.m {
                let mut acc = 0f32;
                for l in 0..r.k {
                    acc += element(&a, call.transa, batch, row, l)?
                        * element(&b, call.transb, batch, l, col)?;
                }
                let mut value = call.alpha * acc;
                if let Some(c) = &c {
                    value += call.beta * c.get(c.layout.offset(batch, row, col))?;
                }
                if let Some(bias) = &bias {
                    value += bias.get(row)?;
                }
                d.set_f32(r.d.offset(batch, row, col) as usize, value);
            }
        }
    }
    Ok(())
}

/// A read operand: its values as f32 (bf16 widens exactly) and which were ever written.
struct Operand {
    name: &'static str,
    layout: ResolvedLayout,
    values: Vec<Option<f32>>,
}

impl Operand {
    fn new(
        name: &'static str,
        buf: &DeviceBuffer,
        layout: &ResolvedLayout,
        batch_count: i64,
    ) -> Result<Operand, EmulateError> {
        check_type(name, buf.elem(), layout.ty)?;
        check_span(name, buf.len(), layout, batch_count)?;
        let written = buf.written();
        let values = buf
            .to_f32()
            .into_iter()
            .zip(written)
            .map(|(v, w)| w.then_some(v))
            .collect();
        Ok(Operand {
            name,
            layout: *layout,
            values,
        })
    }

    fn get(&self, index: i64) -> Result<f32, EmulateError> {
        self.values[index as usize].ok_or(EmulateError::Uninitialised {
            operand: self.name,
            index,
        })
    }
}

fn check_type(operand: &'static str, got: Ty, want: DataType) -> Result<(), EmulateError> {
    let matches = matches!(
        (got, want),
        (Ty::Bf16, DataType::Bf16) | (Ty::F32, DataType::F32)
    );
    if matches {
        Ok(())
    } else {
        Err(EmulateError::Type { operand, got, want })
    }
}

/// The furthest element the call touches must be inside the buffer: this is where a leading
/// dimension or batch stride larger than the data behind it shows.
fn check_span(
    operand: &'static str,
    len: usize,
    l: &ResolvedLayout,
    batch_count: i64,
) -> Result<(), EmulateError> {
    let span = l.span(batch_count);
    if span > len as i64 {
        return Err(EmulateError::OutOfBounds {
            operand,
            reach: span - 1,
            ld: l.ld,
            stride: l.batch_stride,
            len,
        });
    }
    Ok(())
}
