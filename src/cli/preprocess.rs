use anyhow::{Context, Result};
use std::path::PathBuf;
use vl3c_runtime::preprocess::{load_image, preprocess_images, ImageProcessorConfig};

#[derive(clap::Args)]
pub struct Args {
    /// PNG or JPEG image; repeat for several images (concatenated in order, as transformers does).
    #[arg(long, required = true)]
    image: Vec<PathBuf>,
    /// Checkpoint directory whose preprocessor_config.json sets the pixel bounds
    /// (default: transformers' class defaults, 3136 to 1003520 pixels).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write pixel_values f32, image_grid_thw i64, image_merge_sizes i64.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = match &args.model {
        Some(dir) => ImageProcessorConfig::from_model_dir(dir)?,
        None => ImageProcessorConfig::default(),
    };
    let images = args.image.iter().map(load_image).collect::<Result<Vec<_>, _>>()?;
    let processed = preprocess_images(&images, &cfg)?;
    let bytes = processed.to_safetensors_bytes()?;
    std::fs::write(&args.out, bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    let grids: Vec<String> = processed.grid_thw.iter().map(|g| format!("{}x{}x{}", g[0], g[1], g[2])).collect();
    eprintln!("preprocess: {} image(s), grids {}, {} patches", images.len(), grids.join(" "), processed.n_patches());
    Ok(())
}
