//! `weights.bin`: tensors back to back, each at a multiple of [`ALIGN`] bytes so the loader can
//! view f32 data in the memory map directly (a map starts page-aligned) and the kernels' panel
//! loads never straddle a cache line at a tensor's start.

use crate::EngineError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use vl3c_ir::DType;

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

/// What a target reads a packed layout as: the bytes `PackedBf16 { n, k }` takes, or `None`
/// when the target reads no packed tensors (the CUDA target).
pub type PackedLen<'a> = &'a dyn Fn(usize, usize) -> Option<u64>;

impl TensorEntry {
    /// Checks the entry against the `file_len` bytes of the file it indexes, from nothing but
    /// the entry: a known dtype, a byte count that is exactly what the shape, dtype and layout
    /// take, an aligned offset, and bytes inside the file. An engine is untrusted data, and a
    /// kernel given fewer bytes than its shape says reads past them; after this check every
    /// reader may slice `bytes` by the shape. Returns the dtype.
    pub fn check(&self, file_len: u64, packed_len: PackedLen) -> Result<DType, String> {
        let dtype: DType = self
            .dtype
            .parse()
            .map_err(|_| format!("has unknown dtype `{}`", self.dtype))?;
        let numel = self
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| format!("has shape {:?}, too large", self.shape))?;
        let expected = match self.layout {
            TensorLayout::Raw => numel.checked_mul(dtype.size_bytes() as u64),
            TensorLayout::PackedBf16 { n, k } => {
                // Packed panels hold the exact bf16 values of an f32 `[k, n]` matmul weight.
                if self.shape != [k, n] || dtype != DType::F32 {
                    return Err(format!(
                        "is packed as [n={n}, k={k}] but declared {dtype}{:?} (expected f32[{k}, {n}])",
                        self.shape
                    ));
                }
                Some(
                    packed_len(n, k)
                        .ok_or("has a packed layout, which this target does not read")?,
                )
            }
        };
        if expected != Some(self.bytes) {
            let takes = expected.map_or("more than 2^64".to_string(), |b| b.to_string());
            return Err(format!(
                "has {} bytes, but {dtype}{:?} ({:?} layout) takes {takes}",
                self.bytes, self.shape, self.layout
            ));
        }
        if !self.offset.is_multiple_of(ALIGN) {
            return Err(format!(
                "starts at offset {}, not a multiple of {ALIGN}",
                self.offset
            ));
        }
        match self.offset.checked_add(self.bytes) {
            Some(end) if end <= file_len => Ok(dtype),
            _ => Err(format!(
                "spans bytes {}..{}+{}, past the end of the file ({file_len} bytes)",
                self.offset, self.offset, self.bytes
            )),
        }
    }
}

/// Checks every entry of a `weights.bin` index ([`TensorEntry::check`]) and that no two
/// tensors overlap (the writer places each once; entries sharing exactly one span are the same
/// tensor under two names). `index` names the file the index is in, for the message.
pub fn check_index(
    index: &Path,
    tensors: &BTreeMap<String, TensorEntry>,
    file_len: u64,
    packed_len: PackedLen,
) -> Result<(), EngineError> {
    for (name, e) in tensors {
        e.check(file_len, packed_len)
            .map_err(|m| EngineError::file(index, format!("tensor `{name}` {m}")))?;
    }
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|(_, e)| e.bytes > 0)
        .map(|(n, e)| (e.offset, e.offset + e.bytes, n.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((s0, e0, a), (s1, e1, b)) = (w[0], w[1]);
        if s1 < e0 && (s0, e0) != (s1, e1) {
            return Err(EngineError::file(
                index,
                format!("tensors `{a}` (bytes {s0}..{e0}) and `{b}` (bytes {s1}..{e1}) overlap"),
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(offset: u64, bytes: u64, dtype: &str, shape: Vec<usize>) -> TensorEntry {
        TensorEntry {
            offset,
            bytes,
            dtype: dtype.into(),
            shape,
            layout: TensorLayout::Raw,
        }
    }

    const NO_PACKED: PackedLen<'static> = &|_, _| None;

    #[test]
    fn an_entry_is_its_shape_times_its_dtype_inside_the_file() {
        assert_eq!(
            raw(64, 24, "f32", vec![2, 3]).check(88, NO_PACKED),
            Ok(DType::F32)
        );
        let err = |e: TensorEntry| e.check(1 << 20, NO_PACKED).unwrap_err();
        assert!(err(raw(0, 20, "f32", vec![2, 3])).contains("takes 24"));
        assert!(err(raw(0, 24, "i64", vec![2, 3])).contains("takes 48"));
        assert!(err(raw(0, 24, "f8", vec![2, 3])).contains("unknown dtype `f8`"));
        assert!(err(raw(32, 24, "f32", vec![2, 3])).contains("not a multiple of 64"));
        assert!(err(raw(u64::MAX - 63, 24, "f32", vec![2, 3])).contains("past the end"));
        // Dimensions whose product overflows are refused, not wrapped.
        let huge = 1usize << 40;
        assert!(err(raw(0, 0, "f32", vec![huge, huge])).contains("too large"));
        let packed = TensorEntry {
            layout: TensorLayout::PackedBf16 { n: 3, k: 2 },
            ..raw(0, 24, "f32", vec![2, 3])
        };
        assert!(err(packed.clone()).contains("this target does not read"));
        assert_eq!(packed.check(1 << 20, &|_, _| Some(24)), Ok(DType::F32));
    }

    #[test]
    fn overlapping_entries_are_refused() {
        let path = Path::new("plan.json");
        let mut index = BTreeMap::from([
            ("a".to_string(), raw(0, 128, "f32", vec![32])),
            ("b".to_string(), raw(128, 64, "f32", vec![16])),
        ]);
        check_index(path, &index, 192, NO_PACKED).unwrap();
        index.insert("c".into(), raw(64, 64, "f32", vec![16]));
        let err = check_index(path, &index, 192, NO_PACKED)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plan.json: tensors `a`") && err.contains("overlap"),
            "{err}"
        );
    }
}
