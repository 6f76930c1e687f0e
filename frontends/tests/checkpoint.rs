//! Opening valid checkpoints: both layouts, sharded, tied/untied, dtypes, zero-copy.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use safetensors::Dtype;
use vl3c_frontends::names;
use vl3c_frontends::{expected_weights, Checkpoint, Layout, ModelConfig};
use vl3c_ir::DType;

#[test]
fn opens_transformers_tied() {
    let (dir, _, tensors) = valid(Layout::Transformers, true, 1);
    let ck = Checkpoint::open(dir.path()).unwrap();
    check_complete(&ck);
    assert_eq!(ck.tensor_names().count(), tensors.len());
    assert!(ck.tensor(names::LM_HEAD).is_none());
    assert_eq!(ck.lm_head().stored_name, names::EMBED_TOKENS);
    assert_eq!(
        ck.files(),
        vec![dir.path().join("model.safetensors").as_path()]
    );
    assert_eq!(
        ck.dtypes().into_iter().collect::<Vec<_>>(),
        vec![(DType::F32, tensors.len())]
    );
    assert_eq!(
        ck.total_bytes(),
        tensors.iter().map(|t| t.data.len()).sum::<usize>()
    );
}

#[test]
fn opens_transformers_untied_and_values_round_trip() {
    let (dir, cfg, tensors) = valid(Layout::Transformers, false, 1);
    let ck = Checkpoint::open(dir.path()).unwrap();
    check_complete(&ck);
    assert_eq!(ck.lm_head().stored_name, names::LM_HEAD);
    let model = ModelConfig::from_json_str(&cfg.to_string(), "c").unwrap();
    for t in &tensors {
        let r = ck.tensor(&t.name).unwrap();
        assert_eq!(r.bytes, &t.data[..], "{}", t.name);
    }
    let norm = ck.tensor(names::LLM_NORM).unwrap().to_f32_vec().unwrap();
    assert_eq!(norm.len(), model.text.hidden_size);
    assert_eq!(ck.weight_dtype(names::LLM_NORM), Some(DType::F32));
}

#[test]
fn tied_checkpoint_with_stored_lm_head_ignores_it() {
    let dir = with_modified(Layout::Transformers, true, |ts| {
        let embed = ts
            .iter()
            .find(|t| t.name == names::EMBED_TOKENS)
            .unwrap()
            .clone();
        ts.push(T {
            name: names::LM_HEAD.into(),
            data: vec![0; embed.data.len()],
            ..embed
        });
    });
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert!(ck.tensor(names::LM_HEAD).is_none());
    assert_eq!(ck.lm_head().stored_name, names::EMBED_TOKENS);
    assert_eq!(ck.ignored_tensors().len(), 1);
    assert_eq!(ck.ignored_tensors()[0].stored_name, names::LM_HEAD);
}

#[test]
fn opens_damo_layout_under_canonical_names() {
    let (dir, _, _) = valid(Layout::Damo, false, 1);
    let ck = Checkpoint::open(dir.path()).unwrap();
    check_complete(&ck);
    assert_eq!(ck.config().video_token_id, None);
    assert_eq!(
        ck.tensor(names::LLM_NORM).unwrap().stored_name,
        "model.norm.weight"
    );
    assert_eq!(
        ck.tensor(&names::projector(2, "bias")).unwrap().stored_name,
        "model.mm_projector.readout.2.bias"
    );
    assert_eq!(
        ck.tensor(&names::vision_layer(1, "mlp.fc2.weight"))
            .unwrap()
            .stored_name,
        "model.vision_encoder.encoder.layers.1.mlp.fc2.weight"
    );
    assert!(
        ck.tensor("model.norm.weight").is_none(),
        "lookups use canonical names"
    );
}

