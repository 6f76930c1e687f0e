//! Compiled CPU engines: every golden fixture compiled and run through `Engine`, against
//! transformers' outputs with the tolerances; and the loader's refusals.

use std::path::Path;
use std::process::Command;
use vl3c_driver::CpuTarget;
use vl3c_runtime::engine::{self, Engine, GemmMode};
use vl3c_runtime::model::LogitsToKeep;
mod common;

use common::{diff, fixture, ids, Diff};
use vl3c_runtime::tensor_file::read_tensors;

fn compile(name: &str, out: &Path) {
    engine::compile(
        &fixture(name),
        &mut CpuTarget::default(),
        false,
        out,
        &mut |_, _, _| {},
    )
    .unwrap_or_else(|e| panic!("{name}: compile: {e}"));
}

fn load(dir: &Path, max_context: usize) -> Result<Engine, String> {
    Engine::load(dir, max_context, 2, &mut |_, _, _| {}).map_err(|e| e.to_string())
}

/// Compiles and runs one fixture through the engine; returns the logits difference and
/// whether the greedy ids equal transformers'.
fn run(name: &str) -> (Diff, bool) {
    run_with(name, GemmMode::Auto)
}

fn run_with(name: &str, mode: GemmMode) -> (Diff, bool) {
    let dir = fixture(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let new_tokens = meta["max_new_tokens"].as_u64().unwrap() as usize;
    let inputs = read_tensors(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_tensors(&dir.join("expected.safetensors")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    compile(name, tmp.path());
    let engine = load(tmp.path(), 4096).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    engine.set_gemm_mode(mode);
    let result = engine
        .model()
        .forward(&inputs, new_tokens)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = diff(&result.logits, &expected["logits"]);
    let same = result.generated_ids.unwrap() == ids(&expected["generated_ids"]);
    eprintln!("{name} (engine, {mode:?}): max |Δlogits| {:.3e}, mean {:.3e}, greedy ids identical: {same}", d.max, d.mean);
    (d, same)
}

fn check_f32(name: &str) {
    let (d, same) = run(name);
    assert!(d.max <= 1e-4, "{name}: max |Δlogits| {} > 1e-4", d.max);
    assert!(same, "{name}: greedy tokens differ from transformers");
}

#[test]
fn image_tied_f32() {
    check_f32("image_tied_f32");
}

#[test]
fn images_untied_gqa4() {
    check_f32("images_untied_gqa4");
}

#[test]
fn video_pruned_f32() {
    check_f32("video_pruned_f32");
}

#[test]
fn damo_layout_sharded() {
    check_f32("damo_layout");
}

/// bf16 weights run on the packed bf16 kernels (which may round activations to bf16 for
/// `vdpbf16ps`): the bar against transformers in f32 on the upcast weights.
#[test]
fn video_bf16_weights() {
    let (d, same) = run("video_bf16");
    assert!(
        d.max <= 0.1 && d.mean <= 0.015,
        "video_bf16: max {} mean {}",
        d.max,
        d.mean
    );
    assert!(same, "video_bf16: greedy tokens differ from transformers");
}

/// The same with activations rounded to bf16 for `vdpbf16ps` in every GEMM (what `Auto` picks
/// on CPUs where it is faster; emulated exactly where the CPU lacks it).
#[test]
fn video_bf16_weights_bf16_dot() {
    let (d, same) = run_with("video_bf16", GemmMode::Bf16Dot);
    assert!(
        d.max <= 0.1 && d.mean <= 0.015,
        "video_bf16: max {} mean {}",
        d.max,
        d.mean
    );
    eprintln!("video_bf16 with bf16 dot products: greedy ids identical: {same}");
}

/// With every GEMM in exact f32 a bf16 checkpoint's attention is f32 too: the engine then
/// computes what transformers does in f32 on the upcast weights, to the f32 fixtures' bar.
#[test]
fn video_bf16_weights_exact() {
    let (d, same) = run_with("video_bf16", GemmMode::Exact);
    assert!(
        d.max <= 1e-4,
        "video_bf16 in exact f32: max |Δlogits| {} > 1e-4",
        d.max
    );
    assert!(same, "video_bf16: greedy tokens differ from transformers");
}

/// An f32 checkpoint stays on f32 attention (and f32 GEMMs) whatever the GEMM mode asks.
#[test]
fn f32_checkpoint_ignores_bf16_modes() {
    for mode in [GemmMode::Bf16Dot, GemmMode::Amx] {
        let (d, same) = run_with("images_untied_gqa4", mode);
        assert!(
            d.max <= 1e-4,
            "images_untied_gqa4 ({mode:?}): max |Δlogits| {} > 1e-4",
            d.max
        );
        assert!(
            same,
            "images_untied_gqa4 ({mode:?}): greedy tokens differ from transformers"
        );
    }
}

/// The entry points compose to the same logits as the forward contract.
#[test]
fn entry_points_match_forward() {
    let tmp = tempfile::tempdir().unwrap();
    compile("video_pruned_f32", tmp.path());
    let engine = load(tmp.path(), 4096).unwrap();
    let inputs = read_tensors(&fixture("video_pruned_f32").join("inputs.safetensors")).unwrap();
    let images = engine
        .image_embed(
            &inputs["pixel_values"],
            &inputs["image_grid_thw"],
            inputs.get("image_merge_sizes"),
        )
        .unwrap();
    let (videos, _keep) = engine
        .video_embed(
            &inputs["pixel_values_videos"],
            &inputs["video_grid_thw"],
            inputs.get("video_merge_sizes"),
        )
        .unwrap();
    let mut cache = engine.new_cache();
    let logits = engine
        .prefill(
            &inputs["input_ids"],
            Some(&images),
            Some(&videos),
            inputs.get("video_compression_mask"),
            &mut cache,
        )
        .unwrap();
    let full = engine.model().forward(&inputs, 0).unwrap();
    assert!(diff(&logits, &full.logits).max == 0.0);
    // What generation asks for: the last row only, through the engine's claims.
    let (last, _) = engine
        .model()
        .prefill_keeping(&inputs, LogitsToKeep::Last)
        .unwrap();
    let vocab = *logits.shape.last().unwrap();
    let all = logits.to_f32_vec();
    assert_eq!(last.shape, vec![1, 1, vocab]);
    // A one-row product may take another kernel (the GEMV) than the full one: the f32 bar.
    let worst = last
        .to_f32_vec()
        .iter()
        .zip(&all[all.len() - vocab..])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "last-position logits differ by {worst}");
    let l = inputs["input_ids"].shape[1];
    assert_eq!(cache.len(), l);
    let step = engine.decode(5, &mut cache).unwrap();
    assert_eq!(step.len(), *logits.shape.last().unwrap());
    assert_eq!(cache.len(), l + 1);
}

/// One compiled engine per test, to corrupt.
fn engine_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    compile("image_tied_f32", tmp.path());
    tmp
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut m);
    std::fs::write(&p, serde_json::to_string(&m).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load(dir, 4096) {
        Ok(_) => panic!("a bad engine loaded"),
        Err(e) => e,
    }
}

#[test]
fn flipped_byte_in_weights_is_a_checksum_error() {
    let e = engine_copy();
    let p = e.path().join("weights.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let err = load_err(e.path());
    assert!(
        err.contains("weights.bin: checksum mismatch (engine corrupted)"),
        "{err}"
    );
}

#[test]
fn other_target_is_refused() {
    let e = engine_copy();
    edit_manifest(e.path(), |m| m["target"] = "tensorrt".into());
    let err = load_err(e.path());
    assert!(err.contains("built for target `tensorrt`"), "{err}");
    // A CPU engine relabelled as CUDA lacks the CUDA section.
    edit_manifest(e.path(), |m| m["target"] = "cuda".into());
    let err = load_err(e.path());
    assert!(err.contains("does not list cuda/plan.json"), "{err}");
}

#[test]
fn other_format_version_is_refused() {
    let e = engine_copy();
    edit_manifest(e.path(), |m| m["format_version"] = 999.into());
    let err = load_err(e.path());
    assert!(
        err.contains("engine format version 999") && err.contains("recompile"),
        "{err}"
    );
}

#[test]
fn missing_cpu_feature_is_refused() {
    let e = engine_copy();
    edit_manifest(e.path(), |m| {
        m["cpu_features"] = serde_json::json!(["avx512_nonexistent"])
    });
    let err = load_err(e.path());
    assert_eq!(
        err,
        "engine needs CPU feature avx512_nonexistent, which this CPU lacks"
    );
}

#[test]
fn missing_file_is_refused() {
    let e = engine_copy();
    std::fs::remove_file(e.path().join("plan.json")).unwrap();
    let err = load_err(e.path());
    assert!(err.contains("plan.json: is missing"), "{err}");
}

/// Rewrites plan.json through `f` and re-lists it in the manifest, as a compiler that decided
/// differently would have written it.
fn edit_plan(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut plan);
    let bytes = serde_json::to_vec(&plan).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    edit_manifest(
        dir,
        |m| {
            m["files"]["plan.json"] =
                serde_json::json!({"bytes": bytes.len(), "sha256": vl3c_engine::sha256_hex(&bytes)})
        },
    );
}

/// The first claim of `kind` in graph `graph`.
fn claim<'a>(
    plan: &'a mut serde_json::Value,
    graph: &str,
    kind: &str,
) -> &'a mut serde_json::Value {
    let claims = plan["graphs"][graph]["claims"].as_array_mut().unwrap();
    claims
        .iter_mut()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} claim in {graph}"))
}

