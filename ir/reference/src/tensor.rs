//! Host tensors: a row-major buffer of one dtype plus a concrete shape, and their byte and
//! safetensors forms (always little-endian, as safetensors stores them).

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView, View};
use std::borrow::Cow;
use vl3c_ir::DType;

#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// A row-major tensor. `data.len()` must equal the product of `shape` (the executor checks the
/// tensors it is handed).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Applies a generic expression to the vector inside any `TensorData`, keeping the variant.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $crate::TensorData::F32($body),
            $crate::TensorData::F16($v) => $crate::TensorData::F16($body),
            $crate::TensorData::BF16($v) => $crate::TensorData::BF16($body),
            $crate::TensorData::I32($v) => $crate::TensorData::I32($body),
            $crate::TensorData::I64($v) => $crate::TensorData::I64($body),
            $crate::TensorData::Bool($v) => $crate::TensorData::Bool($body),
        }
    };
}
pub(crate) use map_data;

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rounds f32 values into a float dtype (round-to-nearest-even, as torch).
    pub fn from_f32(dtype: DType, v: Vec<f32>) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(v),
            DType::F16 => TensorData::F16(v.into_iter().map(f16::from_f32).collect()),
            DType::BF16 => TensorData::BF16(v.into_iter().map(bf16::from_f32).collect()),
            // Non-float targets go through the cast rules so every caller agrees with `cast`.
            DType::I32 => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
            DType::I64 => TensorData::I64(v.into_iter().map(|x| x as i64).collect()),
            DType::Bool => TensorData::Bool(v.into_iter().map(|x| x != 0.0).collect()),
        }
    }

    /// Integer values into an integer dtype (i64 → i32 wraps, as torch).
    pub fn from_i64(dtype: DType, v: Vec<i64>) -> TensorData {
        match dtype {
            DType::I32 => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
            DType::I64 => TensorData::I64(v),
            DType::Bool => TensorData::Bool(v.into_iter().map(|x| x != 0).collect()),
            // Ints become floats through f32, as torch's conversion to reduced floats does.
            _ => TensorData::from_f32(dtype, v.into_iter().map(|x| x as f32).collect()),
        }
    }
}

impl Tensor {
    /// Fails when the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(format!(
                "{} elements do not fill shape {shape:?} ({n} elements)",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    fn checked(shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(shape, data).expect("tensor constructor")
    }

    /// Panics when `v.len()` does not match `shape` (use `Tensor::new` for a Result).
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::checked(shape, TensorData::F32(v))
    }
    pub fn f16(shape: Vec<usize>, v: Vec<f16>) -> Tensor {
        Tensor::checked(shape, TensorData::F16(v))
    }
    pub fn bf16(shape: Vec<usize>, v: Vec<bf16>) -> Tensor {
        Tensor::checked(shape, TensorData::BF16(v))
    }
    pub fn i32(shape: Vec<usize>, v: Vec<i32>) -> Tensor {
        Tensor::checked(shape, TensorData::I32(v))
    }
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::checked(shape, TensorData::I64(v))
    }
    pub fn bool(shape: Vec<usize>, v: Vec<bool>) -> Tensor {
        Tensor::checked(shape, TensorData::Bool(v))
    }

    /// f32 values rounded into `dtype` (any dtype; non-floats follow the cast rules).
    pub fn from_f32(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::checked(shape, TensorData::from_f32(dtype, v))
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// Every element as f32 (ints rounded to nearest, bools 0/1).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.as_f32().into_owned()
    }

    /// Borrows f32 data, converts anything else.
    pub fn as_f32(&self) -> Cow<'_, [f32]> {
        match &self.data {
            TensorData::F32(v) => Cow::Borrowed(v),
            TensorData::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::I32(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            TensorData::I64(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            TensorData::Bool(v) => Cow::Owned(v.iter().map(|&x| x as u8 as f32).collect()),
        }
    }

    /// Every element as i64 (floats truncated toward zero, bools 0/1).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => self.as_f32().iter().map(|&x| x as i64).collect(),
        }
    }

    /// Decodes little-endian bytes; `bytes` need not be aligned.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        let expected = n
            .checked_mul(dtype.size_bytes())
            .ok_or("byte size overflows")?;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes do not hold {dtype}{shape:?} ({expected} bytes)",
                bytes.len()
            ));
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::F16 => TensorData::F16(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DType::BF16 => TensorData::BF16(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DType::I32 => TensorData::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::I64 => TensorData::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// Decodes float bytes straight to f32 (one buffer, no intermediate tensor): how a bf16
    /// weight followed by a cast to f32 is materialized.
    pub fn f32_from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if !dtype.is_float() || bytes.len() != n * dtype.size_bytes() {
            return Tensor::from_bytes(dtype, shape, bytes)
                .map(|t| Tensor::f32(t.shape.clone(), t.to_f32_vec()));
        }
        let v = match dtype {
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            data: TensorData::F32(v),
        })
    }

    /// Little-endian bytes (bool as one byte 0/1).
    /// The elements' own memory: little-endian on every target vl3c runs on; bool as one byte.
    pub fn raw_bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F16(v) => bytemuck::cast_slice(v),
            TensorData::BF16(v) => bytemuck::cast_slice(v),
            TensorData::I32(v) => bytemuck::cast_slice(v),
            TensorData::I64(v) => bytemuck::cast_slice(v),
            TensorData::Bool(v) => bytemuck::cast_slice(v),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    /// Reads a safetensors view. `U8` becomes `I32` (the IR has no u8; values are kept).
    pub fn from_safetensors(view: &TensorView<'_>) -> Result<Tensor, String> {
        if view.dtype() == Dtype::U8 {
            let v = view.data().iter().map(|&b| b as i32).collect();
            return Tensor::new(view.shape().to_vec(), TensorData::I32(v));
        }
        let dtype = dtype_from_safetensors(view.dtype())?;
        Tensor::from_bytes(dtype, view.shape(), view.data())
    }
}

pub fn dtype_to_safetensors(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

/// The IR dtype of a safetensors dtype, where there is one.
pub fn dtype_from_safetensors(d: Dtype) -> Result<DType, String> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::BOOL => DType::Bool,
        other => return Err(format!("safetensors dtype {other:?} has no IR dtype")),
    })
}

/// Lets `safetensors::serialize` write tensors directly.
impl View for Tensor {
    fn dtype(&self) -> Dtype {
        dtype_to_safetensors(self.data.dtype())
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_bytes())
    }
    fn data_len(&self) -> usize {
        self.size_bytes()
    }
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        dtype_to_safetensors(self.data.dtype())
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_bytes())
    }
    fn data_len(&self) -> usize {
        self.size_bytes()
    }
}

impl<'a> TryFrom<&TensorView<'a>> for Tensor {
    type Error = String;
    fn try_from(view: &TensorView<'a>) -> Result<Tensor, String> {
        Tensor::from_safetensors(view)
    }
}
