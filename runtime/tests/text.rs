//! Text side of `vl3c run`: tokenizer, chat prompt, sampling and streaming, checked against
//! transformers' goldens in tests/fixtures/run/tiny_prompt.json (made by
//! tools/golden/make_tiny_example.py on examples/tiny).

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use vl3c_runtime::chat::{
    expand_placeholders, format_timestamp, prompt_ids, render_chat, video_placeholder, ImageTokens,
    Message, VideoTokens,
};
use vl3c_runtime::exec::Tensor;
use vl3c_runtime::preprocess::{load_image, preprocess_images, ImageProcessorConfig};
use vl3c_runtime::sampling::{
    argmax, splitmix64, Sampler, SamplingParams, StopCriteria, TextStream, Xoshiro256,
};
use vl3c_runtime::tokenizer::{TextTokenizer, TokenizerError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny_dir() -> PathBuf {
    root().join("examples/tiny")
}

fn golden() -> Value {
    let path = root().join("tests/fixtures/run/tiny_prompt.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_dir(&tiny_dir()).unwrap()
}

/// The picture through the Rust preprocessing with examples/tiny's processor settings.
fn picture() -> vl3c_runtime::preprocess::ProcessedImages {
    let cfg = ImageProcessorConfig::from_model_dir(&tiny_dir()).unwrap();
    let img = load_image(root().join("examples/picture.png")).unwrap();
    preprocess_images(&[img], &cfg).unwrap()
}

// ---------------------------------------------------------------------------------------------
// tokenizer

#[test]
fn tokenizer_special_tokens_and_eos() {
    let g = golden();
    let tok = tokenizer();
    let sp = tok.special();
    let want = |name: &str| g["special_token_ids"][name].as_u64().map(|x| x as u32);
    assert_eq!(sp.im_start, want("<|im_start|>"));
    assert_eq!(sp.im_end, want("<|im_end|>"));
    assert_eq!(sp.end_of_text, want("<|endoftext|>"));
    assert_eq!(sp.image_pad, want("<|image_pad|>"));
    assert_eq!(sp.video_pad, want("<|video_pad|>"));
    assert_eq!(tok.vocab_size(), g["vocab_size"].as_u64().unwrap() as usize);
    // <|im_end|> first, then generation_config's [im_end, endoftext] (deduplicated)
    assert_eq!(
        tok.eos_ids(),
        &[sp.im_end.unwrap(), sp.end_of_text.unwrap()]
    );
    assert!(tok.is_eos(sp.im_end.unwrap()));
    assert!(!tok.is_eos(sp.image_pad.unwrap()));
}

#[test]
fn tokenizer_matches_transformers_and_round_trips() {
    let g = golden();
    let tok = tokenizer();
    for s in g["encode_samples"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(&s["ids"]), "encoding {text:?}");
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
    // special tokens are skippable on decode
    let with_special = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert_eq!(tok.decode(&with_special, true).unwrap(), "user\nhi");
}

#[test]
fn tokenizer_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("vl3c-text-no-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = TextTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Missing { .. }));
    assert!(
        err.to_string().contains("no tokenizer.json in")
            && err.to_string().contains(&*dir.to_string_lossy())
    );
    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    let err = TextTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::copy(
        tiny_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": 100000}"#,
    )
    .unwrap();
    let err = TextTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("outside the vocabulary"),
        "{err}"
    );
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": "x"}"#,
    )
    .unwrap();
    let err = TextTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("eos_token_id"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let tok = tokenizer();
    assert!(tok
        .require_token("<|nope|>")
        .unwrap_err()
        .to_string()
        .contains("tokenizer.json"));
    // transformers' decode drops ids it has no token for: [72, 1000000, 73] is "ij"
    let (i, j) = (tok.token_id("i").unwrap(), tok.token_id("j").unwrap());
    assert_eq!(tok.decode(&[i, 1_000_000, j], false).unwrap(), "ij");
}

// ---------------------------------------------------------------------------------------------
// chat prompt

#[test]
fn chat_prompt_ids_equal_transformers() {
    let g = golden();
    let tok = tokenizer();
    let processed = picture();
    assert_eq!(
        processed
            .grid_thw
            .iter()
            .map(|r| r.to_vec())
            .collect::<Vec<_>>(),
        serde_json::from_value::<Vec<Vec<i64>>>(g["image_grid_thw"].clone()).unwrap()
    );
    let prompt = g["prompt"].as_str().unwrap();
    let messages = [Message::user_with_images(1, prompt)];
    assert_eq!(
        render_chat(&messages, false, true),
        g["prompt_text"].as_str().unwrap()
    );
    let images: Vec<ImageTokens> = processed
        .grid_thw
        .iter()
        .zip(&processed.merge_sizes)
        .map(|(&grid_thw, &merge_size)| ImageTokens {
            grid_thw,
            merge_size,
        })
        .collect();
    let got = prompt_ids(&tok, &messages, false, &images, &[]).unwrap();
    assert_eq!(got, ids(&g["input_ids"]));
}

#[test]
fn chat_template_variants() {
    let m = [Message::user_with_images(2, "Compare.")];
    assert_eq!(
        render_chat(&m, true, false),
        "<|im_start|>system\nYou are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help \
         people understand images and videos.<|im_end|>\n<|im_start|>user\n<|image_pad|>\n<|image_pad|>\nCompare.<|im_end|>\n"
    );
    // no DAMO system line before an explicit system message
    let m = [
        Message::text("system", "Be brief."),
        Message::text("user", "Hi"),
    ];
    assert_eq!(
        render_chat(&m, true, true),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let err = expand_placeholders("<|image_pad|>", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 <|image_pad|> placeholder(s) but 0 image(s)"),
        "{err}"
    );
}

#[test]
fn timestamps_format_like_python() {
    for case in golden()["timestamp_format"].as_array().unwrap() {
        let v = case["value"].as_f64().unwrap();
        assert_eq!(
            format_timestamp(v),
            case["python"].as_str().unwrap(),
            "{v:?}"
        );
    }
    // exact binary ties break to even, like Python
    assert_eq!(format_timestamp(0.25), "0.2");
    assert_eq!(format_timestamp(0.75), "0.8");
    assert_eq!(format_timestamp(0.35), "0.3");
    assert_eq!(format_timestamp(2.45), "2.5");
}

#[test]
fn video_layout_for_a_synthetic_mask() {
    // 3 frames × 4 merged tokens; frame 1 fully pruned (possible for a hand-made mask)
    let mask = [
        true, true, true, true, false, false, false, false, false, true, false, true,
    ];
    let v = VideoTokens::from_mask(vec![0.0, 0.25, 1.0 / 3.0], &mask).unwrap();
    assert_eq!(v.kept_per_frame, vec![4, 0, 2]);
    let p = "<|video_pad|>";
    let expected = format!("Time 0.0s:{p}{p}{p}{p},Time 0.2s:,Time 0.3s:{p}{p}");
    assert_eq!(video_placeholder(&v), expected);
    let expanded = expand_placeholders("a<|video_pad|>\nb", &[], &[v]).unwrap();
    assert_eq!(expanded, format!("a{expected}\nb"));
    let err = VideoTokens::from_mask(vec![0.0, 1.0], &[true, true, true])
        .expect_err("3 entries do not split into 2 frames");
    assert!(
        err.contains("mask of 3 entries does not split into 2 frames"),
        "{err}"
    );
    assert_eq!(
        VideoTokens::timestamps_from_indices(&[0, 5, 10], 10.0),
        vec![0.0, 0.5, 1.0]
    );
}

#[test]
fn video_prompt_ids_equal_transformers() {
    let g = golden();
    let v = &g["video"];
    let tok = tokenizer();
    let timestamps: Vec<f64> = v["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let mask: Vec<bool> = v["video_compression_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_bool().unwrap())
        .collect();
    let video = VideoTokens::from_mask(timestamps, &mask).unwrap();
    let messages = [Message {
        role: "user".into(),
        content: vec![
            vl3c_runtime::chat::Content::Video,
            vl3c_runtime::chat::Content::Text(v["text"].as_str().unwrap().into()),
        ],
    }];
    let got = prompt_ids(&tok, &messages, false, &[], &[video]).unwrap();
    assert_eq!(got, ids(&v["input_ids"]));
}

// ---------------------------------------------------------------------------------------------
// sampling

#[test]
fn rng_known_answers() {
    // SplitMix64 from state 0 and xoshiro256** from state [1, 2, 3, 4]: reference values of the
    // authors' C code.
    let mut s = 0u64;
    assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
    let mut x = Xoshiro256::from_state([1, 2, 3, 4]);
    assert_eq!(x.next_u64(), 11520);
    assert_eq!(x.next_u64(), 0);
    assert_eq!(x.next_u64(), 1509978240);
    let f = Xoshiro256::seed_from_u64(7).next_f64();
    assert!((0.0..1.0).contains(&f));
}

#[test]
fn greedy_ties_pick_the_lowest_id() {
    assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    assert_eq!(argmax(&[5.0]), 0);
    assert_eq!(argmax(&[1.0, f32::NAN, 9.0]), 1);
    assert_eq!(Sampler::greedy().sample(&[-1.0, 2.0, 2.0]), 1);
}

fn logits_fixture() -> Vec<f32> {
    // distinct values: ties would make "the" argmax ambiguous for sampling
    (0..50)
        .map(|i| (i as f32 * 0.37).sin() * 3.0 + i as f32 * 1e-3)
        .collect()
}

#[test]
fn top_k_one_and_tiny_temperature_are_greedy() {
    let logits = logits_fixture();
    let best = argmax(&logits);
    for seed in 0..20 {
        let mut k1 = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed,
        });
        assert_eq!(k1.sample(&logits), best);
        let mut cold = Sampler::new(SamplingParams {
            temperature: 1e-3,
            top_k: 0,
            top_p: 1.0,
            seed,
        });
        assert_eq!(cold.sample(&logits), best);
        let mut zero = Sampler::new(SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 0.5,
            seed,
        });
        assert_eq!(zero.sample(&logits), best);
    }
}

