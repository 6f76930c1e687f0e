//! Attention (`Op::Attention`) in three shapes, each for f32 checkpoints (plain FMA, no bf16
//! rounding) and bf16 ones (tensor cores, softmax and accumulation in f32):
//! - vision: non-causal, block-diagonal by segments (every image or frame its own), both q and k
//!   rotated while loading (the optimizer folds the 2D RoPE into the op);
//! - LLM prefill: causal GQA over the cache plus the new tokens, q rotated while loading (keys come
//!   rotated from the cache append);
//! - decode: one query per head, flash-decoding split-KV with a log-sum-exp merge.
//!
//! Head count, kv heads, head_dim, scale and mask are baked in; lengths are scalar parameters named
//! like the graphs' symbols (`n_patches` is the sequence dim of the vision graphs' attention).

mod common;
mod decode;
mod flash_f32;
mod flash_mma;
mod reference;

pub use common::AttnSpec;

use super::{Case, Scratch, Sizes, Template, NMSE_BF16, NMSE_F32};
use crate::kir::{Kernel, Ty};
use vl3c_ir::{AttentionMask, Dim, Graph};

fn nmse_limit(dtype: Ty) -> f64 {
    if dtype == Ty::Bf16 {
        NMSE_BF16
    } else {
        NMSE_F32
    }
}

/// The prefill/vision kernel for a spec: plain FMA for f32, tensor cores for bf16.
fn flash_kernel(spec: &AttnSpec) -> Kernel {
    match spec.dtype {
        Ty::Bf16 => flash_mma::kernel(spec),
        _ => flash_f32::kernel(spec),
    }
}

/// The vision encoder's attention: `heads` heads of `head_dim`, segment mask, q and k rotated.
#[derive(Clone, Debug)]
pub struct VisionAttention {
    pub dtype: Ty,
    pub heads: usize,
    pub head_dim: usize,
}

impl VisionAttention {
    pub fn spec(&self) -> AttnSpec {
        AttnSpec {
            dtype: self.dtype,
            q_heads: self.heads,
            kv_heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f64).sqrt(),
            mask: AttentionMask::Segments,
            rope_q: true,
            rope_k: true,
        }
    }
}

impl Template for VisionAttention {
    fn op(&self) -> &'static str {
        "attention_vision"
    }
    fn name(&self) -> String {
        format!(
            "attention_vision(dtype={},heads={},head_dim={})",
            self.spec().dtype_name(),
            self.heads,
            self.head_dim
        )
    }
    fn kernels(&self) -> Vec<Kernel> {
        vec![flash_kernel(&self.spec())]
    }
    fn reference(&self) -> Graph {
        reference::vision(&self.spec())
    }
    /// `segments`: `frames` contiguous runs of (nearly) equal length, as `segment_ids` numbers
    /// the frames of a video.
    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        let n = *sizes.get("n_patches")?;
        let frames = sizes.get("frames").copied().unwrap_or(1).clamp(1, n.max(1));
        (name == "segments").then(|| (0..n).map(|i| i * frames / n).collect())
    }
    fn nmse_limit(&self) -> f64 {
        nmse_limit(self.dtype)
    }
}

/// The LLM's prefill attention: causal GQA over `past_len` cached keys and `seq_len` new ones;
/// `kv_capacity` is the cache's rows per kv head, as for decode.
#[derive(Clone, Debug)]
pub struct PrefillAttention {
    pub dtype: Ty,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl PrefillAttention {
    pub fn spec(&self) -> AttnSpec {
        llm_spec(self.dtype, self.q_heads, self.kv_heads, self.head_dim)
    }
}

fn llm_spec(dtype: Ty, q_heads: usize, kv_heads: usize, head_dim: usize) -> AttnSpec {
    AttnSpec {
        dtype,
        q_heads,
        kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f64).sqrt(),
        mask: AttentionMask::Causal,
        rope_q: true,
        rope_k: false,
    }
}

impl Template for PrefillAttention {
    fn op(&self) -> &'static str {
        "attention_prefill"
    }
    fn name(&self) -> String {
        let s = self.spec();
        format!(
            "attention_prefill(dtype={},q_heads={},kv_heads={},head_dim={})",
            s.dtype_name(),
            s.q_heads,
            s.kv_heads,
            s.head_dim
        )
    }
    fn kernels(&self) -> Vec<Kernel> {
        vec![flash_kernel(&self.spec())]
    }
    fn reference(&self) -> Graph {
        reference::prefill(&self.spec())
    }
    fn nmse_limit(&self) -> f64 {
        nmse_limit(self.dtype)
    }
}

