//! Runs a VideoLLaMA3 checkpoint on the reference executor with transformers' forward contract:
//! vision encoder per merge-size group, projector, prefill over the multimodal prompt, then
//! greedy decoding over the KV cache. `prefill` and `decode_step` expose the two halves so a
//! generator can sample between steps.

use crate::exec::{execute, ExecError, Outputs, Tensor, TensorData};
use std::collections::HashMap;
use std::path::Path;
use vl3c_driver::CheckpointWeights;
use vl3c_frontends::lower::{cache_names, ModelGraphs, MAX_ENTRIES_PER_CALL};
use vl3c_frontends::{Checkpoint, FrontendError, ModelConfig};
use vl3c_ir::{Graph, IrError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error("lowering failed: {0}")]
    Lowering(#[from] IrError),
    #[error("{graph}: {error}")]
    Exec { graph: String, error: ExecError },
    #[error("input `{name}`: {message}")]
    BadInput { name: String, message: String },
    #[error("not supported yet: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Preprocess(#[from] crate::preprocess::PreprocessError),
    #[error("{needed} positions exceed the model's {positions} (max_position_embeddings); fewer frames (--fps, --num-frames) or a shorter prompt would fit")]
    PositionOverflow { needed: usize, positions: usize },
    #[error("context of {needed} tokens exceeds --max-context {max}")]
    ContextOverflow { needed: usize, max: usize },
}

type Result<T> = std::result::Result<T, ModelError>;

/// The tensors of one forward call, named as transformers' `forward` arguments.
pub type NamedTensors = HashMap<String, Tensor>;

pub struct Model {
    backend: Backend,
    config: ModelConfig,
    graphs: ModelGraphs,
    /// Positions the KV cache may hold (a compiled engine's `--max-context`); unbounded if None.
    max_context: Option<usize>,
}

/// Runs one graph of the model: how a compiled engine plugs into the same forward logic.
pub trait GraphRunner: Send + Sync {
    fn run(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
    ) -> std::result::Result<Outputs, ExecError>;
    /// A KV cache for one sequence that the runner keeps in its own form (a compiled engine's:
    /// preallocated, appended in place), or `None` when caches are tensors passed to `run` and
    /// returned by it (the reference semantics).
    fn new_kv(&self) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }
    /// `run` over a cache from [`GraphRunner::new_kv`], which the graph extends in place.
    fn run_kv(
        &self,
        graph: &Graph,
        _inputs: &NamedTensors,
        _kv: &mut (dyn std::any::Any + Send),
    ) -> std::result::Result<Outputs, ExecError> {
        Err(ExecError::Cache {
            name: graph.name.clone(),
            message: "this runner keeps no KV cache".into(),
        })
    }
    /// `run` where only the outputs named in `wanted` are needed: a runner may skip the work
    /// only the others need (this default computes them all).
    fn run_for(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
        _wanted: &[&str],
    ) -> std::result::Result<Outputs, ExecError> {
        self.run(graph, inputs, caches)
    }
    /// `run_kv` where only the outputs named in `wanted` are needed (see [`GraphRunner::run_for`]).
    fn run_kv_for(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        kv: &mut (dyn std::any::Any + Send),
        _wanted: &[&str],
    ) -> std::result::Result<Outputs, ExecError> {
        self.run_kv(graph, inputs, kv)
    }
}

/// Which positions' logits a prefill returns (transformers' `logits_to_keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsToKeep {
    /// Every position's, `[1, L, vocab]`: what `forward` returns.
    All,
    /// The last position's, `[1, 1, vocab]`: all that generation samples from.
    Last,
}

impl LogitsToKeep {
    fn output(self) -> &'static str {
        match self {
            LogitsToKeep::All => "logits",
            LogitsToKeep::Last => vl3c_frontends::lower::LAST_LOGITS,
        }
    }
}

enum Backend {
    /// The reference executor over the checkpoint's memory-mapped weights.
    Checkpoint(Box<Checkpoint>),
    Runner(Box<dyn GraphRunner>),
}

