//! The target-neutral part of an engine directory (see ARCHITECTURE.md, "Engine format"):
//!
//! * `manifest.json` — [`Manifest`]: format version, target, required CPU features, the source
//!   checkpoint's hashes, and the size and sha256 of every other file.
//! * `graphs.vir` — the optimized graphs in IR text form (vision_m1, vision_m2, projector,
//!   prefill, decode); their symbols with bounds are the engine's shape constraints.
//! * `config.json` and, when the checkpoint has them, `tokenizer.json`,
//!   `preprocessor_config.json`, `video_preprocessor_config.json`, `generation_config.json`, copied verbatim.
//!
//! Everything else is the target's section: what its [`crate::Target::emit`] wrote (the CPU's
//! `plan.json`, `weights.bin`, `kernels.o`; the CUDA target's `cuda/`), listed in the manifest
//! like every other file.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use vl3c_frontends::limits::{read_bounded, MAX_INDEX_BYTES};

/// Bumped whenever a file's meaning changes; a loader accepts exactly its own version.
/// 3: the CPU plan records each claim's operands (attention sources, cache rows, SwiGLU columns).
/// 4: `kernels.o`'s symbols carry each kernel's compiled-in constants (row width, eps).
pub const FORMAT_VERSION: u32 = 4;
pub const MANIFEST: &str = "manifest.json";
pub const GRAPHS: &str = "graphs.vir";
/// Checkpoint files copied into the engine when present (config.json is required).
pub const COPIED: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
];
/// The graphs every engine holds, in `graphs.vir` order.
pub const GRAPH_NAMES: [&str; 5] = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Incompatible(String),
    /// The target could not build what the graphs need (a tool missing, a kernel failing to compile).
    #[error("{0}")]
    Build(String),
    #[error("target `{0}` is not supported yet (expected `cpu`, `cuda` or `tensorrt`)")]
    UnsupportedTarget(String),
}

impl EngineError {
    pub fn file(path: &Path, message: impl Into<String>) -> EngineError {
        EngineError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// Where the engine came from. Every checkpoint file is hashed whole (sha256), so an engine can
/// be matched to its checkpoint exactly; `config_sha256` alone identifies the architecture.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub config_sha256: String,
    /// Checkpoint file name (safetensors shards, index) → size and sha256.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub target: String,
    /// CPU features the engine's native code needs (names as `is_x86_feature_detected!`).
    pub cpu_features: Vec<String>,
    /// Features the kernels use when present, with a portable fallback (informational).
    pub cpu_features_optional: Vec<String>,
    pub vl3c_version: String,
    pub source: Source,
    /// Every other file of the engine → size and sha256.
    pub files: BTreeMap<String, FileEntry>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Streams a file through sha256 (checkpoints can be many GB).
pub fn sha256_file(path: &Path) -> Result<FileEntry, EngineError> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::file(path, e.to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| EngineError::file(path, e.to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileEntry {
        bytes,
        sha256: hex(&h.finalize()),
    })
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether this CPU has feature `name` (an `is_x86_feature_detected!` name). Unknown names are
/// absent: an engine asking for a feature this build cannot even name must not load.
pub fn cpu_has(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The detection macro wants a literal, so each name is spelled out.
        match name {
            "sse2" => is_x86_feature_detected!("sse2"),
            "sse3" => is_x86_feature_detected!("sse3"),
            "ssse3" => is_x86_feature_detected!("ssse3"),
            "sse4.1" => is_x86_feature_detected!("sse4.1"),
            "sse4.2" => is_x86_feature_detected!("sse4.2"),
            "popcnt" => is_x86_feature_detected!("popcnt"),
            "avx" => is_x86_feature_detected!("avx"),
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            "bmi1" => is_x86_feature_detected!("bmi1"),
            "bmi2" => is_x86_feature_detected!("bmi2"),
            "lzcnt" => is_x86_feature_detected!("lzcnt"),
            "f16c" => is_x86_feature_detected!("f16c"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512bw" => is_x86_feature_detected!("avx512bw"),
            "avx512vl" => is_x86_feature_detected!("avx512vl"),
            "avx512dq" => is_x86_feature_detected!("avx512dq"),
            "avx512cd" => is_x86_feature_detected!("avx512cd"),
            "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            "avx512fp16" => is_x86_feature_detected!("avx512fp16"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// Checks that `name` is a path relative to its directory that stays inside it: one or more
/// plain components (no `..`, no `.`, no root or drive, no empty name). The error says why not.
pub fn check_relative(name: &str) -> Result<(), &'static str> {
    use std::path::Component;
    if name.is_empty() || name.contains('\\') || name.contains('\0') {
        return Err("is not a plain relative path");
    }
    for c in Path::new(name).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("leaves the directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
            Component::CurDir => return Err("is not a plain relative path"),
        }
    }
    Ok(())
}

impl Manifest {
    /// Reads `dir/manifest.json` and checks that this build and this CPU can run the engine, an
    /// engine of `target`.
    pub fn read_and_check(dir: &Path, target: &str) -> Result<Manifest, EngineError> {
        let path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(EngineError::file(
                dir,
                "is not an engine directory (vl3c compile writes one)",
            ));
        }
        let text = read_bounded(&path, MAX_INDEX_BYTES, "an engine's manifest.json")
            .map_err(|e| EngineError::file(&path, format!("cannot read: {e}")))?;
        // The version first, from a loose parse, so a future format gets the version message
        // rather than a field error.
        let loose: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| EngineError::file(&path, format!("is not valid JSON: {e}")))?;
        match loose.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(EngineError::Incompatible(format!(
                    "{}: engine format version {v}, but this vl3c ({}) reads version {FORMAT_VERSION}; recompile the engine",
                    path.display(),
                    env!("CARGO_PKG_VERSION")
                )))
            }
            None => return Err(EngineError::file(&path, "has no format_version")),
        }
        let m: Manifest = serde_json::from_value(loose)
            .map_err(|e| EngineError::file(&path, format!("is malformed: {e}")))?;
        // Every name is joined onto a directory: one that leaves it (`../x`, `/etc/x`) would
        // have the loader read, and the cache hash, files outside the engine or checkpoint.
        for name in m.files.keys() {
            check_relative(name).map_err(|why| {
                EngineError::file(&path, format!("lists file `{name}`, which {why}"))
            })?;
        }
        for name in m.source.files.keys() {
            check_relative(name).map_err(|why| {
                EngineError::file(&path, format!("lists source file `{name}`, which {why}"))
            })?;
        }
        if m.target != target {
            return Err(EngineError::Incompatible(format!(
                "{}: engine was built for target `{}`, but this loader runs `{target}` engines",
                path.display(),
                m.target
            )));
        }
        if let Some(f) = m.cpu_features.iter().find(|f| !cpu_has(f)) {
            return Err(EngineError::Incompatible(format!(
                "engine needs CPU feature {f}, which this CPU lacks"
            )));
        }
        Ok(m)
    }

