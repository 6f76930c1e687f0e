//! `vl3c preprocess`: images or a video into the model's vision inputs, as transformers'
//! processors produce them, written to safetensors under transformers' names.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vl3c_runtime::preprocess::{load_image, preprocess_images, ImageProcessorConfig};
use vl3c_runtime::video::{VideoProcessorConfig, VideoRequest};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["image", "video"]))]
pub struct Args {
    /// Image file (PNG, JPEG, WebP, BMP, TIFF or GIF); repeat for several images (concatenated in order, as transformers does).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// A video: any file FFmpeg reads (MP4, MOV, MKV, WebM, AVI, …), an animated GIF, or a
    /// directory of numbered frames. Writes
    /// pixel_values_videos, video_grid_thw, video_merge_sizes, video_compression_mask.
    #[arg(long, value_name = "FILE", conflicts_with = "image")]
    video: Option<PathBuf>,
    /// Sample the video at F frames per second (transformers' `fps`).
    #[arg(
        long,
        value_name = "F",
        requires = "video",
        conflicts_with = "num_frames"
    )]
    fps: Option<f64>,
    /// Sample N frames evenly (transformers' `num_frames`).
    #[arg(long, value_name = "N", requires = "video")]
    num_frames: Option<usize>,
    /// Frame rate of a directory of frames (default: 1, as transformers assumes).
    #[arg(long, value_name = "R", requires = "video")]
    frame_rate: Option<f64>,
    #[command(flatten)]
    video_flags: super::video_flags::VideoFlags,
    /// Checkpoint directory whose preprocessor_config.json / video_preprocessor_config.json set
    /// the pixel budget and frame limits (default: transformers' class defaults).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the tensors (safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match &args.video {
        Some(video) => run_video(&args, video),
        None => run_images(&args),
    }
}

fn run_images(args: &Args) -> Result<()> {
    let cfg = match &args.model {
        Some(dir) => ImageProcessorConfig::from_model_dir(dir)?,
        None => ImageProcessorConfig::default(),
    };
    let images = args
        .image
        .iter()
        .map(load_image)
        .collect::<Result<Vec<_>, _>>()?;
    let processed = preprocess_images(&images, &cfg)?;
    let bytes = processed.to_safetensors_bytes()?;
    std::fs::write(&args.out, bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let grids: Vec<String> = processed
        .grid_thw
        .iter()
        .map(|g| format!("{}x{}x{}", g[0], g[1], g[2]))
        .collect();
    eprintln!(
        "preprocess: {} image(s), grids {}, {} patches",
        images.len(),
        grids.join(" "),
        processed.n_patches()
    );
    Ok(())
}

fn run_video(args: &Args, path: &Path) -> Result<()> {
    super::limits::check_num_frames(args.num_frames)?;
    let cfg = match &args.model {
        Some(dir) => VideoProcessorConfig::from_model_dir(dir)?,
        None => VideoProcessorConfig::default(),
    };
    let request = VideoRequest {
        fps: args.fps,
        num_frames: args.num_frames,
        frame_rate: args.frame_rate,
        rotation: args.video_flags.rotation(),
        timestamps: args.video_flags.timestamps(),
    };
    let video = super::session::load_video_with_progress(path, &cfg, &request)?;
    let p = &video.processed;
    std::fs::write(&args.out, p.to_safetensors_bytes()?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let [t, h, w] = p.grid_thw[0];
    let kept = p.compression_mask.iter().filter(|&&k| k).count();
    let fps = video
        .metadata
        .fps
        .map_or("unknown fps".into(), |f| format!("{f:.3} fps"));
    eprintln!(
        "preprocess: {} ({}, {} frames, {fps}), {t} frames sampled, grid {t}x{h}x{w}, {} patches, {} video tokens, {kept} kept after pruning",
        path.display(),
        video.metadata.format,
        video.metadata.total_frames,
        p.n_patches(),
        p.compression_mask.len(),
    );
    if p.timestamps[0].fps_assumed {
        eprintln!("warning: {}: frame rate unknown; timestamps assume 1 frame per second (pass --frame-rate)", path.display());
    }
    Ok(())
}
