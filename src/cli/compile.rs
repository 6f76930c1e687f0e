use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;
use vl3c_driver::{target_by_name, Sm};
use vl3c_runtime::engine::compile;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json plus model.safetensors or shards with model.safetensors.index.json.
    #[arg(long)]
    model: PathBuf,
    /// Engine target: cpu, or cuda (kernels printed as CUDA C++ and compiled by NVRTC to cubins
    /// ahead of time, no GPU needed; the engine runs on a GPU, or with `--device emu` on the
    /// kernel emulator), or tensorrt (the ONNX export, strongly typed, with optimization
    /// profiles from the model's bounds and the trtexec commands in tensorrt.json; the engines
    /// are built where TensorRT's libraries load, and vl3c cannot run them yet).
    #[arg(long, default_value = "cpu")]
    target: String,
    /// cuda: the GPU architectures to build cubins for (repeat or separate with commas): 80 (A100), 90 (H100/H200).
    #[arg(long, value_delimiter = ',', default_value = "90")]
    sm: Vec<String>,
    /// cuda: build from config.json alone (graphs and kernels at the real sizes, no weights read).
    #[arg(long)]
    config_only: bool,
    /// Engine directory to write (created; files in it are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// tensorrt: the precision of the matmuls (bf16, f16 or f32); norms, softmax and RoPE stay f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// tensorrt: the longest prompt + generation the decoder profiles cover (default: the model's bound).
    #[arg(long)]
    max_context: Option<i64>,
    /// Threads for compile-time work (fold evaluation uses rayon's pool; 0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// A stderr progress bar driven by `(stage, done, total)` callbacks: one bar, its message the stage.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    bar
}

pub fn update(bar: &ProgressBar, stage: &str, done: usize, total: usize) {
    if bar.message() != stage {
        bar.set_message(stage.to_string());
    }
    bar.set_length(total as u64);
    bar.set_position(done as u64);
}

pub fn run(args: Args) -> Result<()> {
    let sms = args
        .sm
        .iter()
        .map(|s| Sm::parse(s).with_context(|| format!("unknown --sm `{s}` (expected 80 or 90)")))
        .collect::<Result<Vec<_>>>()?;
    let mut target: Box<dyn vl3c_engine::Target> = if args.target == "tensorrt" {
        let precision = vl3c_onnx::MatmulPrecision::parse(&args.dtype)
            .with_context(|| format!("--dtype {}: expected bf16, f16 or f32", args.dtype))?;
        let info = super::export::model_info(&args.model)?;
        Box::new(vl3c_tensorrt::TensorRtTarget::new(
            precision,
            info,
            args.max_context,
        ))
    } else {
        target_by_name(&args.target, &sms)?
    };
    if args.config_only && args.target != "cuda" {
        bail!(
            "--config-only is for --target cuda: a {} engine needs the checkpoint's weights",
            args.target
        );
    }
    super::limits::threads(args.threads)?;
    if args.threads > 0 {
        // Read by rayon's global pool, which nothing has started yet.
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let start = Instant::now();
    let bar = progress_bar();
    let compiled = compile(
        &args.model,
        target.as_mut(),
        args.config_only,
        &args.out,
        &mut |s, d, t| update(&bar, s, d, t),
    );
    bar.finish_and_clear();
    let compiled = compiled?;
    eprintln!(
        "compile: {} → {} ({}) in {:.2}s (optimize {:.2}s): {}",
        args.model.display(),
        args.out.display(),
        compiled.target,
        start.elapsed().as_secs_f64(),
        compiled.optimize_seconds,
        compiled.summary
    );
    for w in &compiled.warnings {
        eprintln!("warning: {w}");
    }
    if compiled.target == "cuda" {
        eprintln!(
            "run it with `--engine {}` on a GPU, or `--device emu` on the kernel emulator",
            args.out.display()
        );
    }
    Ok(())
}
