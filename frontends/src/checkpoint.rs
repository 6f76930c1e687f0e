//! Memory-mapped safetensors checkpoints (single file, sharded with an index, or a bare
//! directory of `*.safetensors`). Tensor data is never copied: every [`TensorRef`] borrows
//! its bytes from the mapping, so opening a 15 GB checkpoint costs only its headers.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;
use vl3c_ir::DType;

use crate::config::ModelConfig;
use crate::error::FrontendError;
use crate::names::{self, ExpectedWeight, Part};

/// A tensor inside a mapped file. `bytes` is little-endian and may be unaligned.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
    pub file: &'a Path,
    pub stored_name: &'a str,
}

impl TensorRef<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Decodes a float tensor to f32 (this one does allocate); `None` for integer dtypes.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let b = self.bytes;
        Some(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return None,
        })
    }
}

/// A stored tensor the reader deliberately does not expose, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredTensor {
    pub stored_name: String,
    pub file: PathBuf,
    pub reason: String,
}

struct MappedFile {
    path: PathBuf,
    label: String,
    mmap: Mmap,
}

struct Entry {
    file: usize,
    stored_name: String,
    dtype_name: String,
    dtype: Option<DType>,
    shape: Vec<usize>,
    /// Absolute byte range inside the mapping.
    range: Range<usize>,
}

