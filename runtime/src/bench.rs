//! What `vl3c bench` measures and the physical limits it compares against: random inputs of a
//! model's shapes, the vision entry point on its own, the work a config implies (FLOPs, bytes
//! read per decoded token) and two quick hardware probes (read bandwidth, FMA throughput).
//!
//! Everything here is derived from `config.json` alone, so a compiled engine (which has no
//! checkpoint) gets the same limits as the checkpoint it came from.

use crate::exec::Tensor;
use crate::model::{Modality, Model, ModelError};
use vl3c_frontends::names::{expected_weights, Part, EMBED_TOKENS};
use vl3c_frontends::ModelConfig;
use vl3c_ir::DType;

/// Vision encoder + projector over images alone (no prefill): embeddings f32 [tokens, hidden].
/// The bench times the encoder separately from the LLM, which `Model::prefill` does not allow.
pub fn image_embed(
    model: &Model,
    pixels: &Tensor,
    grid: &Tensor,
    merge: Option<&Tensor>,
) -> Result<Tensor, ModelError> {
    Ok(model
        .encode(pixels, grid, merge, Modality::Image, &mut 0)?
        .embeds)
}

/// A small deterministic generator (splitmix64): benches need reproducible inputs, not quality.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1): the range of normalized pixels (mean 0.5, std 0.5 on [0, 1]).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The vision inputs of one `image_size`² image at merge 1: `pixel_values` f32
/// [(s/p)², channels·p²] of random normalized pixels and `image_grid_thw` [[1, s/p, s/p]].
pub fn random_image(
    cfg: &ModelConfig,
    image_size: usize,
    rng: &mut SplitMix,
) -> Result<(Tensor, Tensor), String> {
    let p = cfg.vision.patch_size;
    if image_size == 0 || !image_size.is_multiple_of(p) {
        return Err(format!(
            "--image-size {image_size} must be a positive multiple of the patch size {p}"
        ));
    }
    let side = image_size / p;
    let row = cfg.vision.num_channels * p * p;
    let pixels = (0..side * side * row).map(|_| rng.unit()).collect();
    Ok((
        Tensor::f32(vec![side * side, row], pixels),
        Tensor::i64(vec![1, 3], vec![1, side as i64, side as i64]),
    ))
}

/// `len` random text ids, none of them special: Qwen2's special tokens start at 151643, and the
/// config's bos/eos/pad and image/video placeholders are skipped (a placeholder would demand
/// vision inputs).
pub fn random_ids(cfg: &ModelConfig, len: usize, rng: &mut SplitMix) -> Vec<i64> {
    let t = &cfg.text;
    let mut special: Vec<u32> = vec![cfg.image_token_id];
    special.extend(cfg.video_token_id);
    special.extend(t.bos_token_id);
    special.extend(t.pad_token_id);
    special.extend(&t.eos_token_ids);
    let hi = t.vocab_size.min(151_643) as u64;
    let mut ids = Vec::with_capacity(len);
    while ids.len() < len {
        let id = rng.next_u64() % hi;
        if !special.contains(&(id as u32)) {
            ids.push(id as i64);
        }
    }
    ids
}

/// The work of each phase, from the config: what a perfect implementation must compute or read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    /// Vision encoder + projector over one image: 2·(matmul params)·patches + attention.
    pub vision_flops: f64,
    /// Prefill of `context` tokens with the last position's logits (what generation samples
    /// from, transformers' `logits_to_keep=1`): 2·(LLM matmul params but lm_head)·context +
    /// 2·(lm_head params) + causal attention.
    pub prefill_flops: f64,
    /// Bytes one decode step must read: every LLM weight the step multiplies by (layers, final
    /// norm, lm_head) in its stored dtype. The embedding table counts only when it is the tied
    /// lm_head (an untied one is a one-row gather). The KV cache (< 1% at 2B shapes and a few
    /// hundred positions) is left out.
    pub decode_bytes_per_token: f64,
}

impl Work {
    /// `dtype_of(name)` is the stored dtype of a weight (a checkpoint's, or the config's).
    pub fn of(
        cfg: &ModelConfig,
        patches: usize,
        context: usize,
        dtype_of: &dyn Fn(&str) -> DType,
    ) -> Work {
        let (mut vision_params, mut llm_params, mut decode_bytes) = (0.0, 0.0, 0.0);
        for w in expected_weights(cfg) {
            let n = w.shape.iter().product::<usize>() as f64;
            let matrix = w.shape.len() >= 2;
            match w.part {
                Part::Vision | Part::Projector if matrix => vision_params += n,
                Part::Llm => {
                    let gather_only = w.name == EMBED_TOKENS && !cfg.tie_word_embeddings;
                    if matrix && !gather_only {
                        llm_params += n;
                    }
                    if !gather_only {
                        decode_bytes += n * dtype_of(&w.name).size_bytes() as f64;
                    }
                }
                _ => {}
            }
        }
        let (v, t) = (&cfg.vision, &cfg.text);
        let n = patches as f64;
        // Bidirectional attention over the whole image: QKᵀ and PV, 2 FLOPs per multiply-add.
        let vision_attn = v.num_hidden_layers as f64
            * 2.0
            * 2.0
            * n
            * n
            * (v.num_attention_heads * v.head_dim) as f64;
        let l = context as f64;
        // Causal: position i attends to i+1 keys, L(L+1)/2 pairs per head.
        let prefill_attn = t.num_hidden_layers as f64
            * 2.0
            * 2.0
            * (l * (l + 1.0) / 2.0)
            * (t.num_attention_heads * t.head_dim) as f64;
        let head = (t.vocab_size * t.hidden_size) as f64;
        Work {
            vision_flops: 2.0 * vision_params * n + vision_attn,
            prefill_flops: 2.0 * (llm_params - head) * l + 2.0 * head + prefill_attn,
            decode_bytes_per_token: decode_bytes,
        }
    }
}

/// Read bandwidth in GB/s (10⁹ bytes/s) as the decode GEMV meets it: all threads, independent
/// vector accumulators, best of 5 passes ([`vl3c_cpu::peak::read_bandwidth_gbs`]). Give it
/// more than the last-level cache.
pub fn measure_bandwidth_gbs(bytes: usize, threads: usize) -> f64 {
    vl3c_cpu::peak::read_bandwidth_gbs(bytes, threads, 5)
}

/// The compute peak the engine's GEMMs can approach, in GFLOP/s, and the instruction measured:
/// the one the GEMMs issue on this CPU (AMX `tdpbf16ps`, zmm `vdpbf16ps` or f32 FMA).
pub fn measure_matmul_peak_gflops(threads: usize) -> (f64, &'static str) {
    vl3c_cpu::peak::gemm_peak_gflops(threads)
}

/// f32 FMA throughput in GFLOP/s over `threads` threads (the reference executor's matmuls are
/// f32), and the instruction measured.
pub fn measure_peak_gflops(threads: usize) -> (f64, &'static str) {
    vl3c_cpu::peak::fma_peak_gflops(threads)
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`); None elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn unit_is_in_range() {
        let mut r = SplitMix::new(7);
        assert!((0..10_000)
            .map(|_| r.unit())
            .all(|x| (-1.0..1.0).contains(&x)));
    }
}
