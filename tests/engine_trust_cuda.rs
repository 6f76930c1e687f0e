//! A CUDA engine's `cuda/plan.json` and `cuda/weights.bin` are untrusted data (its cubins and
//! PTX are native code): every edit — checksums recomputed — is one load error naming the file
//! and the entry, before anything is launched. On the emulator a bad access would be caught at
//! run time; on a GPU it would not, so the loader checks. Needs NVRTC, not a GPU.

use std::path::Path;
use std::sync::OnceLock;
use vl3c_cuda::nvrtc::Sm;
use vl3c_runtime::engine::{self, DeviceSpec, Engine};
mod common;

use common::fixture;

fn compiled() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = vl3c_cuda::CudaTarget::new(vec![Sm::Sm90]);
        engine::compile(
            &fixture("image_tied_f32"),
            &mut target,
            false,
            tmp.path(),
            &mut |_, _, _| {},
        )
        .unwrap_or_else(|e| panic!("compile: {e}"));
        tmp
    })
    .path()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(compiled(), tmp.path());
    tmp
}

fn json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// Rewrites `cuda/plan.json` through `f` and lists its new size and sha256 in the manifest.
fn edit_plan(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut plan = json(dir, "cuda/plan.json");
    f(&mut plan);
    let bytes = serde_json::to_vec(&plan).unwrap();
    std::fs::write(dir.join("cuda/plan.json"), &bytes).unwrap();
    let mut m = json(dir, "manifest.json");
    m["files"]["cuda/plan.json"] = serde_json::json!({
        "bytes": bytes.len(),
        "sha256": vl3c_engine::sha256_hex(&bytes),
    });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

fn assert_err(dir: &Path, needles: &[&str]) {
    let err = match Engine::load_on(dir, 64, 1, DeviceSpec::Emu, &mut |_, _, _| {}) {
        Ok(_) => panic!("an edited engine loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("plan.json"), "the file is not named: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The decode graph's steps.
fn steps(p: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    let g = p["graphs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["graph"] == "decode")
        .unwrap();
    g["steps"].as_array_mut().unwrap()
}

fn step<'a>(p: &'a mut serde_json::Value, kind: &str) -> &'a mut serde_json::Value {
    steps(p)
        .iter_mut()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} step"))
}

/// The first key of a JSON object.
fn first_key(v: &serde_json::Value) -> String {
    v.as_object().unwrap().keys().next().unwrap().clone()
}

#[test]
fn the_unedited_engine_loads() {
    Engine::load_on(compiled(), 64, 1, DeviceSpec::Emu, &mut |_, _, _| {}).unwrap();
}

#[test]
fn a_stored_tensor_whose_bytes_are_not_its_shape_is_refused() {
    let e = copy();
    let name = first_key(&json(e.path(), "cuda/plan.json")["tensors"]);
    edit_plan(e.path(), |p| {
        let b = p["tensors"][&name]["bytes"].as_u64().unwrap();
        p["tensors"][&name]["bytes"] = (b + 4).into();
    });
    assert_err(e.path(), &[&format!("tensor `{name}` has"), "takes"]);

    let e = copy();
    edit_plan(e.path(), |p| {
        p["tensors"][&name]["offset"] = (1u64 << 40).into()
    });
    assert_err(
        e.path(),
        &[&format!("tensor `{name}`"), "past the end of the file"],
    );

    let e = copy();
    edit_plan(e.path(), |p| p["tensors"][&name]["dtype"] = "i64".into());
    assert_err(e.path(), &[&format!("tensor `{name}` has"), "i64"]);
}

#[test]
fn a_stored_tensor_of_another_type_than_its_node_is_refused() {
    // Same bytes, the dimensions swapped: the graph's node is the other way round.
    let e = copy();
    let plan = json(e.path(), "cuda/plan.json");
    let name = plan["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, t)| {
            let s = t["shape"].as_array().unwrap();
            s.len() == 2 && s[0] != s[1]
        })
        .map(|(n, _)| n.clone())
        .expect("a 2-D non-square tensor");
    edit_plan(e.path(), |p| {
        let s = p["tensors"][&name]["shape"].as_array().unwrap().clone();
        p["tensors"][&name]["shape"] = serde_json::json!([s[1], s[0]]);
    });
    assert_err(
        e.path(),
        &[&format!("stored tensor `{name}` is"), "the node is"],
    );
}

#[test]
fn a_step_naming_a_missing_node_or_instance_is_refused() {
    let e = copy();
    edit_plan(e.path(), |p| step(p, "launch")["node"] = 1_000_000.into());
    assert_err(
        e.path(),
        &[
            "graph `decode`, node %1000000",
            "is not a node of the graph",
        ],
    );

    let e = copy();
    edit_plan(e.path(), |p| {
        step(p, "launch")["instance"] = 1_000_000.into()
    });
    assert_err(e.path(), &["instance 1000000 does not exist"]);

    let e = copy();
    edit_plan(e.path(), |p| {
        let s = step(p, "launch");
        let k = first_key(&s["inputs"]);
        s["inputs"][&k] = 1_000_000.into();
    });
    assert_err(e.path(), &["input %1000000 is not a node of the graph"]);
}

#[test]
fn a_step_whose_arguments_are_not_its_instances_is_refused() {
    // An input dropped: the kernel would read a buffer bound by nothing.
    let e = copy();
    edit_plan(e.path(), |p| {
        let s = step(p, "launch");
        let k = first_key(&s["inputs"]);
        s["inputs"].as_object_mut().unwrap().remove(&k);
    });
    assert_err(e.path(), &["binds", "but instance"]);

    // An output the instance does not write.
    let e = copy();
    edit_plan(e.path(), |p| step(p, "launch")["output"] = "nowhere".into());
    assert_err(e.path(), &["output `nowhere` is not an output of instance"]);

    // A matmul with one operand (`inputs[1]` is the weight).
    let e = copy();
    edit_plan(e.path(), |p| {
        let s = step(p, "matmul");
        let first = s["inputs"][0].clone();
        s["inputs"] = serde_json::json!([first]);
    });
    assert_err(e.path(), &["the matmul reads operand"]);
}

#[test]
fn a_kernel_parameter_the_plan_does_not_bind_is_refused() {
    let e = copy();
    edit_plan(e.path(), |p| {
        let name = p["instances"][0]["kernels"][0]
            .as_str()
            .unwrap()
            .to_string();
        p["instances"][0]["kernels"][0] = format!("{name}_renamed").into();
    });
    assert_err(e.path(), &["is not in kernels.kir.json"]);
    // A buffer parameter the kernel declares that the instance does not bind: the reference's
    // first input renamed.
    let e = copy();
    let mut name = String::new();
    edit_plan(e.path(), |p| {
        let r = p["instances"][0]["reference"].as_str().unwrap().to_string();
        let at = r.find("input \"").expect("a reference input") + 7;
        name = r[at..].split('"').next().unwrap().to_string();
        p["instances"][0]["reference"] = r
            .replace(&format!("input \"{name}\""), &format!("input \"{name}_x\""))
            .into();
    });
    assert_err(
        e.path(),
        &[&format!(
            "parameter `{name}`: is no input, output or scratch"
        )],
    );
}

/// The checks accept what the compiler writes: every fixture's engine (GQA, video pruning, the
/// DAMO layout, bf16 weights) loads.
#[test]
fn every_fixtures_engine_passes_the_checks() {
    for name in [
        "images_untied_gqa4",
        "video_pruned_f32",
        "damo_layout",
        "video_bf16",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = vl3c_cuda::CudaTarget::new(vec![Sm::Sm90]);
        engine::compile(
            &fixture(name),
            &mut target,
            false,
            tmp.path(),
            &mut |_, _, _| {},
        )
        .unwrap_or_else(|e| panic!("{name}: compile: {e}"));
        Engine::load_on(tmp.path(), 64, 1, DeviceSpec::Emu, &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
