//! Text generation over a model that can prefill a prompt and then decode one token at a time:
//! vision + projector + prefill once, then sample → stream → decode step until an eos id or
//! `max_new_tokens`, as transformers' `generate` does for one sequence.
//!
//! The loop is written against [`StepModel`], not [`Model`], so the compiled engines slot in by
//! implementing the same two calls; today the reference executor's [`Model`] implements it.

use std::time::{Duration, Instant};

use crate::chat::{prompt_ids, ChatError, ImageTokens, Message};
use crate::exec::Tensor;
use crate::media::{EncodedImages, EncodedVideo};
use crate::model::{KvState, LogitsToKeep, Model, ModelError, NamedTensors};
use crate::preprocess::ProcessedImages;
use crate::sampling::{Sampler, StopCriteria};
use crate::tokenizer::TextTokenizer;

/// A model that generation can drive: a prompt in, then one token at a time.
pub trait StepModel {
    /// Everything a sequence carries between steps (the KV cache, its position).
    type State;

    /// Runs the whole prompt; returns the logits of its last position and the state after it.
    fn prefill(&self, inputs: &NamedTensors) -> Result<(Vec<f32>, Self::State), ModelError>;

    /// Feeds one token; returns the logits of its position.
    fn decode_step(&self, state: &mut Self::State, token: u32) -> Result<Vec<f32>, ModelError>;
}

impl StepModel for Model {
    type State = KvState;

    fn prefill(&self, inputs: &NamedTensors) -> Result<(Vec<f32>, KvState), ModelError> {
        let (logits, state) = Model::prefill_keeping(self, inputs, LogitsToKeep::Last)?;
        Ok((logits.to_f32_vec(), state))
    }

    fn decode_step(&self, state: &mut KvState, token: u32) -> Result<Vec<f32>, ModelError> {
        Model::decode_step(self, state, token.into())
    }
}

/// A tokenized prompt and the vision inputs its placeholders stand for.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// The vision tensors fed with `input_ids`, by transformers' names: pixels the prefill
    /// encodes (`pixel_values`, …) or embeddings encoded earlier (`image_embeds`, `video_embeds`
    /// with `video_compression_mask`).
    pub vision: NamedTensors,
    pub image_tokens: usize,
    /// Video tokens before and after Differential Frame Pruning.
    pub video_tokens: (usize, usize),
}

impl Prompt {
    /// The prompt transformers' processor builds for `messages` with these images: chat
    /// template, placeholder expansion (one pad per merged patch), tokenization.
    pub fn chat(
        tokenizer: &TextTokenizer,
        messages: &[Message],
        add_system_prompt: bool,
        images: Option<ProcessedImages>,
    ) -> Result<Prompt, ChatError> {
        let tokens: Vec<ImageTokens> = images
            .iter()
            .flat_map(|p| p.grid_thw.iter().zip(&p.merge_sizes))
            .map(|(&grid_thw, &merge_size)| ImageTokens {
                grid_thw,
                merge_size,
            })
            .collect();
        let ids = prompt_ids(tokenizer, messages, add_system_prompt, &tokens, &[])?;
        let mut vision = NamedTensors::new();
        let mut image_tokens = 0;
        if let Some(p) = &images {
            let n = p.grid_thw.len();
            vision.insert(
                "pixel_values".into(),
                Tensor::f32(vec![p.n_patches(), p.patch_dim], p.pixel_values.clone()),
            );
            vision.insert(
                "image_grid_thw".into(),
                Tensor::i64(vec![n, 3], p.grid_thw.iter().flatten().copied().collect()),
            );
            vision.insert(
                "image_merge_sizes".into(),
                Tensor::i64(vec![n], p.merge_sizes.clone()),
            );
            image_tokens = p.tokens_per_image().iter().sum();
        }
        Ok(Prompt {
            ids,
            vision,
            image_tokens,
            video_tokens: (0, 0),
        })
    }

