//! The exported graphs run with tract against the fixtures transformers made: features, prompt
//! logits (f32: max |Δ| ≤ 1e-4) and greedy ids through a decode loop over the exported KV
//! cache, with the orchestration onnxruntime-genai does (one vision call per image or video).

use crate::common::*;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::prelude::*;
use vl3c_onnx::MatmulPrecision;

/// One vision call per grid entry, with the graph of its merge size; the features concatenated
/// and the keep-masks too.
fn vision(dir: &Path, pixels: &Tensor, grid: &Tensor, merges: &Tensor) -> (Tensor, Vec<bool>) {
    let g = vals::<i64>(grid);
    let m = vals::<i64>(merges);
    let (mut feats, mut keep, mut row) = (Vec::new(), Vec::new(), 0);
    for (e, entry) in g.chunks_exact(3).enumerate() {
        let n = (entry[0] * entry[1] * entry[2]) as usize;
        let inputs = HashMap::from([
            ("pixel_values", rows(pixels, row, row + n)),
            ("grid_thw", Tensor::from_shape(&[1, 3], entry).unwrap()),
            (
                "merge_sizes",
                Tensor::from_shape(&[1], &m[e..e + 1]).unwrap(),
            ),
        ]);
        let out = run(&dir.join(format!("vision_m{}.onnx", m[e])), &inputs);
        feats.push(out["features"].clone());
        if let Some(k) = out.get("keep_mask") {
            keep.extend(vals::<bool>(k));
        }
        row += n;
    }
    let feats = Tensor::stack_tensors(0, &feats).unwrap();
    (feats, keep)
}

fn empty_features(hidden: usize) -> Tensor {
    Tensor::zero::<f32>(&[0, hidden]).unwrap()
}

/// The f32 bar: max |Δ| ≤ 1e-4 everywhere and identical greedy ids.
fn check_fixture(name: &str) {
    check_fixture_at(name, MatmulPrecision::F32);
}

