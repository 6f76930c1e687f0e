//! The generation loop on examples/tiny: prefill / decode_step agree with `forward`, greedy
//! generation reproduces transformers' golden ids, and stopping, streaming callbacks and
//! seeding behave.

use std::path::PathBuf;

use serde_json::Value;
use vl3c_runtime::chat::Message;
use vl3c_runtime::generate::{GenerateError, Generator, Prompt, StopReason};
use vl3c_runtime::model::{LogitsToKeep, Model};
use vl3c_runtime::preprocess::{load_image, preprocess_images, ImageProcessorConfig};
use vl3c_runtime::sampling::{Sampler, SamplingParams, StopCriteria};
use vl3c_runtime::tokenizer::TextTokenizer;

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

/// The golden prompt built the way `vl3c run` builds it.
fn golden_prompt(tok: &TextTokenizer) -> Prompt {
    let cfg = ImageProcessorConfig::from_model_dir(&tiny_dir()).unwrap();
    let img = load_image(root().join("examples/picture.png")).unwrap();
    let images = preprocess_images(&[img], &cfg).unwrap();
    let messages = [Message::user_with_images(
        1,
        golden()["prompt"].as_str().unwrap(),
    )];
    Prompt::chat(tok, &messages, false, Some(images)).unwrap()
}

fn setup() -> (Model, TextTokenizer, Prompt) {
    let tok = TextTokenizer::from_dir(&tiny_dir()).unwrap();
    let prompt = golden_prompt(&tok);
    (Model::open(&tiny_dir()).unwrap(), tok, prompt)
}

fn collect(
    model: &Model,
    sampler: Sampler,
    stop: StopCriteria,
    prompt: &Prompt,
) -> (Vec<u32>, Option<StopReason>) {
    let mut seen = Vec::new();
    let g = Generator::new(model, sampler, stop)
        .generate(prompt, |id| {
            seen.push(id);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert_eq!(seen, g.ids, "the callback sees every token, in order");
    (g.ids, g.stop)
}

#[test]
fn greedy_generation_equals_transformers() {
    let (model, tok, prompt) = setup();
    let g = golden();
    assert_eq!(prompt.ids, ids(&g["input_ids"]));
    assert_eq!(prompt.image_tokens, 104);
    let mut gen = Generator::new(
        &model,
        Sampler::greedy(),
        StopCriteria::for_tokenizer(&tok, 12),
    );
    let out = gen
        .generate(&prompt, |_| Ok::<(), std::io::Error>(()))
        .unwrap();
    assert_eq!(out.ids, ids(&g["generated_ids"]));
    assert_eq!(out.stop, Some(StopReason::MaxNewTokens));
    let s = &out.stats;
    assert_eq!(
        (s.prompt_tokens, s.image_tokens, s.new_tokens),
        (124, 104, 12)
    );
    let ttft = s.time_to_first_token.unwrap();
    assert!(ttft <= s.total);
    assert!(s.decode_tokens_per_second().is_some_and(|r| r > 0.0));
}

#[test]
fn prefill_and_decode_steps_match_forward() {
    let (model, _, prompt) = setup();
    let inputs = prompt.tensors();
    let forward = model.forward(&inputs, 3).unwrap();
    let (logits, mut state) = model.prefill(&inputs).unwrap();
    assert_eq!(logits.to_f32_vec(), forward.logits.to_f32_vec());
    assert_eq!(state.len(), 124);
    // logits_to_keep=1: the last row of forward's logits (a one-row matmul may sum in another
    // order: the f32 bar) and the same cache.
    let (last, last_state) = model.prefill_keeping(&inputs, LogitsToKeep::Last).unwrap();
    assert_eq!(last.shape, vec![1, 1, 501]);
    let all = logits.to_f32_vec();
    let worst = last
        .to_f32_vec()
        .iter()
        .zip(&all[all.len() - 501..])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "last-position logits differ by {worst}");
    assert_eq!(last_state.len(), 124);
    let want = forward.generated_ids.unwrap();
    let step = model.decode_step(&mut state, want[0]).unwrap();
    assert_eq!(
        step.len(),
        501,
        "a decode step returns one position's logits"
    );
    assert_eq!(state.len(), 125);
    assert!(model
        .decode_step(&mut state, 501)
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}

#[test]
fn stops_at_an_eos_id_and_keeps_it() {
    let (model, _, prompt) = setup();
    // The tiny model never emits <|im_end|> in 12 steps; treat its 4th token (420) as eos.
    let stop = StopCriteria {
        eos_ids: vec![420],
        max_new_tokens: 12,
    };
    let (got, reason) = collect(&model, Sampler::greedy(), stop, &prompt);
    assert_eq!(got, vec![123, 4, 123, 420]);
    assert_eq!(reason, Some(StopReason::Eos));
    // eos on the very first token: one token, no decode step
    let stop = StopCriteria {
        eos_ids: vec![123],
        max_new_tokens: 12,
    };
    assert_eq!(
        collect(&model, Sampler::greedy(), stop, &prompt),
        (vec![123], Some(StopReason::Eos))
    );
    let stop = StopCriteria {
        eos_ids: vec![],
        max_new_tokens: 0,
    };
    assert_eq!(
        collect(&model, Sampler::greedy(), stop, &prompt),
        (vec![], None)
    );
}

#[test]
fn callback_errors_end_generation() {
    let (model, tok, prompt) = setup();
    let mut calls = 0;
    let mut gen = Generator::new(
        &model,
        Sampler::greedy(),
        StopCriteria::for_tokenizer(&tok, 12),
    );
    let err = gen
        .generate(&prompt, |_| {
            calls += 1;
            if calls == 2 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "stdout closed",
                ));
            }
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, GenerateError::Callback(_)) && err.to_string() == "stdout closed",
        "{err}"
    );
    assert_eq!(calls, 2);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let (model, tok, prompt) = setup();
    let run = |seed| {
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.9,
            seed,
        };
        collect(
            &model,
            Sampler::new(params),
            StopCriteria::for_tokenizer(&tok, 16),
            &prompt,
        )
        .0
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let bad = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    };
    let err = Generator::new(
        &model,
        Sampler::new(bad),
        StopCriteria::for_tokenizer(&tok, 4),
    )
    .generate(&prompt, |_| Ok::<(), std::io::Error>(()))
    .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}
