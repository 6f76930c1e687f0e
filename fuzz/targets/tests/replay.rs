//! Every committed corpus input and every regression input (a crash a fuzzer once found) runs
//! through its target's body: a panic fails the test, so a fixed crash stays fixed.

use std::path::Path;

use vl3c_fuzz_targets::{repo_root, TARGETS};

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let root = repo_root().join("fuzz").join(kind);
    let mut total = 0;
    for (name, body) in TARGETS {
        for path in inputs(&root.join(name)) {
            let data = std::fs::read(&path).unwrap();
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name}: {} panics", path.display());
            total += 1;
        }
    }
    total
}

#[test]
fn corpus_inputs_do_not_crash() {
    assert!(replay("corpus") > 0, "no corpus inputs");
}

#[test]
fn regression_inputs_do_not_crash() {
    replay("regressions");
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in TARGETS {
        let dir = repo_root().join("fuzz/corpus").join(name);
        assert!(!inputs(&dir).is_empty(), "{} has no seeds", dir.display());
    }
}
