//! `run --model`'s engine cache keys on content: a checkpoint file replaced by another of the
//! same size with its modification time restored is not served from the stale engine, and a
//! damaged cached engine is recompiled with one line saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
mod common;

use common::{root, s, stderr, tiny};

/// `vl3c run` on the tiny checkpoint at `model` with the engine cache `cache`.
fn run(model: &Path, cache: &Path) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_vl3c"))
        .env("VL3C_CACHE_DIR", cache)
        .args([
            "run",
            "--model",
            s(model),
            "--image",
            s(&root().join("examples/picture.png")),
            "--prompt",
            "What is in this picture?",
            "--max-new-tokens",
            "2",
        ])
        .output()
        .expect("vl3c runs");
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// A copy of the tiny checkpoint to change.
fn checkpoint() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

/// The one engine in the cache.
fn engine(cache: &Path) -> PathBuf {
    let engines: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    assert_eq!(engines.len(), 1, "{engines:?}");
    engines[0].clone()
}

fn weights_sha(engine: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(engine.join("manifest.json")).unwrap()).unwrap();
    m["source"]["files"]["model.safetensors"]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn set_mtime(path: &Path, t: std::time::SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn a_same_size_same_mtime_replacement_recompiles() {
    let (model, cache) = (checkpoint(), tempfile::tempdir().unwrap());
    let first = run(model.path(), cache.path());
    let before = weights_sha(&engine(cache.path()));
    assert!(
        !stderr(&first).contains("recompiling"),
        "{}",
        stderr(&first)
    );

    // Unchanged: served from the cache.
    let again = run(model.path(), cache.path());
    assert!(
        !stderr(&again).contains("recompiling"),
        "{}",
        stderr(&again)
    );
    assert_eq!(weights_sha(&engine(cache.path())), before);

    // Another weight value, same size, the old modification time put back, renamed over the
    // original as a download tool would.
    let path = model.path().join("model.safetensors");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tmp = model.path().join("model.safetensors.part");
    std::fs::write(&tmp, &bytes).unwrap();
    set_mtime(&tmp, mtime);
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

    let o = run(model.path(), cache.path());
    let err = stderr(&o);
    assert!(
        err.contains("changed since its cached engine was compiled; recompiling"),
        "{err}"
    );
    let after = weights_sha(&engine(cache.path()));
    assert_ne!(
        after, before,
        "the engine was compiled from the new weights"
    );
    assert_eq!(after, vl3c_engine::sha256_hex(&bytes));

    // The same in place (same inode): the change time still moves.
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    set_mtime(&path, mtime);
    let o = run(model.path(), cache.path());
    assert!(stderr(&o).contains("recompiling"), "{}", stderr(&o));
    assert_eq!(weights_sha(&engine(cache.path())), before);

    // Touched but not changed: hashed again, found equal, not recompiled.
    set_mtime(&path, std::time::SystemTime::now());
    let o = run(model.path(), cache.path());
    assert!(!stderr(&o).contains("recompiling"), "{}", stderr(&o));
}

/// A way to damage an engine directory, and what it is called.
type Damage = (&'static str, fn(&Path));

#[test]
fn a_damaged_cached_engine_is_recompiled() {
    let (model, cache) = (checkpoint(), tempfile::tempdir().unwrap());
    run(model.path(), cache.path());
    let damage: [Damage; 3] = [
        ("truncated weights.bin", |e| {
            let f = std::fs::File::options()
                .write(true)
                .open(e.join("weights.bin"))
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }),
        ("deleted plan.json", |e| {
            std::fs::remove_file(e.join("plan.json")).unwrap()
        }),
        ("a flipped byte in graphs.vir", |e| {
            let p = e.join("graphs.vir");
            let mut b = std::fs::read(&p).unwrap();
            b[10] ^= 0x20;
            std::fs::write(&p, b).unwrap();
        }),
    ];
    for (what, f) in damage {
        f(&engine(cache.path()));
        let o = run(model.path(), cache.path());
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("recompiling")).collect();
        assert_eq!(lines.len(), 1, "{what}: {err}");
        assert!(
            lines[0].contains("the cached engine is damaged"),
            "{what}: {err}"
        );
        // Repaired: the next run loads it without a word.
        let o = run(model.path(), cache.path());
        assert!(
            !stderr(&o).contains("recompiling"),
            "{what}: {}",
            stderr(&o)
        );
    }
}