#[test]
fn the_plan_records_what_runs_each_node() {
    let e = engine_copy();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.path().join("plan.json")).unwrap())
            .unwrap();
    let claims = |g: &str| plan["graphs"][g]["claims"].as_array().unwrap().clone();
    // Vision attention reads q, k and v as columns of the fused qkv projection.
    let vision = claims("vision_m1");
    let attn = vision
        .iter()
        .find(|c| c["kind"] == "attention")
        .expect("a vision attention claim");
    for (op, offset) in [("q", 0), ("k", 1), ("v", 2)] {
        assert_eq!(attn[op]["from"], "columns", "{attn}");
        assert!(attn[op]["offset"].as_u64().unwrap() >= offset, "{attn}");
    }
    // Decode attention reads k and v from the engine's cache; SwiGLU reads the merged gate|up.
    let decode = claims("decode");
    let attn = decode
        .iter()
        .find(|c| c["kind"] == "attention")
        .expect("a decode attention claim");
    assert_eq!(
        (&attn["k"]["from"], &attn["v"]["from"]),
        (&"cache".into(), &"cache".into()),
        "{attn}"
    );
    assert!(
        decode.iter().any(|c| c["kind"] == "swi_glu_columns"),
        "no SwiGLU column claim in decode"
    );
    assert!(decode
        .iter()
        .any(|c| c["kind"] == "cache_append" && c["rows"]["from"] == "columns"));
}

