//! What `vl3c run` and `vl3c chat` share: the model (a compiled engine, or the reference
//! executor), the tokenizer, the conversation's images and videos — decoded and preprocessed
//! once, encoded through the encoder cache so later prompts reuse the features — and generation
//! streamed to stdout.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vl3c_runtime::chat::{prompt_ids, Content, ImageTokens, Message, VideoTokens};
use vl3c_runtime::engine::{DeviceSpec, Engine};
use vl3c_runtime::generate::{Generation, GenerationStats, Generator, Prompt};
use vl3c_runtime::media::{EncodedImages, EncodedVideo, EncoderCache};
use vl3c_runtime::model::Model;
use vl3c_runtime::preprocess::{
    load_image, preprocess_images, ImageProcessorConfig, ProcessedImages,
};
use vl3c_runtime::sampling::{Sampler, SamplingParams, StopCriteria, TextStream};
use vl3c_runtime::tokenizer::TextTokenizer;
use vl3c_runtime::video::{load_video, LoadedVideo, VideoProcessorConfig, VideoRequest};

/// The session's encoded images (one batch) and videos (one each).
type EncodedMedia = (Option<Arc<EncodedImages>>, Vec<Arc<EncodedVideo>>);

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "engine"]))]
pub struct SessionArgs {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json, preprocessor configs).
    /// It is compiled once into an engine in the cache ($VL3C_CACHE_DIR, else ~/.cache/vl3c),
    /// which later runs reuse.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A compiled engine directory (`vl3c compile --out ENGINE`).
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<PathBuf>,
    /// An image to ask about; repeat for several (images come first in the user turn).
    #[arg(long, value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// A video to ask about: any file FFmpeg reads (MP4, MOV, MKV, WebM, AVI, …), an animated
    /// GIF, or a directory of numbered frames
    /// (frame_0001.png, …); repeat for several (after the images in the user turn).
    #[arg(long, value_name = "FILE")]
    pub video: Vec<PathBuf>,
    /// Sample the video at F frames per second (transformers' `fps`; 4 to 180 frames).
    #[arg(long, value_name = "F", conflicts_with = "num_frames")]
    pub fps: Option<f64>,
    /// Sample N frames evenly (transformers' `num_frames`).
    #[arg(long, value_name = "N")]
    pub num_frames: Option<usize>,
    /// Frame rate of a directory of frames, which has no container to say it (default: 1, as
    /// transformers assumes for pre-decoded frames).
    #[arg(long, value_name = "R")]
    pub frame_rate: Option<f64>,
    #[command(flatten)]
    pub video_flags: super::video_flags::VideoFlags,
    /// Keep every video token: turn Differential Frame Pruning off.
    #[arg(long)]
    pub no_prune: bool,
    /// Add a system turn: TEXT, or without a value VideoLLaMA3's default system prompt.
    #[arg(long, value_name = "TEXT", num_args = 0..=1)]
    pub system: Option<Option<String>>,
    /// Stop after N new tokens (generation also stops at an eos id such as <|im_end|>); the
    /// prompt and the new tokens must fit the model's max_position_embeddings.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most probable tokens when sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most probable tokens up to mass P (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler's random generator (same seed, same tokens).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --model: skip compiling and run the checkpoint on the reference executor.
    #[arg(long, requires = "model")]
    pub reference: bool,
    /// With --reference: run the optimized graphs (as `vl3c opt` produces them).
    #[arg(long, requires = "reference")]
    pub opt: bool,
    /// Most positions (prompt + new tokens) the engine's KV cache holds, at most the model's
    /// max_position_embeddings (default: just enough for the longest prompt; `chat` adds room
    /// for the conversation to grow, up to max_position_embeddings).
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Threads for the engine's kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where a CUDA engine runs: `cuda` (the first GPU, the default), `cuda:N`, or `emu` (the
    /// kernel-IR emulator with every check on: slow, for tests and machines without a GPU).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// The model a session runs: a compiled engine, or the checkpoint on the reference executor.
enum Runtime {
    Engine(Box<Engine>),
    Reference(Box<Model>),
}

impl Runtime {
    fn model(&self) -> &Model {
        match self {
            Runtime::Engine(e) => e.model(),
            Runtime::Reference(m) => m,
        }
    }
}