/// What one forward (and optional greedy generation) produced.
pub struct ForwardResult {
    pub logits: Tensor,
    pub generated_ids: Option<Vec<i64>>,
    /// Largest live intermediate footprint of any executed graph, in bytes.
    pub peak_intermediate_bytes: usize,
}

/// The image processor's pixel limit (`dir/preprocessor_config.json`) bounds the encoder's
/// symbols, so the graphs a checkpoint runs and compiles with are built from the config with it.
pub(crate) fn apply_preprocessor_limits(cfg: &mut ModelConfig, dir: &Path) -> Result<()> {
    let images = crate::preprocess::ImageProcessorConfig::from_model_dir(dir)?;
    cfg.vision_limits.image_max_patches =
        images.max_pixels / (images.patch_size * images.patch_size);
    Ok(())
}

impl Model {
    pub fn open(dir: &Path) -> Result<Model> {
        let checkpoint = Checkpoint::open(dir)?;
        let mut cfg = checkpoint.config().clone();
        apply_preprocessor_limits(&mut cfg, dir)?;
        let declared = cfg.declared_dtype;
        let graphs = ModelGraphs::lower(&cfg, &|name| {
            checkpoint.weight_dtype(name).unwrap_or(declared)
        })?;
        Ok(Model {
            backend: Backend::Checkpoint(Box::new(checkpoint)),
            config: cfg,
            graphs,
            max_context: None,
        })
    }

    /// A model whose graphs run on `runner` (a compiled engine), with the same forward logic.
    pub fn with_runner(
        config: ModelConfig,
        graphs: ModelGraphs,
        runner: Box<dyn GraphRunner>,
        max_context: Option<usize>,
    ) -> Model {
        Model {
            backend: Backend::Runner(runner),
            config,
            graphs,
            max_context,
        }
    }

    /// The checkpoint, when running on the reference executor.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match &self.backend {
            Backend::Checkpoint(c) => Some(c),
            Backend::Runner(_) => None,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn check_context(&self, needed: usize) -> Result<()> {
        let positions = self.config.text.max_position_embeddings;
        if needed > positions {
            return Err(ModelError::PositionOverflow { needed, positions });
        }
        match self.max_context {
            Some(max) if needed > max => Err(ModelError::ContextOverflow { needed, max }),
            _ => Ok(()),
        }
    }

    pub fn graphs(&self) -> &ModelGraphs {
        &self.graphs
    }

    /// Runs these graphs instead of the lowered ones (e.g. optimized forms of them); they must
    /// keep the lowered graphs' inputs, outputs and cache names.
    pub fn set_graphs(&mut self, graphs: ModelGraphs) {
        self.graphs = graphs;
    }

    fn run(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
        peak: &mut usize,
    ) -> Result<crate::exec::Outputs> {
        self.run_for(graph, inputs, caches, None, peak)
    }

    /// [`Model::run`] computing only the outputs in `wanted` (all of them for `None`).
    fn run_for(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
        wanted: Option<&[&str]>,
        peak: &mut usize,
    ) -> Result<crate::exec::Outputs> {
        let out = match (&self.backend, wanted) {
            (Backend::Checkpoint(c), None) => execute(graph, inputs, &CheckpointWeights(c), caches),
            (Backend::Checkpoint(c), Some(w)) => crate::exec::execute_for(
                graph,
                inputs,
                &CheckpointWeights(c),
                caches,
                &crate::exec::Reference,
                w,
            ),
            (Backend::Runner(r), None) => r.run(graph, inputs, caches),
            (Backend::Runner(r), Some(w)) => r.run_for(graph, inputs, caches, w),
        }
        .map_err(|error| ModelError::Exec {
            graph: graph.name.clone(),
            error,
        })?;
        *peak = (*peak).max(out.peak_bytes);
        Ok(out)
    }

