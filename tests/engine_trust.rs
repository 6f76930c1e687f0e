//! An engine is untrusted data except its native code (`kernels.o`): every edit of a CPU
//! engine's plan, index or paths — with the manifest's checksums recomputed, so the edit passes
//! the checksum check as a deliberate one would — is one load error naming the file and the
//! entry, never a panic and never a read past a tensor.

use std::path::Path;
use std::sync::OnceLock;
use vl3c_driver::CpuTarget;
use vl3c_runtime::engine::{self, Engine};
mod common;

use common::fixture;

/// Each fixture compiled once per test binary; every test edits a copy.
fn compiled(name: &'static str) -> &'static Path {
    static DIRS: OnceLock<std::sync::Mutex<Vec<(&'static str, &'static Path)>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap();
    if let Some((_, p)) = dirs.iter().find(|(n, _)| *n == name) {
        return p;
    }
    let tmp = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    engine::compile(
        &fixture(name),
        &mut CpuTarget::default(),
        false,
        tmp.path(),
        &mut |_, _, _| {},
    )
    .unwrap_or_else(|e| panic!("{name}: compile: {e}"));
    dirs.push((name, tmp.path()));
    tmp.path()
}

fn copy_of(name: &'static str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(compiled(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

fn json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// Writes `bytes` as engine file `name` and lists its size and sha256 in the manifest.
fn rewrite(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
    let mut m = json(dir, "manifest.json");
    m["files"][name] = serde_json::json!({
        "bytes": bytes.len(),
        "sha256": vl3c_engine::sha256_hex(bytes),
    });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

fn edit_plan(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut plan = json(dir, "plan.json");
    f(&mut plan);
    rewrite(dir, "plan.json", &serde_json::to_vec(&plan).unwrap());
}

fn load_err(dir: &Path) -> String {
    match Engine::load(dir, 256, 1, &mut |_, _, _| {}) {
        Ok(_) => panic!("an edited engine loaded"),
        Err(e) => e.to_string(),
    }
}

/// The error names the file and contains every one of `needles`.
fn assert_err(dir: &Path, file: &str, needles: &[&str]) {
    let err = load_err(dir);
    assert!(err.contains(file), "`{file}` not named in: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The tensor of the first claim of `kind` in `graph`.
fn claimed_tensor(plan: &serde_json::Value, graph: &str, kind: &str) -> String {
    plan["graphs"][graph]["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} claim in {graph}"))["tensor"]
        .as_str()
        .unwrap()
        .to_string()
}

fn tensor<'a>(plan: &'a mut serde_json::Value, name: &str) -> &'a mut serde_json::Value {
    &mut plan["tensors"][name]
}

#[test]
fn a_byte_count_that_is_not_the_shape_times_the_dtype_is_refused() {
    // A matmul weight four bytes short: the GEMM would read past it.
    let e = copy_of("image_tied_f32");
    let t = claimed_tensor(&json(e.path(), "plan.json"), "prefill", "matmul");
    edit_plan(e.path(), |p| {
        let b = tensor(p, &t)["bytes"].as_u64().unwrap();
        tensor(p, &t)["bytes"] = (b - 4).into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` has "), "bytes, but f32["],
    );
    // A gather table one row short of its shape (the lookup would read past it).
    let e = copy_of("image_tied_f32");
    let t = claimed_tensor(&json(e.path(), "plan.json"), "prefill", "gather");
    edit_plan(e.path(), |p| {
        let s = tensor(p, &t)["shape"].as_array().unwrap().clone();
        let rows = s[0].as_u64().unwrap();
        tensor(p, &t)["shape"][0] = (rows + 1).into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` has "), "takes"],
    );
}

#[test]
fn an_offset_outside_the_file_misaligned_or_overlapping_is_refused() {
    let e = copy_of("image_tied_f32");
    let len = std::fs::metadata(e.path().join("weights.bin"))
        .unwrap()
        .len();
    let t = claimed_tensor(&json(e.path(), "plan.json"), "decode", "matmul");
    edit_plan(e.path(), |p| {
        tensor(p, &t)["offset"] = (len.next_multiple_of(64)).into()
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}`"), "past the end of the file"],
    );

    let e = copy_of("image_tied_f32");
    edit_plan(e.path(), |p| {
        let o = tensor(p, &t)["offset"].as_u64().unwrap();
        tensor(p, &t)["offset"] = (o + 4).into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}`"), "not a multiple of 64"],
    );

    // Two tensors sharing bytes: the largest tensor's start given to another one.
    let e = copy_of("image_tied_f32");
    let plan = json(e.path(), "plan.json");
    let by_size = |p: &serde_json::Value| {
        let mut v: Vec<(u64, String)> = p["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, t)| (t["bytes"].as_u64().unwrap(), n.clone()))
            .collect();
        v.sort();
        v
    };
    let sizes = by_size(&plan);
    let (big, small) = (&sizes[sizes.len() - 1].1, &sizes[sizes.len() - 2].1);
    edit_plan(e.path(), |p| {
        let o = tensor(p, big)["offset"].clone();
        tensor(p, small)["offset"] = o;
    });
    assert_err(
        e.path(),
        "plan.json",
        &["overlap", big.as_str(), small.as_str()],
    );
}

#[test]
fn a_dtype_that_is_unknown_or_not_the_graphs_is_refused() {
    let e = copy_of("image_tied_f32");
    let t = claimed_tensor(&json(e.path(), "plan.json"), "prefill", "matmul");
    edit_plan(e.path(), |p| tensor(p, &t)["dtype"] = "q4_k".into());
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` has unknown dtype `q4_k`")],
    );

    // An i64 matmul weight of the same shape: twice the bytes the entry lists.
    let e = copy_of("image_tied_f32");
    edit_plan(e.path(), |p| tensor(p, &t)["dtype"] = "i64".into());
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` has "), "i64["],
    );

    // Same size, other type: i32 where the matmul reads f32, a fold of i32 values.
    let e = copy_of("image_tied_f32");
    edit_plan(e.path(), |p| tensor(p, &t)["dtype"] = "i32".into());
    assert_err(
        e.path(),
        "plan.json",
        &["matmul claim on %", "does not match graphs.vir"],
    );

    let e = copy_of("image_tied_f32");
    let f = claimed_tensor(&json(e.path(), "plan.json"), "vision_m1", "fold");
    edit_plan(e.path(), |p| {
        let d = tensor(p, &f)["dtype"].as_str().unwrap().to_string();
        tensor(p, &f)["dtype"] = if d == "f32" { "i32" } else { "f32" }.into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &["fold claim on %", "does not match graphs.vir"],
    );
}

#[test]
fn a_shape_that_is_not_the_graphs_is_refused() {
    // The same bytes, the dimensions swapped.
    let e = copy_of("image_tied_f32");
    let t = claimed_tensor(&json(e.path(), "plan.json"), "prefill", "matmul");
    edit_plan(e.path(), |p| {
        let s = tensor(p, &t)["shape"].as_array().unwrap().clone();
        tensor(p, &t)["shape"] = serde_json::json!([s[1], s[0]]);
    });
    assert_err(
        e.path(),
        "plan.json",
        &["matmul claim on %", "does not match graphs.vir"],
    );

    let e = copy_of("image_tied_f32");
    let plan = json(e.path(), "plan.json");
    let fold = plan["graphs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|g| g["claims"].as_array().unwrap())
        .filter(|c| c["kind"] == "fold")
        .map(|c| c["tensor"].as_str().unwrap().to_string())
        .next()
        .expect("a fold");
    // The same elements with a leading unit axis.
    edit_plan(e.path(), |p| {
        let mut s = tensor(p, &fold)["shape"].as_array().unwrap().clone();
        s.insert(0, 1.into());
        tensor(p, &fold)["shape"] = s.into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &["fold claim on %", "does not match graphs.vir"],
    );
}

#[test]
fn a_raw_weight_of_another_type_is_refused() {
    let e = copy_of("image_tied_f32");
    let plan = json(e.path(), "plan.json");
    let Some(w) = plan["graphs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|g| g["weights"].as_array().unwrap())
        .map(|w| w.as_str().unwrap().to_string())
        .find(|w| plan["tensors"][w]["dtype"] == "f32")
    else {
        eprintln!("no raw f32 weight in the plan; nothing to edit");
        return;
    };
    edit_plan(e.path(), |p| tensor(p, &w)["dtype"] = "i32".into());
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{w}` is i32"), "reads weight"],
    );
}

#[test]
fn a_packed_layout_that_is_not_the_shape_is_refused() {
    let e = copy_of("video_bf16");
    let plan = json(e.path(), "plan.json");
    let (t, _) = plan["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, t)| t["layout"] == "packed_bf16")
        .expect("a packed weight in a bf16 engine");
    let t = t.clone();
    edit_plan(e.path(), |p| {
        let n = tensor(p, &t)["n"].as_u64().unwrap();
        tensor(p, &t)["n"] = (n + 32).into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` is packed as")],
    );

    // Packed panels of a wider matrix with a matching shape: the byte count gives it away.
    let e = copy_of("video_bf16");
    edit_plan(e.path(), |p| {
        let n = tensor(p, &t)["n"].as_u64().unwrap();
        tensor(p, &t)["n"] = (n + 32).into();
        tensor(p, &t)["shape"][1] = (n + 32).into();
    });
    assert_err(
        e.path(),
        "plan.json",
        &[&format!("tensor `{t}` has "), "takes"],
    );
}

#[test]
fn a_path_that_leaves_the_engine_is_refused() {
    for (field, name, why) in [
        ("files", "../outside.bin", "leaves the directory"),
        ("files", "cuda/../../x", "leaves the directory"),
        ("files", "/etc/passwd", "is an absolute path"),
        ("files", "./plan.json", "is not a plain relative path"),
    ] {
        let e = copy_of("image_tied_f32");
        let mut m = json(e.path(), "manifest.json");
        m[field][name] = serde_json::json!({"bytes": 0, "sha256": vl3c_engine::sha256_hex(b"")});
        std::fs::write(e.path().join("manifest.json"), m.to_string()).unwrap();
        assert_err(
            e.path(),
            "manifest.json",
            &[&format!("lists file `{name}`, which {why}")],
        );
    }
    let e = copy_of("image_tied_f32");
    let mut m = json(e.path(), "manifest.json");
    m["source"]["files"]["../../secret.safetensors"] =
        serde_json::json!({"bytes": 0, "sha256": vl3c_engine::sha256_hex(b"")});
    std::fs::write(e.path().join("manifest.json"), m.to_string()).unwrap();
    assert_err(
        e.path(),
        "manifest.json",
        &["lists source file `../../secret.safetensors`, which leaves the directory"],
    );
}

/// `kernels.o` with `from` replaced by `to` (same length) in its symbol table, re-listed.
fn edit_kernels(dir: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(dir.join("kernels.o")).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("`{from}` not in kernels.o"));
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    rewrite(dir, "kernels.o", &bytes);
}

#[test]
fn a_kernel_whose_abi_is_not_the_plans_is_refused() {
    // A row width compiled into the code other than the plan's: the first digit of the first
    // width in the symbol table changed (`__w64` → `__w74`).
    let e = copy_of("image_tied_f32");
    let bytes = std::fs::read(e.path().join("kernels.o")).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == b"__w")
        .expect("a kernel with a width");
    let digit = bytes[at + 3];
    let other = b'1' + (digit - b'0') % 9;
    let (from, to) = (
        format!("__w{}", digit as char),
        format!("__w{}", other as char),
    );
    edit_kernels(e.path(), &from, &to);
    assert_err(e.path(), "kernels.o", &[": is ", &to, "expected"]);

    // The symbol gone: kernel 0 is missing from the object.
    let e = copy_of("image_tied_f32");
    edit_kernels(e.path(), "vl3c_k0_", "vl3c_q0_");
    assert_err(e.path(), "kernels.o", &["kernel 0 is missing"]);

    // The plan lists a kernel the object does not hold.
    let e = copy_of("image_tied_f32");
    edit_plan(e.path(), |p| {
        let k = p["kernels"][0].clone();
        p["kernels"].as_array_mut().unwrap().push(k);
    });
    assert_err(e.path(), "kernels.o", &["kernels, expected"]);
}