pub struct Session {
    tokenizer: TextTokenizer,
    /// Loaded last, once the inputs are known to be good and the prompt length is bounded.
    runtime: Option<Runtime>,
    images: Option<ProcessedImages>,
    videos: Vec<LoadedVideo>,
    cache: EncoderCache,
    params: SamplingParams,
    max_new_tokens: usize,
    prune: bool,
    /// The system turn that opens every conversation, and whether the template adds the default one.
    system: Option<String>,
    default_system: bool,
    /// Decoding and preprocessing the inputs at open, which the first answer waited for.
    unbilled_preparation: Duration,
}

/// One answer: the generation and what the vision inputs cost before it.
pub struct Answer {
    pub generation: Generation,
    /// Vision work this prompt waited for: decoding and preprocessing (the first prompt) and
    /// encoding (zero when every input came from the encoder cache).
    pub vision_time: Duration,
    pub cache_hits: usize,
}

impl Session {
    /// Loads the tokenizer, images and videos (cheap checks first, so a typo fails before the
    /// model loads), then the model with a KV cache for `context_room` positions beyond the
    /// longest first-turn prompt over `prompts` (unless --max-context says otherwise).
    pub fn open(args: &SessionArgs, prompts: &[String], context_room: usize) -> Result<Session> {
        // An engine directory carries copies of the tokenizer and processor configs.
        let dir = args
            .engine
            .clone()
            .or(args.model.clone())
            .expect("clap requires --model or --engine");
        let params = SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        };
        params
            .validate()
            .map_err(|e| anyhow::anyhow!("--temperature/--top-p: {e}"))?;
        // Flags that size something are checked before anything is read or allocated.
        let threads = super::limits::threads(args.threads)?;
        super::limits::check_num_frames(args.num_frames)?;
        if let Some(engine) = &args.engine {
            super::limits::check_engine_dir(engine)?;
        }
        let tokenizer = TextTokenizer::from_dir(&dir)?;
        let preparing = Instant::now();
        let images = if args.image.is_empty() {
            None
        } else {
            let cfg = ImageProcessorConfig::from_model_dir(&dir)?;
            let decoded = args
                .image
                .iter()
                .map(load_image)
                .collect::<Result<Vec<_>, _>>()?;
            Some(preprocess_images(&decoded, &cfg)?)
        };
        let videos = load_videos(&dir, args)?;
        let unbilled_preparation = preparing.elapsed();
        let (system, default_system) = match &args.system {
            Some(Some(text)) => (Some(text.clone()), false),
            Some(None) => (None, true),
            None => (None, false),
        };
        let mut session = Session {
            tokenizer,
            runtime: None,
            images,
            videos,
            cache: EncoderCache::default(),
            params,
            max_new_tokens: args.max_new_tokens,
            prune: !args.no_prune,
            system,
            default_system,
            unbilled_preparation,
        };
        // The KV cache is sized before the videos are encoded, so the bound assumes no pruning:
        // it is the prompt's exact length only without videos or with pruning off.
        let bounds = prompts
            .iter()
            .map(|p| session.prompt_bound(&session.messages(&[], p)))
            .collect::<Result<Vec<_>>>()?;
        let longest = bounds.into_iter().max().unwrap_or(0);
        let exact = session.videos.is_empty() || !session.prune;
        // Every size below is bounded by the model's positions, with checked arithmetic, before
        // the engine allocates its KV cache from it.
        let positions = super::limits::model_positions(&dir)?;
        super::limits::check_new_tokens(args.max_new_tokens, exact.then_some(longest), positions)?;
        let wanted = longest
            .saturating_add(args.max_new_tokens)
            .saturating_add(1)
            .saturating_add(context_room);
        let context = super::limits::context(args.max_context, wanted, positions)?;
        session.runtime = Some(load_runtime(&dir, args, context, threads)?);
        Ok(session)
    }

    /// The conversation so far plus a new user turn: the system turn, then `history` (earlier
    /// user/assistant turns), then `text`. The images and videos belong to the first user turn.
    pub fn messages(&self, history: &[(String, String)], text: &str) -> Vec<Message> {
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(Message::text("system", system));
        }
        let turns = history
            .iter()
            .map(|(q, a)| (q.as_str(), Some(a.as_str())))
            .chain([(text, None)]);
        for (i, (question, answer)) in turns.enumerate() {
            let mut content = Vec::new();
            if i == 0 {
                content.extend(std::iter::repeat_n(Content::Image, self.image_count()));
                content.extend(std::iter::repeat_n(Content::Video, self.videos.len()));
            }
            content.push(Content::Text(question.to_string()));
            messages.push(Message {
                role: "user".into(),
                content,
            });
            if let Some(a) = answer {
                messages.push(Message::text("assistant", a));
            }
        }
        messages
    }

    fn image_count(&self) -> usize {
        self.images.as_ref().map_or(0, |i| i.grid_thw.len())
    }

    /// Prompt length with every video token kept: the most a prompt over these inputs needs.
    fn prompt_bound(&self, messages: &[Message]) -> Result<usize> {
        let images: Vec<ImageTokens> = self
            .images
            .iter()
            .flat_map(|p| p.grid_thw.iter().zip(&p.merge_sizes))
            .map(|(&grid_thw, &merge_size)| ImageTokens {
                grid_thw,
                merge_size,
            })
            .collect();
        let videos: Vec<VideoTokens> = self.videos.iter().map(|v| v.unpruned_tokens()).collect();
        Ok(prompt_ids(
            &self.tokenizer,
            messages,
            self.default_system,
            &images,
            &videos,
        )?
        .len())
    }

    fn model(&self) -> &Model {
        self.runtime
            .as_ref()
            .expect("the runtime loads in open")
            .model()
    }

    /// Encodes the session's images and videos, or takes them from the encoder cache.
    fn encode_media(&mut self) -> Result<EncodedMedia> {
        let runtime = self.runtime.as_ref().expect("the runtime loads in open");
        let model = runtime.model();
        let images = match &self.images {
            Some(p) => Some(self.cache.images(EncodedImages::cache_key(p), || {
                EncodedImages::encode(model, p)
            })?),
            None => None,
        };
        let mut videos = Vec::new();
        for v in &self.videos {
            videos.push(self.cache.video(v.key, || v.encode(model))?);
        }
        Ok((images, videos))
    }

    /// Answers `text` after `history`: encodes (or reuses) the vision inputs, builds the prompt
    /// the way transformers' processor does, and streams the answer to `out` as it is generated.
    pub fn answer(
        &mut self,
        history: &[(String, String)],
        text: &str,
        out: &mut dyn Write,
    ) -> Result<Answer> {
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner.set_message(format!(
            "encoding {} image(s), {} video(s)",
            self.image_count(),
            self.videos.len()
        ));
        let start = Instant::now();
        let hits_before = self.cache.stats.hits;
        let (images, videos) = self.encode_media()?;
        let encoded = if self.cache.stats.hits - hits_before == images.iter().count() + videos.len()
        {
            Duration::ZERO
        } else {
            start.elapsed()
        };
        let vision_time = encoded + std::mem::take(&mut self.unbilled_preparation);
        let messages = self.messages(history, text);
        let video_refs: Vec<&EncodedVideo> = videos.iter().map(|v| v.as_ref()).collect();
        let prompt = Prompt::chat_encoded(
            &self.tokenizer,
            &messages,
            self.default_system,
            images.as_deref(),
            &video_refs,
            self.prune,
        )?;
        spinner.set_message(format!("prefilling {} tokens", prompt.ids.len()));

        let stop = StopCriteria::for_tokenizer(&self.tokenizer, self.max_new_tokens);
        let mut generator = Generator::new(self.model(), Sampler::new(self.params), stop);
        // Special tokens (the closing <|im_end|>) are not printed, as transformers'
        // decode(skip_special_tokens=True) drops them.
        let mut stream = TextStream::new(&self.tokenizer, true);
        let generation = generator.generate(&prompt, |id| -> Result<()> {
            if !spinner.is_finished() {
                spinner.finish_and_clear();
            }
            if let Some(piece) = stream.push(id)? {
                out.write_all(piece.as_bytes())
                    .context("cannot write to stdout")?;
                out.flush().context("cannot write to stdout")?;
            }
            Ok(())
        });
        spinner.finish_and_clear();
        let generation = generation?;
        // What the stream held back (a character still incomplete at the end decodes to U+FFFD,
        // as in transformers' decode), then one newline so the next output starts on its own line.
        let rest = stream.finish()?;
        writeln!(out, "{rest}")
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
        Ok(Answer {
            generation,
            vision_time,
            cache_hits: self.cache.stats.hits - hits_before,
        })
    }

    /// The answer's text as the next turn's history sees it (special tokens dropped).
    pub fn answer_text(&self, answer: &Answer) -> Result<String> {
        Ok(self.tokenizer.decode(&answer.generation.ids, true)?)
    }
}