    /// Vision encoder + projector over images or videos; entries are grouped by merge size
    /// so each group runs through the graph of its merge size, in input order. Also returns the
    /// Differential Frame Pruning keep-mask the graphs computed, concatenated in the same order
    /// (spec §4.3); a merge-1 group, whose graph has no pruning, keeps all of its tokens.
    pub(crate) fn encode(
        &self,
        pixels: &Tensor,
        grid: &Tensor,
        merges: Option<&Tensor>,
        kind: Modality,
        peak: &mut usize,
    ) -> Result<Encoded> {
        let names = kind.names();
        let grid = grid_rows(grid, names.grid)?;
        let merges: Vec<i64> = match merges {
            Some(m) => int_values(m, names.merge)?,
            None => vec![kind.default_merge(); grid.len()],
        };
        if merges.len() != grid.len() {
            return bad(
                names.merge,
                format!(
                    "has {} entries but {} has {}",
                    merges.len(),
                    names.grid,
                    grid.len()
                ),
            );
        }
        let row_len = match pixels.shape.as_slice() {
            [_, c] => *c,
            s => {
                return bad(
                    names.pixels,
                    format!("must be 2-D [patches, channels·patch²], got shape {s:?}"),
                )
            }
        };
        // Checked: the grid comes from the caller, and t·h·w of huge entries overflows.
        let mut patches = Vec::with_capacity(grid.len());
        for [t, h, w] in &grid {
            match t
                .checked_mul(*h)
                .and_then(|x| x.checked_mul(*w))
                .and_then(|x| usize::try_from(x).ok())
            {
                Some(n) => patches.push(n),
                None => {
                    return bad(
                        names.grid,
                        format!(
                            "holds the grid [{t}, {h}, {w}], whose {t}·{h}·{w} patches overflow"
                        ),
                    )
                }
            }
        }
        let total = patches.iter().try_fold(0usize, |a, &n| a.checked_add(n));
        if total != Some(pixels.shape[0]) {
            let sum = total.map_or("more patches than fit in memory".to_string(), |n| {
                format!("{n} patches")
            });
            return bad(
                names.pixels,
                format!(
                    "has {} rows but {} sums to {sum}",
                    pixels.shape[0], names.grid
                ),
            );
        }
        if grid.is_empty() {
            // No images (or videos): no features, a no-op rather than an empty concatenation.
            let hidden = self.config.text.hidden_size;
            return Ok(Encoded {
                embeds: Tensor::f32(vec![0, hidden], Vec::new()),
                keep: Tensor::bool(vec![0], Vec::new()),
            });
        }
        let pixels = pixels.to_f32_vec();
        let mut features = Vec::new();
        let mut keep = Vec::new();
        let (mut entry, mut row) = (0, 0);
        while entry < grid.len() {
            let m = merges[entry];
            let run_end = (entry..grid.len())
                .find(|&e| merges[e] != m)
                .unwrap_or(grid.len());
            let end = run_end.min(entry + MAX_ENTRIES_PER_CALL as usize);
            let graph = self.graphs.vision(m as usize).ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "merge size {m} (only 1 and 2 exist in VideoLLaMA3)"
                ))
            })?;
            for [_, h, w] in &grid[entry..end] {
                if h % m != 0 || w % m != 0 {
                    return bad(
                        names.grid,
                        format!("grid {h}x{w} is not divisible by merge size {m}"),
                    );
                }
            }
            let rows: usize = patches[entry..end].iter().sum();
            let group_grid: Vec<i64> = grid[entry..end].iter().flatten().copied().collect();
            let inputs = HashMap::from([
                (
                    "pixel_values".to_string(),
                    Tensor::f32(
                        vec![rows, row_len],
                        pixels[row * row_len..(row + rows) * row_len].to_vec(),
                    ),
                ),
                (
                    "grid_thw".to_string(),
                    Tensor::i64(vec![end - entry, 3], group_grid),
                ),
                (
                    "merge_sizes".to_string(),
                    Tensor::i64(vec![end - entry], vec![m; end - entry]),
                ),
            ]);
            let mut out = self.run(graph, &inputs, &HashMap::new(), peak)?;
            let keep_mask = out.outputs.remove("keep_mask");
            let group = take_output(out.outputs, "features")?;
            match keep_mask.map(|m| m.data) {
                Some(TensorData::Bool(m)) => keep.extend(m),
                _ => keep.extend(std::iter::repeat_n(true, group.shape[0])),
            }
            features.push(group);
            (entry, row) = (end, row + rows);
        }
        let features = concat_rows(features);
        let projected = self.run(
            &self.graphs.projector,
            &HashMap::from([("features".to_string(), features)]),
            &HashMap::new(),
            peak,
        )?;
        let keep = Tensor::bool(vec![keep.len()], keep);
        Ok(Encoded {
            embeds: take_output(projected.outputs, "embeds")?,
            keep,
        })
    }

    /// Vision encoder + projector over images (`pixel_values`, `image_grid_thw`, merge sizes
    /// defaulting to 1): the embeddings f32 [tokens, hidden].
    pub fn image_embed(
        &self,
        pixels: &Tensor,
        grid: &Tensor,
        merge: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .encode(pixels, grid, merge, Modality::Image, &mut 0)?
            .embeds)
    }

    /// Vision encoder + projector over videos: the embeddings of every merged token before
    /// pruning, f32 [tokens, hidden], and Differential Frame Pruning's keep-mask over them, bool
    /// [tokens], as the video graph computed it.
    pub fn video_embed(
        &self,
        pixels: &Tensor,
        grid: &Tensor,
        merge: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let e = self.encode(pixels, grid, merge, Modality::Video, &mut 0)?;
        Ok((e.embeds, e.keep))
    }

    /// transformers' `forward` (logits for every position), then `max_new_tokens` greedy steps.
    pub fn forward(&self, inputs: &NamedTensors, max_new_tokens: usize) -> Result<ForwardResult> {
        let (logits, mut state) = self.prefill(inputs)?;
        let generated_ids = (max_new_tokens > 0)
            .then(|| {
                let vocab = *logits.shape.last().expect("logits have a vocab axis");
                let all = logits.to_f32_vec();
                let mut next = argmax_last(&all[all.len() - vocab..]);
                let mut generated = vec![next];
                while generated.len() < max_new_tokens {
                    next = argmax_last(&self.decode_step(&mut state, next)?);
                    generated.push(next);
                }
                Ok::<_, ModelError>(generated)
            })
            .transpose()?;
        Ok(ForwardResult {
            logits,
            generated_ids,
            peak_intermediate_bytes: state.peak,
        })
    }

    /// Vision + projector + prefill over the prompt: logits f32 [1, L, vocab] for every
    /// position (transformers' `forward` returns them all) and the KV cache after the prompt.
    pub fn prefill(&self, inputs: &NamedTensors) -> Result<(Tensor, KvState)> {
        self.prefill_keeping(inputs, LogitsToKeep::All)
    }

    /// [`Model::prefill`] returning the logits `keep` asks for: `[1, 1, vocab]` for
    /// [`LogitsToKeep::Last`], which skips the LM head over the other positions.
    pub fn prefill_keeping(
        &self,
        inputs: &NamedTensors,
        keep: LogitsToKeep,
    ) -> Result<(Tensor, KvState)> {
        let cfg = &self.config;
        let t = &cfg.text;
        let mut peak = 0;
        let ids = inputs
            .get("input_ids")
            .ok_or_else(|| ModelError::BadInput {
                name: "input_ids".into(),
                message: "is required (i64 [1, L])".into(),
            })?;
        let ids_vec = int_values(ids, "input_ids")?;
        if ids.shape.len() != 2 || ids.shape[0] != 1 || ids_vec.is_empty() {
            return bad(
                "input_ids",
                format!(
                    "must have shape [1, L] with L ≥ 1, got {:?} (batches are not supported yet)",
                    ids.shape
                ),
            );
        }
        if let Some(bad_id) = ids_vec
            .iter()
            .find(|&&i| i < 0 || i as usize >= t.vocab_size)
        {
            return bad(
                "input_ids",
                format!(
                    "holds token id {bad_id}, outside the vocabulary [0, {})",
                    t.vocab_size
                ),
            );
        }
        self.check_context(ids_vec.len())?;

        let empty = || Tensor::f32(vec![0, t.hidden_size], Vec::new());
        // Embeddings encoded earlier (an encoder cache) stand in for the pixels.
        let image_embeds = match (inputs.get("image_embeds"), inputs.get("pixel_values")) {
            (Some(_), Some(_)) => {
                return bad("image_embeds", "and `pixel_values` are exclusive".into())
            }
            (Some(e), None) => embeds_input(e, "image_embeds", t.hidden_size)?,
            (None, Some(p)) => {
                let grid = inputs
                    .get("image_grid_thw")
                    .ok_or_else(|| missing("image_grid_thw", "pixel_values"))?;
                self.encode(
                    p,
                    grid,
                    inputs.get("image_merge_sizes"),
                    Modality::Image,
                    &mut peak,
                )?
                .embeds
            }
            (None, None) => empty(),
        };
        let mut prefill_inputs = HashMap::from([
            ("input_ids".to_string(), ids.clone()),
            ("image_embeds".to_string(), image_embeds),
        ]);
        check_placeholders(
            &ids_vec,
            cfg.image_token_id.into(),
            prefill_inputs["image_embeds"].shape[0],
            "image",
        )?;

        let videos = match (
            inputs.get("video_embeds"),
            inputs.get("pixel_values_videos"),
        ) {
            (Some(_), Some(_)) => {
                return bad(
                    "video_embeds",
                    "and `pixel_values_videos` are exclusive".into(),
                )
            }
            (Some(e), None) => {
                let embeds = embeds_input(e, "video_embeds", t.hidden_size)?;
                let mask = inputs
                    .get("video_compression_mask")
                    .ok_or_else(|| missing("video_compression_mask", "video_embeds"))?;
                Some((bool_mask(mask, embeds.shape[0])?, embeds))
            }
            (None, Some(p)) => {
                let grid = inputs
                    .get("video_grid_thw")
                    .ok_or_else(|| missing("video_grid_thw", "pixel_values_videos"))?;
                let Encoded { embeds, keep } = self.encode(
                    p,
                    grid,
                    inputs.get("video_merge_sizes"),
                    Modality::Video,
                    &mut peak,
                )?;
                // The processor's mask when given; otherwise the one the video graph computed.
                let mask = match inputs.get("video_compression_mask") {
                    Some(m) => bool_mask(m, embeds.shape[0])?,
                    None => keep,
                };
                Some((mask, embeds))
            }
            (None, None) => None,
        };
        match (videos, cfg.video_token_id) {
            (Some(_), None) => {
                return Err(ModelError::Unsupported(
                    "videos with the DAMO checkpoint layout, which has no video placeholder id"
                        .into(),
                ))
            }
            (Some((mask, embeds)), Some(video_token)) => {
                let kept = mask_count(&mask);
                check_placeholders(&ids_vec, video_token.into(), kept, "video")?;
                prefill_inputs.insert("video_embeds".into(), embeds);
                prefill_inputs.insert("video_compression_mask".into(), mask);
            }
            (None, Some(video_token)) => {
                check_placeholders(&ids_vec, video_token.into(), 0, "video")?;
                prefill_inputs.insert("video_embeds".into(), empty());
                prefill_inputs.insert(
                    "video_compression_mask".into(),
                    Tensor::bool(vec![0], Vec::new()),
                );
            }
            (None, None) => {}
        }

        self.run_prefill(&prefill_inputs, ids_vec.len(), peak, keep)
    }

    /// The prefill graph over prepared inputs (`input_ids`, `image_embeds`, and `video_embeds`
    /// with `video_compression_mask` where the model has videos), from an empty cache.
    pub(crate) fn run_prefill(
        &self,
        prefill_inputs: &NamedTensors,
        len: usize,
        mut peak: usize,
        keep: LogitsToKeep,
    ) -> Result<(Tensor, KvState)> {
        self.check_context(len)?;
        let output = keep.output();
        if let Backend::Runner(r) = &self.backend {
            if let Some(mut kv) = r.new_kv() {
                let out = r
                    .run_kv_for(&self.graphs.prefill, prefill_inputs, kv.as_mut(), &[output])
                    .map_err(|error| ModelError::Exec {
                        graph: self.graphs.prefill.name.clone(),
                        error,
                    })?;
                peak = peak.max(out.peak_bytes);
                let logits = take_output(out.outputs, output)?;
                return Ok((
                    logits,
                    KvState {
                        caches: HashMap::new(),
                        held: Some(kv),
                        len,
                        peak,
                    },
                ));
            }
        }
        let t = &self.config.text;
        let mut caches: NamedTensors = (0..t.num_hidden_layers)
            .flat_map(cache_names)
            .map(|name| {
                (
                    name,
                    Tensor::f32(vec![t.num_key_value_heads, 0, t.head_dim], Vec::new()),
                )
            })
            .collect();
        let out = self.run_for(
            &self.graphs.prefill,
            prefill_inputs,
            &caches,
            Some(&[output]),
            &mut peak,
        )?;
        caches.extend(out.caches);
        let logits = take_output(out.outputs, output)?;
        Ok((
            logits,
            KvState {
                caches,
                held: None,
                len,
                peak,
            },
        ))
    }

    /// One decode step: feeds `token` at the next position, extends the cache, and returns the
    /// logits of that position (the decode graph has sequence length 1, so that is all it
    /// computes).
    pub fn decode_step(&self, state: &mut KvState, token: i64) -> Result<Vec<f32>> {
        let vocab = self.config.text.vocab_size;
        if token < 0 || token as usize >= vocab {
            return bad(
                "input_ids",
                format!("holds token id {token}, outside the vocabulary [0, {vocab})"),
            );
        }
        self.check_context(state.len + 1)?;
        let step_inputs = HashMap::from([(
            "input_ids".to_string(),
            Tensor::i64(vec![1, 1], vec![token]),
        )]);
        let out = match (&self.backend, state.held.as_mut()) {
            (Backend::Runner(r), Some(kv)) => {
                let out = r
                    .run_kv(&self.graphs.decode, &step_inputs, kv.as_mut())
                    .map_err(|error| ModelError::Exec {
                        graph: self.graphs.decode.name.clone(),
                        error,
                    })?;
                state.peak = state.peak.max(out.peak_bytes);
                out
            }
            _ => self.run(
                &self.graphs.decode,
                &step_inputs,
                &state.caches,
                &mut state.peak,
            )?,
        };
        state.caches.extend(out.caches);
        state.len += 1;
        Ok(take_output(out.outputs, "logits")?.to_f32_vec())
    }
}

