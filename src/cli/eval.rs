use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;
use vl3c_runtime::engine::{DeviceSpec, Engine};
use vl3c_runtime::model::Model;
use vl3c_runtime::tensor_file::{read_tensors, write_tensors};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json plus model.safetensors or shards with model.safetensors.index.json.
    #[arg(long, required_unless_present = "engine", conflicts_with = "engine")]
    model: Option<PathBuf>,
    /// Engine directory written by `vl3c compile` (instead of --model).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// safetensors file with transformers' forward arguments: input_ids i64 [1, L] and any of
    /// pixel_values, image_grid_thw, image_merge_sizes, pixel_values_videos, video_grid_thw,
    /// video_merge_sizes, video_compression_mask.
    #[arg(long)]
    inputs: PathBuf,
    /// Where to write `logits` f32 [1, L, vocab] (and `generated_ids` i64 [1, N]).
    #[arg(long)]
    out: PathBuf,
    /// Greedy-generate N tokens after the prompt (no early stop at end-of-sequence).
    #[arg(long, default_value_t = 0)]
    max_new_tokens: usize,
    /// Run the optimized graphs (as `vl3c opt` produces them) instead of the lowered ones.
    #[arg(long, conflicts_with = "engine")]
    opt: bool,
    /// Cost model for --opt: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu", requires = "opt")]
    target: String,
    /// With --engine: the most positions (prompt + generated) the KV cache may hold, at most
    /// the model's max_position_embeddings [default: 32768, or max_position_embeddings when
    /// smaller].
    #[arg(long, requires = "engine")]
    max_context: Option<usize>,
    /// With --engine: threads for the matmul kernels (0 = all cores).
    #[arg(long, default_value_t = 0, requires = "engine")]
    threads: usize,
    /// Where a CUDA engine runs: `cuda` (the first GPU, the default), `cuda:N`, or `emu` (the
    /// kernel-IR emulator with every check on: slow, for tests and machines without a GPU).
    #[arg(long, requires = "engine")]
    device: Option<DeviceSpec>,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let threads = super::limits::threads(args.threads)?;
    let dir = args
        .engine
        .as_ref()
        .or(args.model.as_ref())
        .expect("clap requires --model or --engine");
    if let Some(engine) = &args.engine {
        super::limits::check_engine_dir(engine)?;
    }
    let inputs = read_tensors(&args.inputs)?;
    // The prompt's length is known here, so the generation is bounded by the model's positions
    // before any engine or KV cache is allocated.
    let positions = super::limits::model_positions(dir)?;
    let prompt = inputs
        .get("input_ids")
        .map(|ids| ids.shape.iter().product::<usize>());
    super::limits::check_new_tokens(args.max_new_tokens, prompt, positions)?;
    let max_context = super::limits::context(args.max_context, 32768, positions)?;
    let engine;
    let opened;
    let model: &Model = match &args.engine {
        Some(dir) => {
            let bar = super::compile::progress_bar();
            let loaded = Engine::load_on(
                dir,
                max_context,
                threads,
                args.device.unwrap_or_default(),
                &mut |s, d, t| super::compile::update(&bar, s, d, t),
            );
            bar.finish_and_clear();
            engine = loaded?;
            engine.model()
        }
        None => {
            opened = open_model(&args)?;
            &opened
        }
    };
    let loaded = start.elapsed();
    let result = model.forward(&inputs, args.max_new_tokens)?;
    let mut outputs = vec![("logits", &result.logits)];
    let generated = result
        .generated_ids
        .map(|ids| vl3c_runtime::exec::Tensor::i64(vec![1, ids.len()], ids));
    if let Some(g) = &generated {
        outputs.push(("generated_ids", g));
    }
    write_tensors(&args.out, &outputs)?;
    eprintln!(
        "eval: {} positions, {} new tokens, load {:.2}s, total {:.2}s, peak intermediates {:.1} MiB",
        result.logits.shape[1],
        args.max_new_tokens,
        loaded.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        result.peak_intermediate_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn open_model(args: &Args) -> Result<Model> {
    let mut model = Model::open(
        args.model
            .as_ref()
            .expect("clap requires --model or --engine"),
    )?;
    if args.opt {
        let target = super::opt::target(&args.target)?;
        let mut graphs = model.graphs().clone();
        let names = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];
        super::opt::optimize_model(&mut graphs, &names, &target)?;
        model.set_graphs(graphs);
    }
    Ok(model)
}