#[test]
fn top_k_keeps_ties_and_top_p_keeps_at_least_one() {
    let s = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 2,
        top_p: 1.0,
        seed: 0,
    });
    let p = s.probabilities(&[1.0, 3.0, 2.0, 2.0, 0.0]);
    // the 2nd-largest value ties: transformers keeps every score ≥ the k-th
    assert_eq!(p.iter().filter(|&&x| x > 0.0).count(), 3);
    assert_eq!(p[0], 0.0);
    let tiny_p = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1e-6,
        seed: 0,
    });
    let logits = logits_fixture();
    let p = tiny_p.probabilities(&logits);
    assert_eq!(p.iter().filter(|&&x| x > 0.0).count(), 1);
    assert_eq!(p[argmax(&logits) as usize], 1.0);
    // probs 0.5, 0.3, 0.2 (in that order of logits): top_p 0.7 keeps the first two (0.5 < 0.7 ≤ 0.8)
    let l: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|x| x.ln()).collect();
    let p = Sampler::new(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.7,
        seed: 0,
    })
    .probabilities(&l);
    assert!(
        (p[0] - 0.625).abs() < 1e-6 && (p[1] - 0.375).abs() < 1e-6 && p[2] == 0.0,
        "{p:?}"
    );
    let err = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(err.starts_with("top_p must be in (0, 1]"), "{err}");
    let err = SamplingParams {
        temperature: -1.0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        err.starts_with("temperature must be a finite number ≥ 0"),
        "{err}"
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
    let logits = logits_fixture();
    let params = SamplingParams {
        temperature: 1.5,
        top_k: 20,
        top_p: 0.9,
        seed: 42,
    };
    let run = |seed| {
        let mut s = Sampler::new(SamplingParams { seed, ..params });
        (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    let probs = Sampler::new(params).probabilities(&logits);
    let draws = run(1);
    assert!(
        draws.iter().all(|&t| probs[t as usize] > 0.0),
        "sampled a removed token"
    );
    assert!(draws.iter().collect::<std::collections::HashSet<_>>().len() > 1);
}

#[test]
fn stop_criteria() {
    let tok = tokenizer();
    let stop = StopCriteria::for_tokenizer(&tok, 3);
    let im_end = tok.special().im_end.unwrap();
    assert!(!stop.should_stop(&[5]));
    assert!(stop.should_stop(&[5, im_end]));
    assert!(stop.should_stop(&[5, 6, 7]));
}

// ---------------------------------------------------------------------------------------------
// streaming

#[test]
fn stream_waits_for_a_split_multibyte_char() {
    let tok = tokenizer();
    let ids = tok.encode("a ☕!", false).unwrap();
    // byte-level tokens: the 3 bytes of ☕ cannot be one token in this tiny vocabulary
    let mut stream = TextStream::new(&tok, true);
    let outs: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    let text: String =
        outs.iter().flatten().cloned().collect::<String>() + &stream.finish().unwrap();
    assert_eq!(text, "a ☕!");
    assert!(
        outs.iter().flatten().all(|s| !s.contains('\u{FFFD}')),
        "{outs:?}"
    );
    assert!(
        outs.iter().any(|o| o.is_none()),
        "a partial character must be held back: {outs:?}"
    );
    assert!(outs.iter().flatten().any(|s| s.contains('☕')));
}

#[test]
fn stream_of_the_golden_generation_equals_transformers_decode() {
    let g = golden();
    let tok = tokenizer();
    let generated = ids(&g["generated_ids"]);
    let mut stream = TextStream::new(&tok, true);
    let mut text = String::new();
    for &id in &generated {
        text.extend(stream.push(id).unwrap());
    }
    text += &stream.finish().unwrap();
    assert_eq!(text, g["generated_text"].as_str().unwrap());
    assert_eq!(tok.decode(&generated, true).unwrap(), text);
}

// ---------------------------------------------------------------------------------------------
// end to end: Rust preprocessing + golden prompt ids through the reference model

#[test]
fn tiny_model_greedy_generation_equals_transformers() {
    let g = golden();
    let model = vl3c_runtime::model::Model::open(&tiny_dir()).unwrap();
    let processed = picture();
    let input_ids: Vec<i64> = ids(&g["input_ids"]).into_iter().map(i64::from).collect();
    let n = processed.grid_thw.len();
    let inputs = HashMap::from([
        (
            "input_ids".to_string(),
            Tensor::i64(vec![1, input_ids.len()], input_ids),
        ),
        (
            "pixel_values".to_string(),
            Tensor::f32(
                vec![processed.n_patches(), processed.patch_dim],
                processed.pixel_values,
            ),
        ),
        (
            "image_grid_thw".to_string(),
            Tensor::i64(
                vec![n, 3],
                processed.grid_thw.iter().flatten().copied().collect(),
            ),
        ),
        (
            "image_merge_sizes".to_string(),
            Tensor::i64(vec![n], processed.merge_sizes),
        ),
    ]);
    let max_new = g["max_new_tokens"].as_u64().unwrap() as usize;
    let out = model.forward(&inputs, max_new).unwrap();
    let got: Vec<u32> = out
        .generated_ids
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    assert_eq!(got, ids(&g["generated_ids"]));
}