#[test]
fn a_claim_that_does_not_fit_its_graph_is_refused() {
    let e = engine_copy();
    // Columns past the projection's width.
    edit_plan(e.path(), |p| {
        claim(p, "vision_m1", "attention")["q"]["offset"] = 1_000_000.into()
    });
    let err = load_err(e.path());
    assert!(
        err.contains("graph `vision_m1`: attention claim on %")
            && err.contains("does not match graphs.vir"),
        "{err}"
    );

    let e = engine_copy();
    edit_plan(e.path(), |p| {
        claim(p, "decode", "swi_glu_columns")["up"] = 1_000_000.into()
    });
    let err = load_err(e.path());
    assert!(err.contains("graph `decode`: swiglu claim on %"), "{err}");

    // A cache the attention does not append to.
    let e = engine_copy();
    edit_plan(e.path(), |p| {
        claim(p, "decode", "attention")["k"]["name"] = "no_such_cache".into()
    });
    let err = load_err(e.path());
    assert!(
        err.contains("graph `decode`: attention claim on %"),
        "{err}"
    );

    // A kernel claimed for a node of another op.
    let e = engine_copy();
    edit_plan(e.path(), |p| {
        let matmul = claim(p, "prefill", "matmul")["node"].clone();
        claim(p, "prefill", "kernel")["node"] = matmul;
    });
    let err = load_err(e.path());
    assert!(err.contains("graph `prefill`: kernel claim on %"), "{err}");
}

#[test]
fn not_an_engine_is_refused() {
    let err = load_err(&fixture("image_tied_f32"));
    assert!(err.contains("manifest.json: cannot read"), "{err}");
}

#[test]
fn context_overflow_is_an_error() {
    let e = engine_copy();
    let inputs = read_tensors(&fixture("image_tied_f32").join("inputs.safetensors")).unwrap();
    let l = inputs["input_ids"].shape[1];
    // The prompt fits, the third generated token does not.
    let engine = load(e.path(), l + 1).unwrap();
    let err = engine
        .model()
        .forward(&inputs, 3)
        .err()
        .expect("overflow")
        .to_string();
    assert_eq!(
        err,
        format!(
            "context of {} tokens exceeds --max-context {}",
            l + 2,
            l + 1
        )
    );
    let engine = load(e.path(), l - 1).unwrap();
    let err = engine
        .model()
        .forward(&inputs, 0)
        .err()
        .expect("overflow")
        .to_string();
    assert_eq!(
        err,
        format!("context of {l} tokens exceeds --max-context {}", l - 1)
    );
}

#[test]
fn cli_compile_and_eval_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (eng, out) = (
        tmp.path().join("engine"),
        tmp.path().join("out.safetensors"),
    );
    let bin = env!("CARGO_BIN_EXE_vl3c");
    let dir = fixture("image_tied_f32");
    let s = Command::new(bin)
        .args(["compile", "--model"])
        .arg(&dir)
        .args(["--target", "cpu", "--out"])
        .arg(&eng)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let s = Command::new(bin)
        .args(["eval", "--engine"])
        .arg(&eng)
        .arg("--inputs")
        .arg(dir.join("inputs.safetensors"))
        .arg("--out")
        .arg(&out)
        .args(["--max-new-tokens", "8", "--threads", "2"])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let got = read_tensors(&out).unwrap();
    let expected = read_tensors(&dir.join("expected.safetensors")).unwrap();
    assert!(diff(&got["logits"], &expected["logits"]).max <= 1e-4);
    assert_eq!(ids(&got["generated_ids"]), ids(&expected["generated_ids"]));

    let s = Command::new(bin)
        .args(["compile", "--model"])
        .arg(&dir)
        .args(["--target", "vulkan", "--out"])
        .arg(&eng)
        .output()
        .unwrap();
    assert!(!s.status.success());
    let err = String::from_utf8_lossy(&s.stderr);
    assert_eq!(
        err.trim(),
        "error: target `vulkan` is not supported yet (expected `cpu`, `cuda` or `tensorrt`)"
    );
    let s = Command::new(bin)
        .args(["eval", "--engine"])
        .arg(&eng)
        .arg("--model")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!s.status.success());
}