/// Half-precision matmuls are held to the bf16 bar: prompt logits max |Δ| ≤ 0.1, mean ≤ 0.015
/// (features too); greedy ids are not compared.
fn check_fixture_at(name: &str, precision: MatmulPrecision) {
    let exact = precision == MatmulPrecision::F32;
    let (max_bar, mean_bar) = if exact { (1e-4, 1e-4) } else { (0.1, 0.015) };
    let within = |what: &str, got: &Tensor, want: &Tensor| {
        let (g, w) = (f32s(got), f32s(want));
        let d = max_abs_diff(&g, &w);
        let mean = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).sum::<f32>() / g.len() as f32;
        assert!(
            d <= max_bar && mean <= mean_bar,
            "{name}: {what} differ by {d} (mean {mean})"
        );
        d
    };
    let model = fixture(name);
    let dir = tempfile::tempdir().unwrap();
    let target = export(&model, dir.path(), precision);
    let inputs = load(&model.join("inputs.safetensors"));
    let expected = load(&model.join("expected.safetensors"));
    let decoder = target
        .exported()
        .iter()
        .find(|g| g.file == "decoder.onnx")
        .unwrap();
    let hidden = decoder.inputs[0].shape[2].as_const().unwrap() as usize;
    let embedding_inputs: Vec<&str> = target
        .exported()
        .iter()
        .find(|g| g.file == "embedding.onnx")
        .unwrap()
        .inputs
        .iter()
        .map(|s| s.name.as_str())
        .collect();

    let mut image_features = empty_features(hidden);
    if let Some(px) = inputs.get("pixel_values") {
        let (f, _) = vision(
            dir.path(),
            px,
            &inputs["image_grid_thw"],
            &inputs["image_merge_sizes"],
        );
        within("image features", &f, &expected["image_features"]);
        image_features = f;
    }
    let (mut video_features, mut video_mask) = (
        empty_features(hidden),
        Tensor::from_shape::<bool>(&[0], &[]).unwrap(),
    );
    if let Some(px) = inputs.get("pixel_values_videos") {
        let (f, keep) = vision(
            dir.path(),
            px,
            &inputs["video_grid_thw"],
            &inputs["video_merge_sizes"],
        );
        within("video features", &f, &expected["video_features"]);
        let mask = &inputs["video_compression_mask"];
        assert_eq!(
            keep,
            vals::<bool>(mask),
            "{name}: the exported pruning keeps other tokens than transformers"
        );
        video_features = f;
        video_mask = mask.clone();
    }

    let embed = |ids: Tensor, img: &Tensor, vid: &Tensor, mask: &Tensor| {
        let all = HashMap::from([
            ("input_ids", ids),
            ("image_features", img.clone()),
            ("video_features", vid.clone()),
            ("video_compression_mask", mask.clone()),
        ]);
        let inputs = all
            .into_iter()
            .filter(|(k, _)| embedding_inputs.contains(k))
            .collect();
        run(&dir.path().join("embedding.onnx"), &inputs)["inputs_embeds"].clone()
    };
    let past_names: Vec<String> = decoder
        .inputs
        .iter()
        .filter(|s| s.name.starts_with("past_key_values."))
        .map(|s| s.name.clone())
        .collect();
    let mut past: HashMap<String, Tensor> = decoder
        .inputs
        .iter()
        .filter(|s| s.name.starts_with("past_key_values."))
        .map(|s| {
            let heads = s.shape[1].as_const().unwrap() as usize;
            let d = s.shape[3].as_const().unwrap() as usize;
            (
                s.name.clone(),
                Tensor::zero::<f32>(&[1, heads, 0, d]).unwrap(),
            )
        })
        .collect();
    let step = |embeds: Tensor, past_len: usize, past: &mut HashMap<String, Tensor>| {
        let n = embeds.shape()[1];
        let mut feed: HashMap<&str, Tensor> = HashMap::new();
        feed.insert("inputs_embeds", embeds);
        feed.insert(
            "attention_mask",
            Tensor::from_shape(&[1, past_len + n], &vec![1i64; past_len + n]).unwrap(),
        );
        let pos: Vec<i64> = (past_len as i64..(past_len + n) as i64).collect();
        feed.insert("position_ids", Tensor::from_shape(&[1, n], &pos).unwrap());
        for p in &past_names {
            feed.insert(p.as_str(), past[p].clone());
        }
        let out = run(&dir.path().join("decoder.onnx"), &feed);
        for p in &past_names {
            let present = p.replace("past_key_values.", "present.");
            past.insert(p.clone(), out[&present].clone());
        }
        out["logits"].clone()
    };

    let ids = inputs["input_ids"].clone();
    let prompt = ids.shape()[1];
    let embeds = embed(ids, &image_features, &video_features, &video_mask);
    let logits = step(embeds, 0, &mut past);
    let d = within("prompt logits", &logits, &expected["logits"]);
    if !exact {
        eprintln!("{name} ({precision:?} matmuls): prompt logits max |Δ| {d:.2e}");
        return;
    }

    let want = vals::<i64>(&expected["generated_ids"]).to_vec();
    let vocab = *logits.shape().last().unwrap();
    let argmax = |l: &Tensor| {
        let v = f32s(l);
        let last = &v[v.len() - vocab..];
        (0..vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as i64
    };
    let mut got = vec![argmax(&logits)];
    while got.len() < want.len() {
        let id = Tensor::from_shape(&[1, 1], &[*got.last().unwrap()]).unwrap();
        let e = embed(
            id,
            &empty_features(hidden),
            &empty_features(hidden),
            &Tensor::from_shape::<bool>(&[0], &[]).unwrap(),
        );
        let l = step(e, prompt + got.len() - 1, &mut past);
        got.push(argmax(&l));
    }
    assert_eq!(got, want, "{name}: greedy ids");
    eprintln!(
        "{name}: prompt logits max |Δ| {d:.2e}, {} greedy ids identical",
        got.len()
    );
}

#[test]
fn image_tied_f32() {
    check_fixture("image_tied_f32");
}

#[test]
fn images_untied_gqa4() {
    check_fixture("images_untied_gqa4");
}

#[test]
fn video_pruned_f32() {
    check_fixture("video_pruned_f32");
}

#[test]
fn video_bf16() {
    check_fixture("video_bf16");
}

#[test]
fn damo_layout() {
    check_fixture("damo_layout");
}

/// `--dtype f16`: weights rounded to f16, activations cast around every matmul.
#[test]
fn images_untied_gqa4_f16_matmuls() {
    check_fixture_at("images_untied_gqa4", MatmulPrecision::F16);
}