/// The KV cache of one sequence: what prefill leaves and every decode step extends.
pub struct KvState {
    caches: NamedTensors,
    /// The runner's own cache when it keeps one (then `caches` stays empty).
    held: Option<Box<dyn std::any::Any + Send>>,
    len: usize,
    peak: usize,
}

impl KvState {
    /// Positions in the cache (prompt plus decoded tokens).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Largest live intermediate footprint of any graph run on this sequence, in bytes.
    pub fn peak_intermediate_bytes(&self) -> usize {
        self.peak
    }
}

/// Embeddings handed in by the caller: f32 [tokens, hidden].
fn embeds_input(t: &Tensor, name: &str, hidden: usize) -> Result<Tensor> {
    match t.shape.as_slice() {
        [_, h] if *h == hidden && t.dtype().is_float() => {
            Ok(Tensor::f32(t.shape.clone(), t.to_f32_vec()))
        }
        s => bad(
            name,
            format!("must be float [tokens, {hidden}], got {} {s:?}", t.dtype()),
        ),
    }
}

/// What `encode` produced: the projected features and the keep-mask over them.
pub(crate) struct Encoded {
    pub(crate) embeds: Tensor,
    pub(crate) keep: Tensor,
}

#[derive(Clone, Copy)]
pub(crate) enum Modality {
    Image,
    Video,
}

