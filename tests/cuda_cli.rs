//! The CUDA target's CLI: `compile --target cuda` and `test-kernels`.

mod common;

use common::{assert_one_line_error, fixture, s, stderr, vl3c};

#[test]
fn compile_cuda_writes_cubins_and_an_engine_that_runs_on_the_emulator_only_when_asked() {
    let out = tempfile::tempdir().unwrap();
    let eng = out.path().join("engine");
    let model = fixture("image_tied_f32");
    let o = vl3c(&[
        "compile",
        "--model",
        s(&model),
        "--target",
        "cuda",
        "--sm",
        "90",
        "--out",
        s(&eng),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cubins sm_90") && err.contains("template instances"),
        "{err}"
    );
    assert!(eng.join("cuda/sm_90.cubin").is_file() && eng.join("cuda/kernels.cu").is_file());
    let inputs = model.join("inputs.safetensors");
    // The default device is the GPU; without one, one line that names the emulator.
    let o = vl3c(&[
        "eval",
        "--engine",
        s(&eng),
        "--inputs",
        s(&inputs),
        "--out",
        s(&out.path().join("o.safetensors")),
    ]);
    assert_one_line_error(&o, "--device emu");
    assert_one_line_error(
        &vl3c(&[
            "eval",
            "--engine",
            s(&eng),
            "--device",
            "tpu",
            "--inputs",
            s(&inputs),
            "--out",
            "x",
        ]),
        "unknown device `tpu`",
    );

    // The plan, read from the engine: every step of the decode graph, with its kernels.
    let o = vl3c(&["inspect", "--engine", s(&eng), "--plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("graph decode:")
            && text.contains("cuBLASLt")
            && text.contains("launch rms_norm("),
        "{text}"
    );
    let steps: usize = text
        .lines()
        .find(|l| l.starts_with("graph decode:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eng.join("cuda/plan.json")).unwrap()).unwrap();
    let decode = plan["graphs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["graph"] == "decode")
        .unwrap();
    assert_eq!(steps, decode["steps"].as_array().unwrap().len());
}

#[test]
fn inspect_engine_shows_the_cpu_claims_and_survives_a_closed_pipe() {
    let out = tempfile::tempdir().unwrap();
    let eng = out.path().join("engine");
    let o = vl3c(&[
        "compile",
        "--model",
        s(&fixture("image_tied_f32")),
        "--out",
        s(&eng),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vl3c(&["inspect", "--engine", s(&eng)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let target = format!("target      cpu (format {}", vl3c_engine::FORMAT_VERSION);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&target));
    let o = vl3c(&["inspect", "--engine", s(&eng), "--plan"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("attention")
            && text.contains("from=cache")
            && text.contains("swi_glu_columns"),
        "{text}"
    );
    assert_one_line_error(
        &vl3c(&[
            "inspect",
            "--plan",
            "--model",
            s(&fixture("image_tied_f32")),
        ]),
        "--plan shows an engine's plan",
    );

    // `| head`: the reader goes away after one line; vl3c ends quietly, no panic message.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vl3c"))
        .args(["inspect", "--engine", s(&eng), "--plan"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn compile_flags_are_checked() {
    let out = tempfile::tempdir().unwrap();
    let model = fixture("image_tied_f32");
    let o = vl3c(&[
        "compile",
        "--model",
        s(&model),
        "--target",
        "cuda",
        "--sm",
        "75",
        "--out",
        s(out.path()),
    ]);
    assert_one_line_error(&o, "unknown --sm `75`");
    let o = vl3c(&[
        "compile",
        "--model",
        s(&model),
        "--target",
        "cpu",
        "--config-only",
        "--out",
        s(out.path()),
    ]);
    assert_one_line_error(&o, "--config-only is for --target cuda");
}

#[test]
fn test_kernels_runs_a_filtered_family_on_the_emulator() {
    let o = vl3c(&["test-kernels", "-o", "rms_norm", "-p", "hidden=1536"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("OK") && err.contains("rms_norm") && err.contains(" 0 failed"),
        "{err}"
    );
    assert!(
        !err.contains("layer_norm"),
        "the -o filter let another family through: {err}"
    );
}

#[test]
fn test_kernels_rejects_what_it_cannot_do() {
    // Without a driver (CI), one line that names the emulator; with one, the run is a GPU check.
    if !vl3c_cuda::run::CudaDevice::driver_present() {
        assert_one_line_error(
            &vl3c(&["test-kernels", "--backend", "cuda", "-o", "rms_norm"]),
            "--backend emu",
        );
        assert_one_line_error(
            &vl3c(&["test-kernels", "--backend", "cuda:1", "-o", "rms_norm"]),
            "--backend emu",
        );
    }
    assert_one_line_error(
        &vl3c(&["test-kernels", "--backend", "tpu"]),
        "unknown backend `tpu`",
    );
    assert_one_line_error(
        &vl3c(&["test-kernels", "--backend", "cuda:x"]),
        "unknown backend `cuda:x`",
    );
    assert_one_line_error(
        &vl3c(&["test-kernels", "-o", "no_such_op"]),
        "no op family `no_such_op`",
    );
    assert_one_line_error(
        &vl3c(&["test-kernels", "-p", "nothing-matches-this"]),
        "no case matches",
    );
}

#[test]
fn test_kernels_lists_and_reports_json() {
    let o = vl3c(&["test-kernels", "--list", "-o", "softmax"]);
    assert!(o.status.success());
    let listed = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(listed >= 2, "{listed} softmax cases");
    let o = vl3c(&["test-kernels", "-o", "softmax", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reports"].as_array().unwrap().len(), listed);
}
