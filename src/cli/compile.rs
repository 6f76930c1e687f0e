use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;
use vl3c_runtime::engine::compile_engine;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json plus model.safetensors or shards with model.safetensors.index.json.
    #[arg(long)]
    model: PathBuf,
    /// Engine target: cpu (cuda and tensorrt are not supported yet).
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Engine directory to write (created; files in it are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Threads for compile-time work (fold evaluation uses rayon's pool; 0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// A stderr progress bar driven by `(stage, done, total)` callbacks: one bar, its message the stage.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}").expect("valid template"));
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
    if args.target != "cpu" {
        bail!("target `{}` is not supported yet (only `cpu`)", args.target);
    }
    if args.threads > 0 {
        // Read by rayon's global pool, which nothing has started yet.
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let start = Instant::now();
    let bar = progress_bar();
    let report = compile_engine(&args.model, &args.target, &args.out, &mut |s, d, t| update(&bar, s, d, t))?;
    bar.finish_and_clear();
    eprintln!(
        "compile: {} → {} in {:.2}s: {} bf16-packed and {} f32 matmul weights, {} folded tensors, {} raw weights, weights.bin {:.1} MiB",
        args.model.display(),
        args.out.display(),
        start.elapsed().as_secs_f64(),
        report.packed_bf16,
        report.packed_f32,
        report.folds_raw,
        report.raw_weights,
        report.weights_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
