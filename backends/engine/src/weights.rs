//! `weights.bin`: tensors back to back, each at a multiple of [`ALIGN`] bytes so the loader can
//! view f32 data in the memory map directly (a map starts page-aligned) and the kernels' panel
//! loads never straddle a cache line at a tensor's start.

use crate::EngineError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const ALIGN: u64 = 64;

/// How a stored tensor's bytes are laid out.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum TensorLayout {
    /// Row-major little-endian in `dtype`, as the IR value (e.g. a fold's `[k, n]` f32).
    Raw,
    /// The CPU target's `vl3c_cpu::PackedBf16` panels of the `[n, k]` matrix `Wᵀ` of a `[k, n]` value
    /// (exact: every value was a bf16).
    PackedBf16 { n: usize, k: usize },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorEntry {
    pub offset: u64,
    pub bytes: u64,
    /// The IR dtype of the value (`f32`, `bf16`, ...).
    pub dtype: String,
    /// The IR shape of the value (for a packed weight, the `[k, n]` the matmul reads).
    pub shape: Vec<usize>,
    #[serde(flatten)]
    pub layout: TensorLayout,
}

pub struct WeightsWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    offset: u64,
}

impl WeightsWriter {
    pub fn create(path: &Path) -> Result<WeightsWriter, EngineError> {
        let f = std::fs::File::create(path)
            .map_err(|e| EngineError::file(path, format!("cannot create: {e}")))?;
        Ok(WeightsWriter {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(f),
            offset: 0,
        })
    }

    /// Appends `data` at the next aligned offset.
    pub fn push(
        &mut self,
        data: &[u8],
        dtype: &str,
        shape: Vec<usize>,
        layout: TensorLayout,
    ) -> Result<TensorEntry, EngineError> {
        let pad = self.offset.next_multiple_of(ALIGN) - self.offset;
        let err = |e: std::io::Error| EngineError::file(&self.path, format!("write failed: {e}"));
        self.out.write_all(&vec![0u8; pad as usize]).map_err(err)?;
        self.out.write_all(data).map_err(err)?;
        let entry = TensorEntry {
            offset: self.offset + pad,
            bytes: data.len() as u64,
            dtype: dtype.to_string(),
            shape,
            layout,
        };
        self.offset += pad + data.len() as u64;
        Ok(entry)
    }

    pub fn finish(mut self) -> Result<(), EngineError> {
        self.out
            .flush()
            .map_err(|e| EngineError::file(&self.path, format!("write failed: {e}")))
    }
}
