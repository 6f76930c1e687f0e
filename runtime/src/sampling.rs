//! Next-token selection and stopping, as transformers' `generate` does it: greedy argmax, or
//! sampling after the warpers temperature → top-k → top-p (the order of
//! `GenerationMixin._get_logits_processor`), plus a streaming detokenizer.
//!
//! Sampling cannot reproduce torch's RNG stream, so seeded runs are reproducible within vl3c
//! (same seed, same logits → same tokens on every platform), not against torch.

use crate::tokenizer::{TextTokenizer, TokenizerError};

/// Temperatures at or below this are treated as greedy: transformers refuses temperature 0 with
/// sampling, and `vl3c run --temperature 0` means "no sampling".
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Sampling settings; the defaults are greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// ≤ [`GREEDY_TEMPERATURE`] → greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// ≥ 1 = off.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        // NaN temperature counts as greedy too (`validate` reports it)
        self.temperature.is_nan() || self.temperature <= GREEDY_TEMPERATURE || self.top_k == 1
    }

    /// Rejects values transformers rejects (negative temperature, top_p outside (0, 1]).
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be a finite number ≥ 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman & Vigna, <https://prng.di.unimi.it/>), state seeded from a u64 by
/// SplitMix64 as its authors recommend. Small, fast, and fully specified, so a seed means the
/// same stream everywhere.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub fn seed_from_u64(seed: u64) -> Xoshiro256 {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Xoshiro256 { s }
    }

    /// From a raw state (must not be all zero); for known-answer tests.
    pub fn from_state(s: [u64; 4]) -> Xoshiro256 {
        Xoshiro256 { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One SplitMix64 step (state += golden gamma, then the mix).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `torch.argmax` on a vector: the first maximum wins ties; NaN counts as the maximum (torch
/// propagates NaN), so a broken model shows up instead of being silently masked.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate().skip(1) {
        let b = logits[best];
        if b.is_nan() {
            break;
        }
        if x.is_nan() || x > b {
            best = i;
        }
    }
    best as u32
}

/// Chooses next tokens; one per call, from the logits of the last position.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            params,
            rng: Xoshiro256::seed_from_u64(params.seed),
        }
    }

    pub fn greedy() -> Sampler {
        Sampler::new(SamplingParams::default())
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token. Panics only on empty logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty(), "Sampler::sample on empty logits");
        if self.params.is_greedy() || logits.iter().any(|x| x.is_nan()) {
            return argmax(logits);
        }
        let probs = self.probabilities(logits);
        // inverse-CDF draw; the fallback covers u landing past the rounded total
        let u = self.rng.next_f64();
        let mut acc = 0.0;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                acc += p;
                last = i;
                if u < acc {
                    return i as u32;
                }
            }
        }
        last as u32
    }

    /// The distribution sampling draws from after temperature, top-k and top-p (f64, sums to 1;
    /// removed tokens are exactly 0). Greedy settings give a one-hot at the argmax.
    pub fn probabilities(&self, logits: &[f32]) -> Vec<f64> {
        let p = self.params;
        if p.is_greedy() {
            let mut one_hot = vec![0.0; logits.len()];
            one_hot[argmax(logits) as usize] = 1.0;
            return one_hot;
        }
        let t = p.temperature as f64;
        let mut scores: Vec<f64> = logits.iter().map(|&x| x as f64 / t).collect();
        if p.top_k > 0 && p.top_k < scores.len() {
            // TopKLogitsWarper: remove scores < the k-th largest (ties with it survive)
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[p.top_k - 1];
            scores
                .iter_mut()
                .filter(|s| **s < kth)
                .for_each(|s| *s = f64::NEG_INFINITY);
        }
        let mut probs = softmax(&scores);
        if p.top_p < 1.0 {
            // TopPLogitsWarper: sort ascending, remove while the cumulative probability is
            // ≤ 1 − top_p, always keep the most probable token. Equivalent to keeping the
            // smallest descending prefix whose mass reaches top_p.
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)));
            let limit = 1.0 - p.top_p as f64;
            let mut cum = 0.0;
            for &i in &order[..order.len() - 1] {
                cum += probs[i];
                if cum > limit {
                    break;
                }
                scores[i] = f64::NEG_INFINITY;
            }
            probs = softmax(&scores);
        }
        probs
    }
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut e: Vec<f64> = scores
        .iter()
        .map(|&s| {
            if s == f64::NEG_INFINITY {
                0.0
            } else {
                (s - max).exp()
            }
        })
        .collect();
    let sum: f64 = e.iter().sum();
    e.iter_mut().for_each(|x| *x /= sum);
    e
}

/// When generation ends: an eos id (which is kept in the output, as transformers keeps it) or
/// `max_new_tokens` generated tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCriteria {
    pub eos_ids: Vec<u32>,
    pub max_new_tokens: usize,
}

impl StopCriteria {
    pub fn for_tokenizer(tokenizer: &TextTokenizer, max_new_tokens: usize) -> StopCriteria {
        StopCriteria {
            eos_ids: tokenizer.eos_ids().to_vec(),
            max_new_tokens,
        }
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Whether to stop after `generated` (all new tokens so far).
    pub fn should_stop(&self, generated: &[u32]) -> bool {
        generated.len() >= self.max_new_tokens
            || generated.last().is_some_and(|&id| self.is_eos(id))
    }
}

/// Incremental detokenizer: each pushed token returns the text it completed. A token that ends
/// inside a multi-byte UTF-8 character returns nothing until the character is complete
/// (transformers' TextStreamer waits for whole words instead; this emits sooner but the
/// concatenated output is the same). `finish` returns what is left, so the concatenation of all
/// outputs equals `decode(all ids)`, U+FFFD for bytes that never formed a character included.
///
/// It decodes a sliding window (`prefix..`), not the whole sequence, so each step costs O(window).
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context (tokens before it are final).
    prefix: usize,
    /// Tokens before this are emitted.
    read: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, skip_special_tokens: bool) -> TextStream<'a> {
        TextStream {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one token; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let text = self.pending()?;
        if text.is_empty() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        // The window up to here ended on a whole character: it is final.
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(text))
    }

    /// Flushes what is held back (an incomplete character decodes to U+FFFD).
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let text = self.pending()?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(text)
    }

    /// Text of the window beyond what was already emitted.
    fn pending(&self) -> Result<String, TokenizerError> {
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let all = self
            .tokenizer
            .decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        // Decoding a longer window can only append (byte-level BPE), but guard against a
        // decoder that rewrites earlier text: then emit nothing rather than garbage.
        match all.strip_prefix(before.as_str()) {
            Some(rest) => Ok(rest.to_string()),
            None => Ok(String::new()),
        }
    }
}