struct InputNames {
    pixels: &'static str,
    grid: &'static str,
    merge: &'static str,
}

impl Modality {
    fn names(self) -> InputNames {
        match self {
            Modality::Image => InputNames {
                pixels: "pixel_values",
                grid: "image_grid_thw",
                merge: "image_merge_sizes",
            },
            Modality::Video => InputNames {
                pixels: "pixel_values_videos",
                grid: "video_grid_thw",
                merge: "video_merge_sizes",
            },
        }
    }

    /// transformers' processors: images merge 1, videos merge 2.
    fn default_merge(self) -> i64 {
        match self {
            Modality::Image => 1,
            Modality::Video => 2,
        }
    }
}

fn bad<T>(name: &str, message: String) -> Result<T> {
    Err(ModelError::BadInput {
        name: name.into(),
        message,
    })
}

fn missing(name: &str, with: &str) -> ModelError {
    ModelError::BadInput {
        name: name.into(),
        message: format!("is required with `{with}`"),
    }
}

pub(crate) fn int_values(t: &Tensor, name: &str) -> Result<Vec<i64>> {
    match &t.data {
        TensorData::I64(v) => Ok(v.clone()),
        TensorData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
        _ => bad(
            name,
            format!("must be an integer tensor, got {}", t.dtype()),
        ),
    }
}