/// The one-line summary `run` and `chat` print after each answer.
pub fn summary(answer: &Answer) -> String {
    let s: &GenerationStats = &answer.generation.stats;
    // Time to first token counts the vision work, which the prompt had to wait for.
    let ttft = s.time_to_first_token.map_or("n/a".into(), |d| {
        format!("{:.2} s", (d + answer.vision_time).as_secs_f64())
    });
    let rate = s
        .decode_tokens_per_second()
        .map_or("n/a".into(), |r| format!("{r:.1}"));
    let mut vision = format!("{} image tokens", s.image_tokens);
    let (before, after) = s.video_tokens;
    if before > 0 {
        vision.push_str(&format!(", {before} video tokens → {after} after pruning"));
    }
    let encoder = if answer.cache_hits > 0 && answer.vision_time.is_zero() {
        ", vision from the encoder cache".to_string()
    } else if answer.vision_time.is_zero() || s.image_tokens + s.video_tokens.0 == 0 {
        String::new()
    } else {
        format!(" (vision {:.2} s)", answer.vision_time.as_secs_f64())
    };
    format!(
        "{} prompt tokens ({vision}), {} new tokens, TTFT {ttft}{encoder}, {rate} tok/s, total {:.2} s",
        s.prompt_tokens,
        s.new_tokens,
        (s.total + answer.vision_time).as_secs_f64()
    )
}

