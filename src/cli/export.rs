use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vl3c_onnx::{MatmulPrecision, ModelInfo, OnnxTarget};
use vl3c_runtime::engine::compile;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json plus model.safetensors or shards with model.safetensors.index.json.
    #[arg(long)]
    model: PathBuf,
    /// Export format; onnx is the one there is.
    #[arg(long, default_value = "onnx")]
    format: String,
    /// Directory to write (created; files in it are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Precision of the matmul weights and matmuls: f32, bf16 or f16. Norms, softmax, RoPE
    /// and everything else compute in f32 whatever this is.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// The checkpoint's JSON configs that genai_config.json draws on; missing ones are skipped.
pub fn model_info(dir: &Path) -> Result<ModelInfo> {
    let mut configs = BTreeMap::new();
    for name in [
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
    ] {
        let path = dir.join(name);
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            configs.insert(name.to_string(), value);
        }
    }
    Ok(ModelInfo { configs })
}

pub fn run(args: Args) -> Result<()> {
    if args.format != "onnx" {
        bail!("--format {}: not supported (onnx is)", args.format);
    }
    let precision = MatmulPrecision::parse(&args.dtype)
        .with_context(|| format!("--dtype {}: expected f32, bf16 or f16", args.dtype))?;
    let mut target = OnnxTarget::new(precision, model_info(&args.model)?);
    let start = Instant::now();
    let bar = super::compile::progress_bar();
    let compiled = compile(
        &args.model,
        &mut target,
        false,
        &args.out,
        &mut |s, d, t| super::compile::update(&bar, s, d, t),
    );
    bar.finish_and_clear();
    let compiled = compiled?;
    eprintln!(
        "export: {} → {} in {:.2}s: {}",
        args.model.display(),
        args.out.display(),
        start.elapsed().as_secs_f64(),
        compiled.summary
    );
    Ok(())
}
