//! `vl3c run --model DIR` compiles the checkpoint once into a cache directory and runs the
//! engine from there. The key covers what the engine depends on, so a changed checkpoint or a
//! new vl3c gets a fresh engine while repeated runs load the cached one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vl3c_driver::CpuTarget;
use vl3c_engine::sha256_hex;
use vl3c_runtime::engine::compile;

/// `$VL3C_CACHE_DIR`, else `$XDG_CACHE_HOME/vl3c`, else `~/.cache/vl3c`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("VL3C_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vl3c")
}

/// vl3c's version and engine format version (a cached engine of another format would be
/// refused at load), the checkpoint's absolute path, config.json's bytes, and every other file's
/// name, size and modification time (hashing gigabytes of weights on every run would cost more
/// than the run).
fn cache_key(model_dir: &Path) -> Result<String> {
    let dir = model_dir
        .canonicalize()
        .with_context(|| format!("{}: cannot open", model_dir.display()))?;
    let mut text = format!(
        "vl3c {} format {}\n{}\n",
        env!("CARGO_PKG_VERSION"),
        vl3c_engine::FORMAT_VERSION,
        dir.display()
    );
    let config = vl3c_frontends::limits::read_bounded(
        &dir.join("config.json"),
        vl3c_frontends::limits::MAX_CONFIG_BYTES,
        "config.json",
    )
    .with_context(|| format!("{}: no config.json", dir.display()))?;
    text.push_str(&sha256_hex(&config));
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let meta = e.metadata()?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        text.push_str(&format!(
            "\n{} {} {modified}",
            e.file_name().to_string_lossy(),
            meta.len()
        ));
    }
    Ok(sha256_hex(text.as_bytes())[..16].to_string())
}

/// The cached engine of `model_dir`, compiled first if absent. Compiles into a scratch
/// directory and renames it into place, so an interrupted compile never leaves a half engine.
pub fn ensure_engine(
    model_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<PathBuf> {
    let root = cache_root();
    let dest = root.join(cache_key(model_dir)?);
    if dest.join("manifest.json").is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&root)
        .with_context(|| format!("{}: cannot create the engine cache", root.display()))?;
    let scratch = root.join(format!(".compiling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    compile(
        model_dir,
        &mut CpuTarget::default(),
        false,
        &scratch,
        progress,
    )?;
    match std::fs::rename(&scratch, &dest) {
        Ok(()) => Ok(dest),
        // Another process finished the same engine first: use theirs.
        Err(_) if dest.join("manifest.json").is_file() => {
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(dest)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "{}: cannot move the compiled engine into the cache",
                dest.display()
            )
        }),
    }
}
