//! Reading and writing named tensors as safetensors files (the `eval` and `preprocess` contract).

use crate::exec::Tensor;
use crate::model::NamedTensors;
use safetensors::SafeTensors;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TensorFileError {
    path: String,
    message: String,
}

fn err(path: &Path, message: impl ToString) -> TensorFileError {
    TensorFileError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Every tensor of the file; u8 tensors are read as i32 (the IR has no u8).
pub fn read_tensors(path: &Path) -> Result<NamedTensors, TensorFileError> {
    let what = "a safetensors file";
    let bytes =
        vl3c_frontends::limits::read_bounded(path, vl3c_frontends::limits::MAX_INPUTS_BYTES, what)
            .map_err(|e| err(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = Tensor::from_safetensors(&view)
                .map_err(|e| err(path, format!("tensor `{name}`: {e}")))?;
            Ok((name, t))
        })
        .collect()
}

pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<(), TensorFileError> {
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.to_string(), *t)), None, path)
        .map_err(|e| err(path, e))
}