    /// Checks `name`'s bytes against the manifest (corruption, truncation, a swapped file).
    pub fn check_file(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        self.check_size(dir, name, bytes.len() as u64)?;
        self.check_sha256(dir, name, &sha256_hex(bytes))
    }

    /// Checks `name`'s size against the manifest.
    pub fn check_size(&self, dir: &Path, name: &str, bytes: u64) -> Result<(), EngineError> {
        let path = dir.join(name);
        let entry = self
            .files
            .get(name)
            .ok_or_else(|| EngineError::file(&path, "is not listed in manifest.json"))?;
        if bytes != entry.bytes {
            return Err(EngineError::file(
                &path,
                format!(
                    "has {bytes} bytes, the manifest says {} (engine corrupted)",
                    entry.bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks a sha256 (lowercase hex) computed while reading `name` against the manifest.
    pub fn check_sha256(&self, dir: &Path, name: &str, sha256: &str) -> Result<(), EngineError> {
        let path = dir.join(name);
        let entry = self
            .files
            .get(name)
            .ok_or_else(|| EngineError::file(&path, "is not listed in manifest.json"))?;
        if sha256 != entry.sha256 {
            return Err(EngineError::file(
                &path,
                "checksum mismatch (engine corrupted)",
            ));
        }
        Ok(())
    }

    /// Every listed file must exist, and `required` must be listed.
    pub fn require_files(&self, dir: &Path, required: &[&str]) -> Result<(), EngineError> {
        for name in self.files.keys() {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(EngineError::file(
                    &path,
                    "is missing (engine incomplete; recompile it)",
                ));
            }
        }
        for &name in [GRAPHS, "config.json"].iter().chain(required) {
            if !self.files.contains_key(name) {
                return Err(EngineError::file(
                    &dir.join(MANIFEST),
                    format!("does not list {name}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_relative;

    #[test]
    fn engine_relative_paths_stay_inside() {
        for ok in ["plan.json", "cuda/plan.json", "cuda/sm_90.cubin"] {
            assert_eq!(check_relative(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "cuda/../../x",
            "/etc/passwd",
            "./plan.json",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }
}
