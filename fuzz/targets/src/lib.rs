//! The bodies of vl3c's fuzz targets, one function per input surface. Each takes arbitrary bytes
//! and must return (with an `Ok` or an error) without panicking, aborting or allocating without
//! bound. The libFuzzer harnesses in `fuzz/fuzz_targets/` call these, and `tests/replay.rs` runs
//! every committed corpus and regression input through them in `cargo test`, so a crash found
//! once stays fixed.
//!
//! Surfaces that read from a path get the bytes written to a per-thread scratch directory (the
//! readers check file kinds and sizes before reading, which is part of what is fuzzed).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vl3c_runtime::chat::{expand_placeholders, prompt_ids, render_chat, ImageTokens, Message};
use vl3c_runtime::engine::Engine;
use vl3c_runtime::exec::Tensor;
use vl3c_runtime::model::Model;
use vl3c_runtime::tokenizer::TextTokenizer;

/// A target's body: arbitrary bytes in, nothing out; failing is panicking.
pub type Body = fn(&[u8]);

/// Every target, by the name of its harness and corpus directory.
pub const TARGETS: &[(&str, Body)] = &[
    ("checkpoint", checkpoint),
    ("config", config),
    ("ir_text", ir_text),
    ("engine", engine),
    ("image", image),
    ("video", video),
    ("tokenizer", tokenizer),
    ("chat", chat),
    ("eval_inputs", eval_inputs),
];

/// The repository root (corpora and the tiny example checkpoint are read from it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_model() -> PathBuf {
    repo_root().join("examples/tiny")
}

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// `f` with this thread's scratch directory, emptied first.
fn with_scratch<R>(f: impl FnOnce(&Path) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let dir = s.get_or_insert_with(|| tempfile::tempdir().expect("a scratch directory"));
        for e in std::fs::read_dir(dir.path())
            .expect("scratch is readable")
            .flatten()
        {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        f(dir.path())
    })
}

/// A checkpoint directory with the tiny example's config and `data` as `model.safetensors`.
pub fn checkpoint(data: &[u8]) {
    with_scratch(|dir| {
        std::fs::copy(tiny_model().join("config.json"), dir.join("config.json")).unwrap();
        std::fs::write(dir.join("model.safetensors"), data).unwrap();
        let _ = vl3c_frontends::Checkpoint::open(dir);
    })
}

/// `config.json` of either layout.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = vl3c_frontends::ModelConfig::from_json_str(s, "config.json");
    }
}

/// The IR text form; what parses must verify or be refused by the verifier, and print back to
/// text that parses to the same graphs.
pub fn ir_text(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(graphs) = vl3c_ir::parse_graphs(s) else {
        return;
    };
    for g in &graphs {
        let _ = vl3c_ir::verify(g);
        let again = vl3c_ir::parse_graphs(&g.to_string()).expect("printed IR parses");
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].to_string(),
            g.to_string(),
            "print ∘ parse is stable"
        );
    }
}

/// The files of an engine that a fuzzed input may replace.
const ENGINE_FILES: &[&str] = &[
    "manifest.json",
    "graphs.vir",
    "plan.json",
    "weights.bin",
    "config.json",
];

/// A CPU engine of the tiny example, compiled once per process (the directory lives as long as
/// the process; the path is built once, not per input, which LeakSanitizer would report).
fn tiny_engine() -> &'static Path {
    static ENGINE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ENGINE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let out = dir.path().join("engine");
            vl3c_runtime::engine::compile(
                &tiny_model(),
                &mut vl3c_driver::CpuTarget::default(),
                false,
                &out,
                &mut |_, _, _| {},
            )
            .expect("the tiny example compiles");
            (dir, out)
        })
        .1
}