/// The LLM's decode attention: one new token per head over `past_len + 1` keys, split-KV over at
/// most `max_chunks` chunks; `kv_capacity` is the cache's rows per kv head.
#[derive(Clone, Debug)]
pub struct DecodeAttention {
    pub dtype: Ty,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl DecodeAttention {
    pub fn spec(&self) -> AttnSpec {
        llm_spec(self.dtype, self.q_heads, self.kv_heads, self.head_dim)
    }
}

impl Template for DecodeAttention {
    fn op(&self) -> &'static str {
        "attention_decode"
    }
    fn name(&self) -> String {
        let s = self.spec();
        format!(
            "attention_decode(dtype={},q_heads={},kv_heads={},head_dim={})",
            s.dtype_name(),
            s.q_heads,
            s.kv_heads,
            s.head_dim
        )
    }
    fn kernels(&self) -> Vec<Kernel> {
        let spec = self.spec();
        vec![decode::split(&spec), decode::merge(&spec)]
    }
    fn reference(&self) -> Graph {
        reference::decode(&self.spec())
    }
    fn scratch(&self) -> Vec<Scratch> {
        let per_chunk = |n: usize| {
            Dim::Mul(
                Box::new(Dim::Const(n as i64)),
                Box::new(Dim::sym("max_chunks")),
            )
        };
        vec![
            Scratch {
                name: "o_partial".into(),
                elem: Ty::F32,
                len: per_chunk(self.q_heads * self.head_dim),
            },
            Scratch {
                name: "stats_partial".into(),
                elem: Ty::F32,
                len: per_chunk(2 * self.q_heads),
            },
        ]
    }
    /// `kv_len`: the keys in the cache after this step's append.
    fn int_input(&self, name: &str, sizes: &Sizes) -> Option<Vec<i64>> {
        (name == "kv_len").then(|| vec![sizes.get("past_len").copied().unwrap_or(0) + 1])
    }
    fn nmse_limit(&self) -> f64 {
        nmse_limit(self.dtype)
    }
}

/// (q heads, kv heads) of the 2B and 7B LLMs; head_dim 128 for both.
const LLM_HEADS: [(usize, usize); 2] = [(12, 2), (28, 4)];
const LLM_HEAD_DIM: usize = 128;
/// The vision encoder of both: 16 heads of 72.
const VISION_HEADS: usize = 16;
const VISION_HEAD_DIM: usize = 72;
/// Patches at attention of an image of 4×4 merged tokens (2×2 patches each), and of a video
/// frame of 2×2 merged tokens: small, so that 16 frames stay cheap on the emulator.
const IMAGE_PATCHES: i64 = 64;
const FRAME_PATCHES: i64 = 16;

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in [Ty::F32, Ty::Bf16] {
        let vision = VisionAttention {
            dtype,
            heads: VISION_HEADS,
            head_dim: VISION_HEAD_DIM,
        };
        for (n, frames) in [
            (IMAGE_PATCHES, 1),
            (16 * FRAME_PATCHES, 16),
            (1, 1),
            (7, 1),
            (129, 3),
        ] {
            out.push(Case::new(
                vision.clone(),
                &[("n_patches", n), ("frames", frames)],
            ));
        }
        for (q_heads, kv_heads) in LLM_HEADS {
            let prefill = PrefillAttention {
                dtype,
                q_heads,
                kv_heads,
                head_dim: LLM_HEAD_DIM,
            };
            for (seq_len, past_len) in [(1, 0), (7, 0), (64, 0), (129, 0), (7, 9)] {
                // The harness allocates k and v as the reference's contiguous keys.
                let sizes = [
                    ("seq_len", seq_len),
                    ("past_len", past_len),
                    ("kv_capacity", seq_len + past_len),
                ];
                out.push(Case::new(prefill.clone(), &sizes));
            }
            let decode = DecodeAttention {
                dtype,
                q_heads,
                kv_heads,
                head_dim: LLM_HEAD_DIM,
            };
            for (past_len, max_chunks) in [(0, 4), (128, 4), (299, 4), (299, 1)] {
                let sizes = [
                    ("past_len", past_len),
                    ("kv_capacity", past_len + 1),
                    ("max_chunks", max_chunks),
                ];
                out.push(Case::new(decode.clone(), &sizes));
            }
        }
        // The fixtures' small shapes: GQA 4/1 with head_dim 16, and 4 heads of 12 in vision.
        out.push(Case::new(
            PrefillAttention {
                dtype,
                q_heads: 4,
                kv_heads: 1,
                head_dim: 16,
            },
            &[("seq_len", 9), ("past_len", 3), ("kv_capacity", 12)],
        ));
        out.push(Case::new(
            DecodeAttention {
                dtype,
                q_heads: 4,
                kv_heads: 1,
                head_dim: 16,
            },
            &[("past_len", 11), ("kv_capacity", 12), ("max_chunks", 2)],
        ));
        if dtype == Ty::F32 {
            out.push(Case::new(
                VisionAttention {
                    dtype,
                    heads: 4,
                    head_dim: 12,
                },
                &[("n_patches", 40), ("frames", 2)],
            ));
        } else {
            out.push(Case::new(
                VisionAttention {
                    dtype,
                    heads: 4,
                    head_dim: 8,
                },
                &[("n_patches", 40), ("frames", 2)],
            ));
        }
    }
    out
}
