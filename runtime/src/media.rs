//! Vision inputs encoded ahead of the prompt, and the encoder cache that lets several prompts
//! about the same images or video (`vl3c run --prompt A --prompt B`, `vl3c chat`) run the vision
//! tower once.
//!
//! A video must be encoded before its prompt exists: the prompt holds one `<|video_pad|>` per
//! token that survives Differential Frame Pruning, and the keep-mask comes out of the compiled
//! video graph together with the features.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::chat::{ImageTokens, VideoTokens};
use crate::exec::{Tensor, TensorData};
use crate::model::{Model, ModelError};
use crate::preprocess::ProcessedImages;

/// Images after the vision tower and projector: one embedding row per LLM image token.
#[derive(Debug, Clone)]
pub struct EncodedImages {
    /// f32 [Σ tokens, hidden], images in input order.
    pub embeds: Tensor,
    pub tokens: Vec<ImageTokens>,
}

impl EncodedImages {
    pub fn encode(model: &Model, images: &ProcessedImages) -> Result<EncodedImages, ModelError> {
        let n = images.grid_thw.len();
        let pixels = Tensor::f32(
            vec![images.n_patches(), images.patch_dim],
            images.pixel_values.clone(),
        );
        let grid = Tensor::i64(
            vec![n, 3],
            images.grid_thw.iter().flatten().copied().collect(),
        );
        let merge = Tensor::i64(vec![n], images.merge_sizes.clone());
        let embeds = model.image_embed(&pixels, &grid, Some(&merge))?;
        let tokens = images
            .grid_thw
            .iter()
            .zip(&images.merge_sizes)
            .map(|(&grid_thw, &merge_size)| ImageTokens {
                grid_thw,
                merge_size,
            })
            .collect();
        Ok(EncodedImages { embeds, tokens })
    }

    /// The key of these preprocessed images: their pixels, grids and merge sizes are all the
    /// vision tower sees.
    pub fn cache_key(images: &ProcessedImages) -> CacheKey {
        let mut key = CacheKeyBuilder::new("images");
        key.bytes(bytemuck::cast_slice(&images.pixel_values));
        key.bytes(bytemuck::cast_slice(
            &images
                .grid_thw
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<i64>>(),
        ));
        key.bytes(bytemuck::cast_slice(&images.merge_sizes));
        key.finish()
    }

    pub fn token_count(&self) -> usize {
        self.embeds.shape[0]
    }
}

/// One video after the vision tower and projector: every merged token's embedding (pruned or
/// not), the keep-mask the video graph computed, and when each sampled frame was shown.
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    /// f32 [frames · tokens per frame, hidden], frame-major.
    pub embeds: Tensor,
    /// Differential Frame Pruning's verdict per merged token.
    pub keep: Vec<bool>,
    /// Seconds, one per sampled frame (`frame_index / fps`, as transformers' prompt uses).
    pub timestamps: Vec<f64>,
}

impl EncodedVideo {
    /// Encodes one preprocessed video (`pixel_values_videos` rows, its `[t, h, w]` grid and
    /// merge size).
    pub fn encode(
        model: &Model,
        pixels: &[f32],
        patch_dim: usize,
        grid_thw: [i64; 3],
        merge: i64,
        timestamps: Vec<f64>,
    ) -> Result<EncodedVideo, ModelError> {
        let rows = pixels.len().checked_div(patch_dim).unwrap_or(0);
        let pixels = Tensor::f32(vec![rows, patch_dim], pixels.to_vec());
        let grid = Tensor::i64(vec![1, 3], grid_thw.to_vec());
        let (embeds, keep) =
            model.video_embed(&pixels, &grid, Some(&Tensor::i64(vec![1], vec![merge])))?;
        let keep = match keep.data {
            TensorData::Bool(k) => k,
            _ => vec![true; embeds.shape[0]],
        };
        if keep.len() % timestamps.len().max(1) != 0 || timestamps.is_empty() {
            let message = format!(
                "{} tokens do not split into {} frames",
                keep.len(),
                timestamps.len()
            );
            return Err(ModelError::BadInput {
                name: "video_grid_thw".into(),
                message,
            });
        }
        Ok(EncodedVideo {
            embeds,
            keep,
            timestamps,
        })
    }

    pub fn tokens_before_pruning(&self) -> usize {
        self.keep.len()
    }

    pub fn tokens_after_pruning(&self) -> usize {
        self.keep.iter().filter(|&&k| k).count()
    }

    /// The mask the prompt and prefill use: the graph's, or all tokens with pruning off.
    pub fn mask(&self, prune: bool) -> Vec<bool> {
        if prune {
            self.keep.clone()
        } else {
            vec![true; self.keep.len()]
        }
    }

    /// What the processor's placeholder expansion needs: timestamps and kept tokens per frame.
    pub fn video_tokens(&self, prune: bool) -> Result<VideoTokens, String> {
        VideoTokens::from_mask(self.timestamps.clone(), &self.mask(prune))
    }
}

/// A content hash of what the vision tower sees: decoded pixels plus every setting that changes
/// the features (sizes, sampled indices, processor settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

/// Builds a [`CacheKey`]; each part is length-prefixed so that different splits of the same
/// bytes give different keys.
pub struct CacheKeyBuilder(Sha256);

impl CacheKeyBuilder {
    pub fn new(kind: &str) -> CacheKeyBuilder {
        let mut b = CacheKeyBuilder(Sha256::new());
        b.bytes(kind.as_bytes());
        b
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    pub fn finish(&self) -> CacheKey {
        CacheKey(self.0.clone().finalize().into())
    }
}

/// Encoded images and videos of one model, by content hash. It lives as long as the process
/// (a `run` with several prompts, a `chat` session).
#[derive(Default)]
pub struct EncoderCache {
    images: HashMap<CacheKey, Arc<EncodedImages>>,
    videos: HashMap<CacheKey, Arc<EncodedVideo>>,
    /// Encoder time each entry cost; a hit saves that much.
    cost: HashMap<CacheKey, Duration>,
    pub stats: CacheStats,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
    /// Encoder time the hits did not spend.
    pub saved: Duration,
}

impl EncoderCache {
    pub fn images(
        &mut self,
        key: CacheKey,
        encode: impl FnOnce() -> Result<EncodedImages, ModelError>,
    ) -> Result<Arc<EncodedImages>, ModelError> {
        let (map, cost, stats) = (&mut self.images, &mut self.cost, &mut self.stats);
        lookup(map, cost, stats, key, encode)
    }

    pub fn video(
        &mut self,
        key: CacheKey,
        encode: impl FnOnce() -> Result<EncodedVideo, ModelError>,
    ) -> Result<Arc<EncodedVideo>, ModelError> {
        let (map, cost, stats) = (&mut self.videos, &mut self.cost, &mut self.stats);
        lookup(map, cost, stats, key, encode)
    }
}

fn lookup<T>(
    map: &mut HashMap<CacheKey, Arc<T>>,
    cost: &mut HashMap<CacheKey, Duration>,
    stats: &mut CacheStats,
    key: CacheKey,
    encode: impl FnOnce() -> Result<T, ModelError>,
) -> Result<Arc<T>, ModelError> {
    if let Some(hit) = map.get(&key) {
        stats.hits += 1;
        stats.saved += cost.get(&key).copied().unwrap_or_default();
        return Ok(hit.clone());
    }
    let start = std::time::Instant::now();
    let value = Arc::new(encode()?);
    stats.misses += 1;
    cost.insert(key, start.elapsed());
    map.insert(key, value.clone());
    Ok(value)
}