#[test]
fn opens_sharded_both_layouts() {
    for layout in [Layout::Transformers, Layout::Damo] {
        let (dir, _, tensors) = valid(layout, layout == Layout::Transformers, 3);
        let ck = Checkpoint::open(dir.path()).unwrap();
        check_complete(&ck);
        assert_eq!(ck.files().len(), 3);
        assert_eq!(ck.tensor_names().count(), tensors.len());
    }
}

#[test]
fn opens_a_bare_directory_of_safetensors() {
    let (dir, _, _) = valid(Layout::Transformers, false, 2);
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    check_complete(&ck);
    assert_eq!(ck.files().len(), 2);
}

#[test]
fn bf16_and_f16_weights() {
    for (st, ir) in [(Dtype::BF16, DType::BF16), (Dtype::F16, DType::F16)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_json(Layout::Damo, true);
        write_ckpt(dir.path(), &cfg, &tensors_for(&cfg, st), 1);
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.dtypes().keys().copied().collect::<Vec<_>>(), vec![ir]);
        let bias = ck
            .tensor(names::PATCH_EMBED_BIAS)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert!((bias[3] - 1.003).abs() < 1e-2, "{bias:?}");
    }
}

#[test]
fn tensor_bytes_are_borrowed_from_the_mapping() {
    let (dir, _, tensors) = valid(Layout::Transformers, false, 2);
    let ck = Checkpoint::open(dir.path()).unwrap();
    let maps: Vec<(PathBuf, usize, usize)> = ck
        .mapped_files()
        .map(|(p, m)| (p.to_path_buf(), m.as_ptr() as usize, m.len()))
        .collect();
    for t in &tensors {
        let r = ck.tensor(&t.name).unwrap();
        let (start, end) = (
            r.bytes.as_ptr() as usize,
            r.bytes.as_ptr() as usize + r.bytes.len(),
        );
        let (path, base, len) = maps.iter().find(|(p, _, _)| p == r.file).unwrap();
        assert!(
            start >= *base && end <= base + len,
            "{} not inside the mapping of {}",
            t.name,
            path.display()
        );
    }
    // The mapping is shared with the page cache: an in-place write shows through it.
    let norm = ck.tensor(names::LLM_NORM).unwrap();
    let (file, base) = (
        norm.file.to_path_buf(),
        maps.iter().find(|m| m.0 == norm.file).unwrap().1,
    );
    let offset = norm.bytes.as_ptr() as usize - base;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.write_all(&42.5f32.to_le_bytes()).unwrap();
    }
    assert_eq!(
        ck.tensor(names::LLM_NORM).unwrap().to_f32_vec().unwrap()[0],
        42.5
    );
}

#[test]
fn unused_extra_tensors_are_tolerated() {
    let dir = with_modified(Layout::Transformers, false, |ts| {
        ts.push(T {
            name: "model.vision_model.rotary.inv_freq".into(),
            dtype: Dtype::F64,
            shape: vec![2],
            data: vec![0; 16],
        });
        ts.push(T {
            name: "extra.counter".into(),
            dtype: Dtype::I64,
            shape: vec![1],
            data: vec![0; 8],
        });
    });
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.ignored_tensors().len(), 1);
    assert_eq!(ck.tensor("extra.counter").unwrap().dtype, DType::I64);
}

#[test]
fn fixture_checkpoints_open() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let entries = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let mut opened = 0;
    for entry in entries {
        let dir = entry.unwrap().path();
        let has_weights = dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file();
        if !dir.join("config.json").is_file() || !has_weights {
            continue;
        }
        let ck = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        check_complete(&ck);
        let n = expected_weights(ck.config()).len();
        assert_eq!(
            ck.tensor_names().count(),
            n,
            "{}: unexpected extra tensors",
            dir.display()
        );
        if dir.join("model.safetensors.index.json").is_file() {
            assert!(ck.files().len() > 1, "{}", dir.display());
        }
        opened += 1;
    }
    eprintln!("opened {opened} fixture checkpoints");
    assert!(
        opened > 0,
        "no fixture checkpoints under {}",
        root.display()
    );
}