/// An opened, validated checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
    files: Vec<MappedFile>,
    /// Keyed by canonical (transformers) name.
    tensors: BTreeMap<String, Entry>,
    ignored: Vec<IgnoredTensor>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FrontendError + '_ {
    move |source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Checkpoint {
    /// Opens `dir` (config.json plus weights) and checks the weights against the config.
    pub fn open(dir: &Path) -> Result<Checkpoint, FrontendError> {
        let config = ModelConfig::from_dir(dir)?;
        let config_label = dir.join("config.json").display().to_string();
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let (paths, index, weights_label) = if single.is_file() {
            (vec![single.clone()], None, single.display().to_string())
        } else if index_path.is_file() {
            let (paths, map) = read_index(dir, &index_path)?;
            (paths, Some(map), index_path.display().to_string())
        } else {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io_err(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
                .collect();
            if paths.is_empty() {
                return Err(FrontendError::NoWeights {
                    dir: dir.to_path_buf(),
                });
            }
            paths.sort();
            (paths, None, dir.display().to_string())
        };

        let mut ckpt = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files: Vec::new(),
            tensors: BTreeMap::new(),
            ignored: Vec::new(),
        };
        let mut by_stored: HashMap<String, usize> = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(io_err(&path))?;
            let label = path.display().to_string();
            let len = file.metadata().map_err(io_err(&path))?.len();
            if len < 8 {
                return Err(FrontendError::Truncated {
                    file: label,
                    message: format!(
                        "the file is {len} bytes, shorter than the 8-byte header length prefix"
                    ),
                });
            }
            // SAFETY: the mapping is read-only; like every mmap-based loader we rely on the
            // checkpoint not being truncated by another process while it is open.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io_err(&path))?;
            let file_idx = ckpt.files.len();
            for raw in parse_header(&label, &mmap)? {
                if let Some(&prev) = by_stored.get(&raw.name) {
                    return Err(FrontendError::DuplicateTensor {
                        tensor: raw.name,
                        first: ckpt.files[prev].label.clone(),
                        second: label,
                    });
                }
                by_stored.insert(raw.name.clone(), file_idx);
                let canonical = names::canonical_name(ckpt.config.layout, &raw.name);
                let entry = Entry {
                    file: file_idx,
                    dtype: ir_dtype(&raw.dtype),
                    dtype_name: raw.dtype,
                    stored_name: raw.name,
                    shape: raw.shape,
                    range: raw.range,
                };
                // Two stored names can map to one canonical name (e.g. `model.norm.weight` and
                // `model.language_model.norm.weight` in a DAMO file); silently picking one would be a guess.
                if let Some(prev) = ckpt.tensors.insert(canonical.clone(), entry) {
                    let first = ckpt
                        .files
                        .get(prev.file)
                        .map_or(label.clone(), |f| f.label.clone());
                    return Err(FrontendError::DuplicateTensor {
                        tensor: format!("{canonical}` (stored as `{}`", prev.stored_name),
                        first,
                        second: label,
                    });
                }
            }
            ckpt.files.push(MappedFile { path, label, mmap });
        }

        if let Some(map) = index {
            for (tensor, shard) in map {
                let found = by_stored
                    .get(&tensor)
                    .map(|&i| ckpt.files[i].path.file_name() == Some(shard.as_ref()));
                if found != Some(true) {
                    return Err(FrontendError::IndexMismatch {
                        index: weights_label,
                        shard,
                        tensor,
                    });
                }
            }
        }
        ckpt.validate(&weights_label, &config_label)?;
        Ok(ckpt)
    }

    fn validate(&mut self, weights_label: &str, config_label: &str) -> Result<(), FrontendError> {
        let expected = names::expected_weights(&self.config);
        let missing: Vec<&ExpectedWeight> = expected
            .iter()
            .filter(|w| !self.tensors.contains_key(&w.name))
            .collect();
        if let Some(first) = missing.first() {
            return Err(FrontendError::MissingTensor {
                file: weights_label.to_string(),
                tensor: names::file_name(self.config.layout, &first.name),
                canonical: first.name.clone(),
                part: first.part,
                others: missing.len() - 1,
            });
        }
        for w in &expected {
            let e = &self.tensors[&w.name];
            let file = self.files[e.file].label.clone();
            if !e.dtype.is_some_and(DType::is_float) {
                return Err(FrontendError::UnsupportedDtype {
                    file,
                    tensor: e.stored_name.clone(),
                    dtype: e.dtype_name.clone(),
                });
            }
            if e.shape != w.shape {
                return Err(FrontendError::ShapeMismatch {
                    file,
                    tensor: e.stored_name.clone(),
                    found: e.shape.clone(),
                    expected: w.shape.clone(),
                    config: config_label.to_string(),
                });
            }
        }

        let wanted: std::collections::HashSet<&str> =
            expected.iter().map(|w| w.name.as_str()).collect();
        let mut drop = Vec::new();
        for (canonical, e) in &self.tensors {
            if wanted.contains(canonical.as_str()) {
                continue;
            }
            if let Some((part, layer)) = names::layer_index(canonical) {
                let num_layers = match part {
                    Part::Vision => self.config.vision.num_hidden_layers,
                    _ => self.config.text.num_hidden_layers,
                };
                if layer >= num_layers {
                    return Err(FrontendError::LayerOutOfRange {
                        file: self.files[e.file].label.clone(),
                        tensor: e.stored_name.clone(),
                        part,
                        layer,
                        num_layers,
                        config: config_label.to_string(),
                    });
                }
            }
            // transformers re-ties lm_head to embed_tokens after loading, discarding a stored copy.
            let reason = if canonical == names::LM_HEAD && self.config.tie_word_embeddings {
                Some(
                    "tie_word_embeddings is true: the output projection is embed_tokens"
                        .to_string(),
                )
            } else if e.dtype.is_none() {
                Some(format!(
                    "dtype {} is not representable in vl3c and the model does not use this tensor",
                    e.dtype_name
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                drop.push((canonical.clone(), reason));
            }
        }
        for (canonical, reason) in drop {
            let e = self
                .tensors
                .remove(&canonical)
                .expect("key came from the map");
            self.ignored.push(IgnoredTensor {
                stored_name: e.stored_name,
                file: self.files[e.file].path.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// The tensor stored for `canonical` (a transformers name), borrowed from the mapping.
    /// A stored `lm_head.weight` is not returned when the embeddings are tied.
    pub fn tensor(&self, canonical: &str) -> Option<TensorRef<'_>> {
        let e = self.tensors.get(canonical)?;
        let f = &self.files[e.file];
        Some(TensorRef {
            dtype: e.dtype?,
            shape: &e.shape,
            bytes: &f.mmap[e.range.clone()],
            file: &f.path,
            stored_name: &e.stored_name,
        })
    }

    /// The output projection: `lm_head.weight`, or the embedding when tied.
    pub fn lm_head(&self) -> TensorRef<'_> {
        self.tensor(names::lm_head_source(&self.config))
            .expect("validated at open")
    }

    pub fn weight_dtype(&self, canonical: &str) -> Option<DType> {
        self.tensors.get(canonical).and_then(|e| e.dtype)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, in the order they were opened.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Each mapped file with its whole mapping (e.g. to check that tensor bytes lie inside it).
    pub fn mapped_files(&self) -> impl Iterator<Item = (&Path, &[u8])> {
        self.files.iter().map(|f| (f.path.as_path(), &f.mmap[..]))
    }

    /// Canonical names of the tensors [`Checkpoint::tensor`] returns, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn ignored_tensors(&self) -> &[IgnoredTensor] {
        &self.ignored
    }

    /// Total tensor data bytes (headers and ignored tensors excluded).
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(|e| e.range.len()).sum()
    }

    /// Number of tensors of each dtype.
    pub fn dtypes(&self) -> BTreeMap<DType, usize> {
        let mut out = BTreeMap::new();
        for dt in self.tensors.values().filter_map(|e| e.dtype) {
            *out.entry(dt).or_insert(0) += 1;
        }
        out
    }
}

/// Reads the shard index; every listed shard must exist. Returns shards in first-listed
/// order and the (tensor → shard) map.
/// (tensor, shard file name) pairs from an index's weight_map.
type WeightMap = Vec<(String, String)>;

fn read_index(dir: &Path, path: &Path) -> Result<(Vec<PathBuf>, WeightMap), FrontendError> {
    let label = path.display().to_string();
    let what = "model.safetensors.index.json";
    let text = crate::limits::read_bounded_to_string(path, crate::limits::MAX_INDEX_BYTES, what)
        .map_err(io_err(path))?;
    let root: Value = serde_json::from_str(&text).map_err(|e| FrontendError::json(&label, &e))?;
    let Some(Value::Object(map)) = root.get("weight_map") else {
        return Err(FrontendError::config(&label, "missing `weight_map` object"));
    };
    let mut shards: Vec<PathBuf> = Vec::new();
    let mut pairs = Vec::new();
    for (tensor, shard) in map {
        let Some(shard) = shard.as_str() else {
            return Err(FrontendError::config(
                &label,
                format!("weight_map entry for `{tensor}` must be a file name, got {shard}"),
            ));
        };
        let shard_path = dir.join(shard);
        if !shards.contains(&shard_path) {
            if !shard_path.is_file() {
                if shard_path.exists() {
                    // A device or a directory: say what it is rather than that it is missing.
                    crate::limits::check_file(&shard_path, u64::MAX, "a safetensors shard")
                        .map_err(io_err(&shard_path))?;
                }
                return Err(FrontendError::MissingShard {
                    index: label,
                    shard: shard.to_string(),
                });
            }
            shards.push(shard_path);
        }
        pairs.push((tensor.clone(), shard.to_string()));
    }
    Ok((shards, pairs))
}

struct RawEntry {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    range: Range<usize>,
}

fn ir_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

/// Element size of safetensors dtypes; `None` for sub-byte or unknown ones (no size check then).
fn safetensors_elem_size(name: &str) -> Option<usize> {
    Some(match name {
        "F64" | "I64" | "U64" | "C64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "BOOL" | "I8" | "U8" | "E8M0" => 1,
        n if n.starts_with("F8_") => 1,
        _ => return None,
    })
}

/// Parses and checks a safetensors header; ranges are absolute offsets into `bytes`.
fn parse_header(file: &str, bytes: &[u8]) -> Result<Vec<RawEntry>, FrontendError> {
    let truncated = |message: String| FrontendError::Truncated {
        file: file.to_string(),
        message,
    };
    let malformed = |message: String| FrontendError::MalformedHeader {
        file: file.to_string(),
        message,
    };
    let len = bytes.len() as u64;
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("caller checked len >= 8"));
    if header_len > len - 8 {
        return Err(truncated(format!(
            "the header length prefix says {header_len} bytes, but only {} bytes follow it",
            len - 8
        )));
    }
    let data_start = 8 + header_len as usize;
    let data_len = bytes.len() - data_start;
    let root: Value = serde_json::from_slice(&bytes[8..data_start]).map_err(|e| {
        malformed(format!(
            "invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(map) = root else {
        return Err(malformed("the header is not a JSON object".into()));
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| malformed(format!("tensor `{name}`: {what}"));
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing or non-string `dtype`"))?;
        let ints = |key: &str| -> Option<Vec<usize>> {
            info.get(key)?
                .as_array()?
                .iter()
                .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect()
        };
        let shape =
            ints("shape").ok_or_else(|| bad("`shape` must be a list of non-negative integers"))?;
        let offsets = ints("data_offsets")
            .ok_or_else(|| bad("`data_offsets` must be two non-negative integers"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("`data_offsets` must be two non-negative integers"));
        };
        if begin > end {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end > data_len {
            return Err(truncated(format!(
                "tensor `{name}` has data_offsets [{begin}, {end}], past the end of the data section ({data_len} bytes)"
            )));
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if let Some(elem) = safetensors_elem_size(dtype) {
            let expected = numel.and_then(|n| n.checked_mul(elem));
            if expected != Some(end - begin) {
                return Err(FrontendError::DataSize {
                    file: file.to_string(),
                    tensor: name,
                    shape,
                    dtype: dtype.to_string(),
                    expected: expected.unwrap_or(usize::MAX),
                    found: end - begin,
                });
            }
        }
        out.push(RawEntry {
            name,
            dtype: dtype.to_string(),
            shape,
            range: data_start + begin..data_start + end,
        });
    }
    let mut order: Vec<&RawEntry> = out.iter().collect();
    order.sort_by_key(|e| (e.range.start, e.range.end));
    for pair in order.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(malformed(format!(
                "the data of tensors `{}` and `{}` overlap (data_offsets [{}, {}] and [{}, {}])",
                pair[0].name,
                pair[1].name,
                pair[0].range.start - data_start,
                pair[0].range.end - data_start,
                pair[1].range.start - data_start,
                pair[1].range.end - data_start
            )));
        }
    }
    Ok(out)
}