fn grid_rows(t: &Tensor, name: &str) -> Result<Vec<[i64; 3]>> {
    let v = int_values(t, name)?;
    if t.shape.len() != 2 || t.shape[1] != 3 {
        return bad(name, format!("must have shape [n, 3], got {:?}", t.shape));
    }
    let rows: Vec<[i64; 3]> = v.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    if let Some(r) = rows.iter().find(|r| r.iter().any(|&d| d <= 0)) {
        return bad(name, format!("holds the non-positive grid {r:?}"));
    }
    Ok(rows)
}

fn bool_mask(t: &Tensor, len: usize) -> Result<Tensor> {
    let values: Vec<bool> = match &t.data {
        TensorData::Bool(v) => v.clone(),
        TensorData::I64(v) => v.iter().map(|&x| x != 0).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x != 0).collect(),
        _ => {
            return bad(
                "video_compression_mask",
                format!("must be bool, got {}", t.dtype()),
            )
        }
    };
    if values.len() != len {
        return bad(
            "video_compression_mask",
            format!(
                "has {} entries but the videos give {len} tokens",
                values.len()
            ),
        );
    }
    Ok(Tensor::bool(vec![len], values))
}

fn mask_count(t: &Tensor) -> usize {
    match &t.data {
        TensorData::Bool(v) => v.iter().filter(|&&b| b).count(),
        _ => 0,
    }
}

pub(crate) fn check_placeholders(ids: &[i64], token: i64, tokens: usize, what: &str) -> Result<()> {
    let placeholders = ids.iter().filter(|&&i| i == token).count();
    if placeholders != tokens {
        return bad(
            "input_ids",
            format!("holds {placeholders} {what} placeholders (id {token}) but the {what} inputs give {tokens} tokens"),
        );
    }
    Ok(())
}

fn take_output(mut outputs: HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    outputs.remove(name).ok_or_else(|| {
        ModelError::Lowering(IrError {
            node: None,
            op: "output".into(),
            message: format!("graph has no output `{name}`"),
        })
    })
}

fn concat_rows(parts: Vec<Tensor>) -> Tensor {
    let width = parts[0].shape[1];
    let rows = parts.iter().map(|p| p.shape[0]).sum();
    let data = parts.iter().flat_map(|p| p.to_f32_vec()).collect();
    Tensor::f32(vec![rows, width], data)
}

/// Greedy choice over one position's logits; ties go to the lowest id, as `torch.argmax` does.
fn argmax_last(last: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &x) in last.iter().enumerate() {
        if x > last[best] {
            best = i;
        }
    }
    best as i64
}
