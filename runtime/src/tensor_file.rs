//! Reading and writing named tensors as safetensors files (the `eval` and `preprocess` contract).

use crate::exec::Tensor;
use crate::model::NamedTensors;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use vl3c_ir::DType;

#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

fn err(path: &Path, message: impl ToString) -> TensorFileError {
    TensorFileError::Io { path: path.display().to_string(), message: message.to_string() }
}

fn dtype_of(dt: Dtype) -> Option<DType> {
    Some(match dt {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

fn safetensors_dtype(dt: DType) -> Dtype {
    match dt {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

pub fn read_tensors(path: &Path) -> Result<NamedTensors, TensorFileError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = NamedTensors::new();
    for (name, view) in st.tensors() {
        let tensor = if view.dtype() == Dtype::U8 {
            let values = view.data().iter().map(|&b| b as i64).collect();
            Tensor::i64(view.shape().to_vec(), values)
        } else {
            let dtype = dtype_of(view.dtype())
                .ok_or_else(|| err(path, format!("tensor `{name}` has dtype {:?}, which vl3c does not read", view.dtype())))?;
            Tensor::from_bytes(dtype, view.shape(), view.data()).map_err(|e| err(path, format!("tensor `{name}`: {e}")))?
        };
        out.insert(name, tensor);
    }
    Ok(out)
}

pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<(), TensorFileError> {
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> =
        tensors.iter().map(|(n, t)| (n.to_string(), t.to_bytes(), safetensors_dtype(t.dtype()), t.shape.clone())).collect();
    let views = bytes
        .iter()
        .map(|(n, b, dt, shape)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), b).map(|v| (n.clone(), v)).map_err(|e| err(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| err(path, e))
}
