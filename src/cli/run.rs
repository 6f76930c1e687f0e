//! `vl3c run`: chat with a checkpoint about images. The generated text streams to stdout token
//! by token; progress and the one-line summary go to stderr, so stdout holds only the answer.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use vl3c_runtime::chat::Message;
use vl3c_runtime::generate::{GenerationStats, Generator, Prompt};
use vl3c_runtime::engine::Engine;
use vl3c_runtime::model::Model;
use vl3c_runtime::preprocess::{load_image, preprocess_images, ImageProcessorConfig};
use vl3c_runtime::sampling::{Sampler, SamplingParams, StopCriteria, TextStream};
use vl3c_runtime::tokenizer::TextTokenizer;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "engine"]))]
pub struct Args {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json, preprocessor_config.json).
    /// It is compiled once into an engine in the cache ($VL3C_CACHE_DIR, else ~/.cache/vl3c),
    /// which later runs reuse.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A compiled engine directory (`vl3c compile --out ENGINE`).
    #[arg(long, value_name = "ENGINE")]
    engine: Option<PathBuf>,
    /// An image to ask about; repeat for several (they precede the text in the user turn).
    #[arg(long, value_name = "FILE")]
    image: Vec<PathBuf>,
    /// The user's message.
    #[arg(long)]
    prompt: String,
    /// Add a system turn: TEXT, or without a value VideoLLaMA3's default system prompt.
    #[arg(long, value_name = "TEXT", num_args = 0..=1)]
    system: Option<Option<String>>,
    /// Stop after N new tokens (generation also stops at an eos id such as <|im_end|>).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the K most probable tokens when sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: keep the most probable tokens up to mass P (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Seed of the sampler's random generator (same seed, same tokens).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --model: skip compiling and run the checkpoint on the reference executor.
    #[arg(long, requires = "model")]
    reference: bool,
    /// With --reference: run the optimized graphs (as `vl3c opt` produces them).
    #[arg(long, requires = "reference")]
    opt: bool,
    /// Most positions (prompt + new tokens) the engine's KV cache holds (default: just enough).
    #[arg(long)]
    max_context: Option<usize>,
    /// Threads for the engine's kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: Args) -> Result<()> {
    // An engine directory carries copies of the tokenizer and processor configs.
    let dir = args.engine.clone().or(args.model.clone()).expect("clap requires --model or --engine");
    let params = SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    params.validate().map_err(|e| anyhow::anyhow!("--temperature/--top-p: {e}"))?;

    // The cheap checks (tokenizer, images, prompt) come before loading the model so that a
    // typo fails at once.
    let tokenizer = TextTokenizer::from_dir(&dir)?;
    let images = if args.image.is_empty() {
        None
    } else {
        let cfg = ImageProcessorConfig::from_model_dir(&dir)?;
        let decoded = args.image.iter().map(load_image).collect::<Result<Vec<_>, _>>()?;
        Some(preprocess_images(&decoded, &cfg)?)
    };
    let mut messages = Vec::new();
    let add_default_system = match &args.system {
        Some(Some(text)) => {
            messages.push(Message::text("system", text));
            false
        }
        Some(None) => true,
        None => false,
    };
    messages.push(Message::user_with_images(args.image.len(), &args.prompt));
    let prompt = Prompt::chat(&tokenizer, &messages, add_default_system, images)?;

    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("loading {}", dir.display()));
    let engine;
    let reference;
    let model: &Model = if args.reference {
        reference = open_reference(&dir, args.opt, &spinner)?;
        &reference
    } else {
        let engine_dir = match &args.engine {
            Some(e) => e.clone(),
            None => {
                spinner.set_message("compiling (first run of this checkpoint)");
                let bar = super::compile::progress_bar();
                let path = spinner.suspend(|| super::engine_cache::ensure_engine(&dir, &mut |s, d, t| super::compile::update(&bar, s, d, t)));
                bar.finish_and_clear();
                path?
            }
        };
        let context = args.max_context.unwrap_or(prompt.ids.len() + args.max_new_tokens + 1);
        let threads = if args.threads > 0 { args.threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
        spinner.set_message(format!("loading engine {}", engine_dir.display()));
        engine = Engine::load(&engine_dir, context, threads, &mut |_, _, _| {})?;
        engine.model()
    };
    spinner.set_message(format!(
        "encoding {} image(s), prefilling {} tokens",
        args.image.len(),
        prompt.ids.len()
    ));

    let stop = StopCriteria::for_tokenizer(&tokenizer, args.max_new_tokens);
    let mut generator = Generator::new(model, Sampler::new(params), stop);
    // Special tokens (the closing <|im_end|>) are not printed, as transformers'
    // decode(skip_special_tokens=True) drops them.
    let mut stream = TextStream::new(&tokenizer, true);
    let mut stdout = std::io::stdout().lock();
    let generation = generator.generate(&prompt, |id| -> Result<()> {
        if !spinner.is_finished() {
            spinner.finish_and_clear();
        }
        if let Some(text) = stream.push(id)? {
            stdout.write_all(text.as_bytes()).context("cannot write to stdout")?;
            stdout.flush().context("cannot write to stdout")?;
        }
        Ok(())
    });
    spinner.finish_and_clear();
    let generation = generation?;
    // What the stream held back (a character still incomplete at the end decodes to U+FFFD,
    // as in transformers' decode), then one newline so the shell prompt starts on its own line.
    let rest = stream.finish()?;
    writeln!(stdout, "{rest}").and_then(|()| stdout.flush()).context("cannot write to stdout")?;
    eprintln!("{}", summary(&generation.stats));
    Ok(())
}

fn open_reference(dir: &std::path::Path, opt: bool, spinner: &ProgressBar) -> Result<Model> {
    let mut model = Model::open(dir)?;
    if opt {
        spinner.set_message("optimizing graphs");
        let mut graphs = model.graphs().clone();
        let names = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];
        // optimize_model draws its own bar once it is slow; keep the spinner off meanwhile
        spinner.suspend(|| super::opt::optimize_model(&mut graphs, &names, &super::opt::target("cpu")?))?;
        model.set_graphs(graphs);
    }
    Ok(model)
}

fn summary(s: &GenerationStats) -> String {
    let ttft = s.time_to_first_token.map_or("n/a".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    let rate = s.decode_tokens_per_second().map_or("n/a".into(), |r| format!("{r:.1}"));
    format!(
        "{} prompt tokens ({} image tokens), {} new tokens, TTFT {ttft}, {rate} tok/s, total {:.2} s",
        s.prompt_tokens,
        s.image_tokens,
        s.new_tokens,
        s.total.as_secs_f64()
    )
}
