//! `vl3c run --model DIR` compiles the checkpoint once into a cache directory and runs the
//! engine from there.
//!
//! The cache keys on content: an engine is served only for a checkpoint whose files have the
//! sha256s it was compiled from. Hashing gigabytes on every run would cost more than a short run,
//! so beside each engine `<key>.sources.json` records every checkpoint file's stat (size,
//! modification and change times, inode, device) with its sha256: a file whose stat is unchanged
//! keeps its recorded hash, and only a file whose stat changed is hashed again. A file replaced by
//! one of the same size with its mtime restored still has a new ctime (and, renamed over, a new
//! inode), so it is hashed, and its new hash recompiles the engine.
//!
//! The directory (`<key>`) is named after vl3c's version, the engine format and the
//! checkpoint's path; one engine per checkpoint path, replaced when the content changes. A cached
//! engine that fails to load (truncated, a file deleted, a checksum that no longer matches) is
//! recompiled with one line saying so, never a permanent error.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vl3c_driver::CpuTarget;
use vl3c_engine::{sha256_file, sha256_hex, EngineError, Manifest};
use vl3c_frontends::limits::{read_bounded, MAX_INDEX_BYTES};
use vl3c_runtime::engine::{compile, Engine, Error as EngineLoadError};

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

/// What `stat` says of a checkpoint file: any change means its recorded hash is not trusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Stat {
    bytes: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Recorded {
    stat: Stat,
    sha256: String,
}

/// `<key>.sources.json`: every regular file of the checkpoint when its engine was compiled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Sources {
    files: BTreeMap<String, Recorded>,
}

