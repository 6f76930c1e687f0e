//! CUDA engines on the emulator: every golden fixture (made by transformers) through
//! `vl3c compile --target cuda` and `vl3c eval --engine E --device emu` must reproduce
//! transformers' logits and greedy tokens. The emulator runs every kernel with its checks on
//! (out of bounds, uninitialised reads, races, divergent barriers), so a kernel fault fails the
//! test as a GPU crash would.

mod common;

use common::{diff, fixture, ids, s, stderr, vl3c};
use vl3c_runtime::exec::Tensor;
use vl3c_runtime::tensor_file::{read_tensors, write_tensors};

/// Compiles fixture `name` for CUDA, evaluates it on the emulator and compares with
/// transformers: max and mean |Δlogits| within the bars, greedy ids identical.
fn check(name: &str, max_bar: f32, mean_bar: f32) {
    let dir = fixture(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let new_tokens = meta["max_new_tokens"].as_u64().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let engine = tmp.path().join("engine");
    let o = vl3c(&[
        "compile",
        "--target",
        "cuda",
        "--sm",
        "90",
        "--model",
        s(&dir),
        "--out",
        s(&engine),
    ]);
    assert!(o.status.success(), "{name}: compile: {}", stderr(&o));
    let out = tmp.path().join("out.safetensors");
    // Without the processor's keep-mask: the engine's vision graph computes it.
    let mut given = read_tensors(&dir.join("inputs.safetensors")).unwrap();
    given.remove("video_compression_mask");
    let inputs = tmp.path().join("inputs.safetensors");
    let named: Vec<(&str, &Tensor)> = given.iter().map(|(k, v)| (k.as_str(), v)).collect();
    write_tensors(&inputs, &named).unwrap();
    let o = vl3c(&[
        "eval",
        "--engine",
        s(&engine),
        "--device",
        "emu",
        "--inputs",
        s(&inputs),
        "--out",
        s(&out),
        "--max-new-tokens",
        &new_tokens,
    ]);
    assert!(
        o.status.success(),
        "{name}: eval --device emu: {}",
        stderr(&o)
    );

    let (got, want) = (
        read_tensors(&out).unwrap(),
        read_tensors(&dir.join("expected.safetensors")).unwrap(),
    );
    let d = diff(&got["logits"], &want["logits"]);
    eprintln!(
        "{name} on the emulator: max |Δlogits| {:.3e}, mean {:.3e}",
        d.max, d.mean
    );
    assert!(
        d.max <= max_bar && d.mean <= mean_bar,
        "{name}: max |Δlogits| {} (bar {max_bar}), mean {} (bar {mean_bar})",
        d.max,
        d.mean
    );
    assert_eq!(
        ids(&got["generated_ids"]),
        ids(&want["generated_ids"]),
        "{name}: greedy tokens differ from transformers"
    );
}

#[test]
fn image_tied_f32() {
    check("image_tied_f32", 1e-4, 1e-4);
}

#[test]
fn images_untied_gqa4() {
    check("images_untied_gqa4", 1e-4, 1e-4);
}

/// The keep-mask is computed in the engine (the vision graph's Differential Frame Pruning), and
/// the kept rows' count is read back from it.
#[test]
fn video_pruned_f32() {
    check("video_pruned_f32", 1e-4, 1e-4);
}

#[test]
fn damo_layout_sharded() {
    check("damo_layout", 1e-4, 1e-4);
}

/// bf16 weights against transformers in f32 on the upcast weights: the bf16 bars.
#[test]
fn video_bf16_weights() {
    check("video_bf16", 0.1, 0.015);
}

/// The README's example on the emulator answers exactly as the CPU engine does.
#[test]
fn the_readme_example_answers_as_the_cpu_engine_does() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = tmp.path().join("engine");
    let model = common::tiny();
    let o = vl3c(&[
        "compile",
        "--target",
        "cuda",
        "--sm",
        "90",
        "--model",
        s(&model),
        "--out",
        s(&engine),
    ]);
    assert!(o.status.success(), "compile: {}", stderr(&o));
    let image = common::root().join("examples/picture.png");
    let ask = [
        "--image",
        s(&image),
        "--prompt",
        "What is in this picture?",
        "--max-new-tokens",
        "12",
    ];
    let cpu = vl3c(&[&["run", "--model", s(&model)][..], &ask].concat());
    assert!(cpu.status.success(), "cpu: {}", stderr(&cpu));
    let emu = vl3c(
        &[
            &["run", "--engine", s(&engine), "--device", "emu"][..],
            &ask,
        ]
        .concat(),
    );
    assert!(emu.status.success(), "emu: {}", stderr(&emu));
    assert!(!cpu.stdout.is_empty());
    assert_eq!(emu.stdout, cpu.stdout, "the answers differ");

    // Past the KV cache's capacity: one line, before anything runs.
    let o = vl3c(
        &[
            &[
                "run",
                "--engine",
                s(&engine),
                "--device",
                "emu",
                "--max-context",
                "16",
            ][..],
            &ask,
        ]
        .concat(),
    );
    common::assert_one_line_error(&o, "--max-context 16");
}