/// A copy of the tiny engine with one file (chosen by the first byte) replaced by the rest of
/// the input. Unless the manifest itself is replaced, its size and sha256 for that file are
/// rewritten, so the input reaches the checks past the checksums.
pub fn engine(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = ENGINE_FILES[pick as usize % ENGINE_FILES.len()];
    let src = tiny_engine();
    with_scratch(|dir| {
        let dst = dir.join("engine");
        copy_dir(src, &dst);
        let path = dst.join(name);
        if !path.exists() {
            return;
        }
        std::fs::write(&path, rest).unwrap();
        if name != "manifest.json" {
            rehash(&dst, name, rest);
        }
        if let Ok(engine) = Engine::load(&dst, 64, 1, &mut |_, _, _| {}) {
            // A short prompt and one decode step read every LLM weight through the kernels.
            let mut cache = engine.new_cache();
            let ids = Tensor::i64(vec![1, 4], vec![1, 2, 3, 4]);
            if engine.prefill(&ids, None, None, None, &mut cache).is_ok() {
                let _ = engine.decode(5, &mut cache);
            }
        }
    })
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// Rewrites the manifest's entry for `name` to match `bytes`.
fn rehash(dir: &Path, name: &str, bytes: &[u8]) {
    let manifest = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    if let Some(entry) = m.pointer_mut(&format!("/files/{}", name.replace('/', "~1"))) {
        entry["bytes"] = bytes.len().into();
        entry["sha256"] = vl3c_engine::sha256_hex(bytes).into();
    }
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// An image file, by content (PNG, JPEG, GIF and whatever else the loader accepts).
pub fn image(data: &[u8]) {
    let _ = vl3c_runtime::preprocess::decode_image_bytes(data, Path::new("fuzz.img"));
}

/// A video file: opened by content, then its first frames (at most 4) decoded.
pub fn video(data: &[u8]) {
    with_scratch(|dir| {
        let path = dir.join("fuzz.video");
        std::fs::write(&path, data).unwrap();
        let Ok(mut reader) = vl3c_runtime::video::open_video(&path) else {
            return;
        };
        let total = reader.metadata().total_frames.min(4);
        let indices: Vec<usize> = (0..total).collect();
        let _ = reader.read_frames(&indices, &mut |_, _| {});
    })
}

/// `tokenizer.json`, then a prompt encoded and decoded with it.
pub fn tokenizer(data: &[u8]) {
    with_scratch(|dir| {
        std::fs::write(dir.join("tokenizer.json"), data).unwrap();
        if let Ok(tok) = TextTokenizer::from_dir(dir) {
            if let Ok(ids) = tok.encode("<|im_start|>user\nhello<|im_end|>", false) {
                let _ = tok.decode(&ids, false);
            }
        }
    })
}

fn tiny_tokenizer() -> &'static TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| TextTokenizer::from_dir(&tiny_model()).expect("the tiny tokenizer loads"))
}

/// User text (which may contain special tokens and placeholders) through the chat template,
/// placeholder expansion and the tokenizer, with as many images as the first byte says.
pub fn chat(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let images: Vec<ImageTokens> = (0..n % 4)
        .map(|i| ImageTokens {
            grid_thw: [1, 2 * (i as i64 + 1), 2],
            merge_size: 1 + (i as i64 % 2),
        })
        .collect();
    let messages = [Message::user_with_images(images.len(), &text)];
    let rendered = render_chat(&messages, n & 0x80 != 0, true);
    let _ = expand_placeholders(&rendered, &images, &[]);
    if let Ok(ids) = prompt_ids(tiny_tokenizer(), &messages, n & 0x40 != 0, &images, &[]) {
        let _ = tiny_tokenizer().decode(&ids, false);
    }
}

fn tiny_reference_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::open(&tiny_model()).expect("the tiny example opens"))
}

/// The `--inputs` safetensors file of `vl3c eval`, read and run through the tiny model on the
/// reference executor (which checks every input against the model before computing).
pub fn eval_inputs(data: &[u8]) {
    with_scratch(|dir| {
        let path = dir.join("inputs.safetensors");
        std::fs::write(&path, data).unwrap();
        if let Ok(inputs) = vl3c_runtime::tensor_file::read_tensors(&path) {
            let _ = tiny_reference_model().forward(&inputs, 1);
        }
    })
}