    /// The prompt for `messages` over images and videos the vision tower already encoded: each
    /// video's placeholder expands to the tokens its keep-mask kept (all of them when `prune`
    /// is false), and prefill reads the embeddings instead of encoding pixels.
    pub fn chat_encoded(
        tokenizer: &TextTokenizer,
        messages: &[Message],
        add_system_prompt: bool,
        images: Option<&EncodedImages>,
        videos: &[&EncodedVideo],
        prune: bool,
    ) -> Result<Prompt, ChatError> {
        let video_tokens = videos
            .iter()
            .enumerate()
            .map(|(index, v)| {
                v.video_tokens(prune)
                    .map_err(|msg| ChatError::Video { index, msg })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let image_tokens = images.map_or(&[][..], |i| &i.tokens[..]);
        let ids = prompt_ids(
            tokenizer,
            messages,
            add_system_prompt,
            image_tokens,
            &video_tokens,
        )?;
        let mut vision = NamedTensors::new();
        if let Some(i) = images {
            vision.insert("image_embeds".into(), i.embeds.clone());
        }
        if !videos.is_empty() {
            let hidden = videos[0].embeds.shape[1];
            let rows = videos.iter().map(|v| v.embeds.shape[0]).sum();
            let data = videos.iter().flat_map(|v| v.embeds.to_f32_vec()).collect();
            let mask: Vec<bool> = videos.iter().flat_map(|v| v.mask(prune)).collect();
            vision.insert("video_embeds".into(), Tensor::f32(vec![rows, hidden], data));
            vision.insert(
                "video_compression_mask".into(),
                Tensor::bool(vec![mask.len()], mask),
            );
        }
        let before = videos.iter().map(|v| v.tokens_before_pruning()).sum();
        let after = if prune {
            videos.iter().map(|v| v.tokens_after_pruning()).sum()
        } else {
            before
        };
        Ok(Prompt {
            ids,
            vision,
            image_tokens: images.map_or(0, |i| i.token_count()),
            video_tokens: (before, after),
        })
    }

    /// transformers' `forward` arguments for this prompt.
    pub fn tensors(&self) -> NamedTensors {
        let ids: Vec<i64> = self.ids.iter().map(|&i| i64::from(i)).collect();
        let mut t = self.vision.clone();
        t.insert(
            "input_ids".to_string(),
            Tensor::i64(vec![1, ids.len()], ids),
        );
        t
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid sampling settings: {0}")]
    Params(String),
    /// The per-token callback failed (e.g. stdout closed); generation stops there.
    #[error("{0}")]
    Callback(Box<dyn std::error::Error + Send + Sync>),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The last token is an eos id (it is kept in `ids`, as transformers keeps it).
    Eos,
    MaxNewTokens,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    /// Video tokens before and after Differential Frame Pruning.
    pub video_tokens: (usize, usize),
    pub new_tokens: usize,
    /// From the start of `generate` (vision, projector, prefill, first sample) to the first
    /// token; `None` when no token was generated.
    pub time_to_first_token: Option<Duration>,
    /// All of `generate`.
    pub total: Duration,
}

impl GenerationStats {
    /// Decode speed: the tokens after the first over the time after the first (the first
    /// token's cost is prefill, which TTFT reports). `None` with fewer than two tokens.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let ttft = self.time_to_first_token?;
        let secs = (self.total - ttft).as_secs_f64();
        (self.new_tokens > 1 && secs > 0.0).then(|| (self.new_tokens - 1) as f64 / secs)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens only (not the prompt), the eos token included when it ended generation.
    pub ids: Vec<u32>,
    /// `None` only when `max_new_tokens` is 0.
    pub stop: Option<StopReason>,
    pub stats: GenerationStats,
}

/// Generates one sequence at a time with a sampler and stop criteria.
pub struct Generator<'m, M: StepModel> {
    model: &'m M,
    sampler: Sampler,
    stop: StopCriteria,
}

impl<'m, M: StepModel> Generator<'m, M> {
    pub fn new(model: &'m M, sampler: Sampler, stop: StopCriteria) -> Self {
        Generator {
            model,
            sampler,
            stop,
        }
    }

    /// Prefills `prompt`, then samples and decodes until a stop criterion holds. `on_token`
    /// sees every new token as soon as it is chosen (before the next decode step runs), so a
    /// caller can stream text; an error from it ends generation with that error.
    pub fn generate<F, E>(
        &mut self,
        prompt: &Prompt,
        mut on_token: F,
    ) -> Result<Generation, GenerateError>
    where
        F: FnMut(u32) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.sampler
            .params()
            .validate()
            .map_err(GenerateError::Params)?;
        let start = Instant::now();
        let mut stats = GenerationStats {
            prompt_tokens: prompt.ids.len(),
            image_tokens: prompt.image_tokens,
            video_tokens: prompt.video_tokens,
            new_tokens: 0,
            time_to_first_token: None,
            total: Duration::ZERO,
        };
        let (mut logits, mut state) = self.model.prefill(&prompt.tensors())?;
        let mut ids = Vec::new();
        // `should_stop(&[])` holds only for max_new_tokens = 0: then prefill alone runs.
        while !self.stop.should_stop(&ids) {
            let next = self.sampler.sample(&logits);
            ids.push(next);
            if ids.len() == 1 {
                stats.time_to_first_token = Some(start.elapsed());
            }
            on_token(next).map_err(|e| GenerateError::Callback(e.into()))?;
            if self.stop.should_stop(&ids) {
                break;
            }
            logits = self.model.decode_step(&mut state, next)?;
        }
        let stop = ids.last().map(|&last| {
            if self.stop.is_eos(last) {
                StopReason::Eos
            } else {
                StopReason::MaxNewTokens
            }
        });
        stats.new_tokens = ids.len();
        stats.total = start.elapsed();
        Ok(Generation { ids, stop, stats })
    }
}