fn load_videos(dir: &Path, args: &SessionArgs) -> Result<Vec<LoadedVideo>> {
    if args.video.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = VideoProcessorConfig::from_model_dir(dir)?;
    let request = VideoRequest {
        fps: args.fps,
        num_frames: args.num_frames,
        frame_rate: args.frame_rate,
        rotation: args.video_flags.rotation(),
        timestamps: args.video_flags.timestamps(),
    };
    args.video
        .iter()
        .map(|path| {
            let video = load_video_with_progress(path, &cfg, &request)?;
            if video.processed.timestamps[0].fps_assumed {
                eprintln!("warning: {}: frame rate unknown; timestamps assume 1 frame per second (pass --frame-rate)", path.display());
            }
            Ok(video)
        })
        .collect()
}

fn load_runtime(dir: &Path, args: &SessionArgs, context: usize, threads: usize) -> Result<Runtime> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("loading {}", dir.display()));
    let runtime = if args.reference {
        let mut model = Model::open(dir)?;
        if args.opt {
            spinner.set_message("optimizing graphs");
            let mut graphs = model.graphs().clone();
            let names = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];
            // optimize_model draws its own bar once it is slow; keep the spinner off meanwhile
            spinner.suspend(|| {
                super::opt::optimize_model(&mut graphs, &names, &super::opt::target("cpu")?)
            })?;
            model.set_graphs(graphs);
        }
        Runtime::Reference(Box::new(model))
    } else {
        let device = args.device.unwrap_or_default();
        let mut load = |dir: &Path| -> Result<Engine> {
            spinner.set_message(format!("loading engine {}", dir.display()));
            Ok(Engine::load_on(
                dir,
                context,
                threads,
                device,
                &mut |_, _, _| {},
            )?)
        };
        let engine = match &args.engine {
            Some(e) => load(e.as_path())?,
            None => {
                spinner.set_message("compiling (first run of this checkpoint)");
                let bar = super::compile::progress_bar();
                // A damaged cached engine is recompiled inside `load_cached`.
                let engine = super::engine_cache::load_cached(
                    dir,
                    &mut |s, d, t| spinner.suspend(|| super::compile::update(&bar, s, d, t)),
                    &mut load,
                );
                bar.finish_and_clear();
                engine?
            }
        };
        Runtime::Engine(Box::new(engine))
    };
    spinner.finish_and_clear();
    Ok(runtime)
}

/// Decodes and preprocesses the video at `path` behind a progress bar over its frames.
pub fn load_video_with_progress(
    path: &Path,
    cfg: &VideoProcessorConfig,
    request: &VideoRequest,
) -> Result<LoadedVideo> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} frames ({elapsed})")
            .expect("valid template"),
    );
    bar.set_message(format!("decoding {}", path.display()));
    let video = load_video(path, cfg, request, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    video.with_context(|| format!("video {}", path.display()))
}