fn stat_of(meta: &std::fs::Metadata) -> Stat {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    Stat {
        bytes: meta.len(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

/// The checkpoint's regular files (symbolic links followed: a Hugging Face snapshot links its
/// files to blobs) with their stats, by name.
fn stat_dir(dir: &Path) -> Result<BTreeMap<String, Stat>> {
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        if meta.is_file() {
            out.insert(e.file_name().to_string_lossy().into_owned(), stat_of(&meta));
        }
    }
    Ok(out)
}

/// Every file of `stats` with its sha256: the recorded one where the stat is unchanged, else
/// hashed now. Returns them and the bytes hashed.
fn hash_dir(dir: &Path, stats: BTreeMap<String, Stat>, known: &Sources) -> Result<(Sources, u64)> {
    let mut files = BTreeMap::new();
    let mut hashed = 0;
    for (name, stat) in stats {
        let sha256 = match known.files.get(&name) {
            Some(r) if r.stat == stat => r.sha256.clone(),
            _ => {
                hashed += stat.bytes;
                sha256_file(&dir.join(&name))?.sha256
            }
        };
        files.insert(name, Recorded { stat, sha256 });
    }
    Ok((Sources { files }, hashed))
}

fn hashes(s: &Sources) -> BTreeMap<&str, &str> {
    s.files
        .iter()
        .map(|(n, r)| (n.as_str(), r.sha256.as_str()))
        .collect()
}

/// The cache directory of `dir` (canonical): vl3c's version, the engine format (an engine of
/// another format would be refused at load) and the path.
fn cache_key(dir: &Path) -> String {
    let text = format!(
        "vl3c {} format {}\n{}\n",
        env!("CARGO_PKG_VERSION"),
        vl3c_engine::FORMAT_VERSION,
        dir.display()
    );
    sha256_hex(text.as_bytes())[..16].to_string()
}

/// Whether the engine at `dest` was compiled from exactly `sources`: its manifest's hashes of
/// config.json and of every checkpoint file it read agree with them (they were hashed apart, the
/// manifest's during the compile, so a file changed while compiling is caught too).
fn manifest_matches(dest: &Path, sources: &Sources) -> bool {
    let path = dest.join(vl3c_engine::MANIFEST);
    let Ok(bytes) = read_bounded(&path, MAX_INDEX_BYTES, "manifest.json") else {
        return false;
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
        return false;
    };
    let have = hashes(sources);
    have.get("config.json") == Some(&m.source.config_sha256.as_str())
        && m.source
            .files
            .iter()
            .all(|(n, e)| have.get(n.as_str()) == Some(&e.sha256.as_str()))
}

fn read_sources(path: &Path) -> Option<Sources> {
    let bytes = read_bounded(path, MAX_INDEX_BYTES, "the engine cache's sources").ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_sources(path: &Path, s: &Sources) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// The cached engine of `model_dir`, compiled first when absent or compiled from other content.
/// Compiles into a scratch directory and renames it into place, so an interrupted compile never
/// leaves a half engine.
pub fn ensure_engine(
    model_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<PathBuf> {
    let dir = model_dir
        .canonicalize()
        .with_context(|| format!("{}: cannot open", model_dir.display()))?;
    let root = cache_root();
    let key = cache_key(&dir);
    let dest = root.join(&key);
    let record = root.join(format!("{key}.sources.json"));
    let known = read_sources(&record).unwrap_or_default();
    let stats = stat_dir(&dir)?;
    let unchanged = !known.files.is_empty()
        && stats
            .iter()
            .all(|(n, s)| known.files.get(n).is_some_and(|r| r.stat == *s))
        && stats.len() == known.files.len();
    let cached = dest.join(vl3c_engine::MANIFEST).is_file();
    if cached && unchanged {
        return Ok(dest);
    }
    // Some stat changed (or nothing is recorded): hash what changed and compare content.
    let (now, _) = hash_dir(&dir, stats, &known)?;
    if cached && hashes(&now) == hashes(&known) && manifest_matches(&dest, &now) {
        write_sources(&record, &now)?;
        return Ok(dest);
    }
    if cached {
        eprintln!(
            "vl3c: {} changed since its cached engine was compiled; recompiling",
            dir.display()
        );
    }
    compile_into(&dir, &root, &dest, progress)?;
    write_sources(&record, &now)?;
    Ok(dest)
}

fn compile_into(
    dir: &Path,
    root: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<()> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("{}: cannot create the engine cache", root.display()))?;
    let scratch = root.join(format!(".compiling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    compile(dir, &mut CpuTarget::default(), false, &scratch, progress)?;
    // The stale engine goes first: a directory is not renamed over a non-empty one.
    let _ = std::fs::remove_dir_all(dest);
    match std::fs::rename(&scratch, dest) {
        Ok(()) => Ok(()),
        // Another process finished the same engine first: use theirs.
        Err(_) if dest.join(vl3c_engine::MANIFEST).is_file() => {
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "{}: cannot move the compiled engine into the cache",
                dest.display()
            )
        }),
    }
}

/// The cached engine of `model_dir` loaded by `load`; a cached engine that does not load as an
/// engine (a damaged file, a checksum mismatch, one this CPU cannot run) is recompiled once,
/// with one line on stderr saying why.
pub fn load_cached(
    model_dir: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
    load: &mut dyn FnMut(&Path) -> Result<Engine>,
) -> Result<Engine> {
    let dest = ensure_engine(model_dir, progress)?;
    match load(&dest) {
        Err(e) if damaged(&e, &dest) => {
            eprintln!("vl3c: the cached engine is damaged ({e:#}); recompiling");
            let _ = std::fs::remove_dir_all(&dest);
            let dest = ensure_engine(model_dir, progress)?;
            load(&dest)
        }
        other => other,
    }
}

/// Whether `e`, from loading the cached engine `dest`, says the engine itself is bad: one of its
/// files (size, checksum, content), or an engine this vl3c or CPU cannot run. An error about the
/// request (a `--device` for a CPU engine, which names the directory) or the model is not.
fn damaged(e: &anyhow::Error, dest: &Path) -> bool {
    match e.downcast_ref::<EngineLoadError>() {
        Some(EngineLoadError::Format(EngineError::File { path, .. })) => {
            path.starts_with(dest) && path != dest
        }
        Some(EngineLoadError::Format(EngineError::Incompatible(_))) => true,
        _ => false,
    }
}
