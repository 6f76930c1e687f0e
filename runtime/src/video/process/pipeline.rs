//! Resize, normalize and patchify the sampled frames of each video (spec §4.2), then the
//! compression mask (§4.3): `VideoLlama3VideoProcessor._preprocess`.

use image::RgbImage;

use super::mask::compression_mask;
use super::output::{ProcessedVideos, VideoTimestamps};
use super::sample::{timestamps, FrameSelection};
use super::{VideoProcessError, VideoProcessorConfig};
use crate::preprocess::{patchify_into, resize_bicubic_antialias_u8, smart_resize};

/// One video's decoded frames: `frames[k]` is frame `selection.indices[k]` of the video.
#[derive(Debug, Clone, Copy)]
pub struct VideoFrames<'a> {
    pub frames: &'a [RgbImage],
    pub selection: &'a FrameSelection,
    /// The video's frame rate, None where unknown (timestamps then assume 1 fps).
    pub fps: Option<f64>,
}

/// Preprocesses one video like `VideoLlama3VideoProcessor()(videos=[frames])`.
pub fn preprocess_video(
    frames: &[RgbImage],
    selection: &FrameSelection,
    video_fps: Option<f64>,
    cfg: &VideoProcessorConfig,
) -> Result<ProcessedVideos, VideoProcessError> {
    preprocess_videos(
        &[VideoFrames {
            frames,
            selection,
            fps: video_fps,
        }],
        cfg,
    )
}

/// Preprocesses several videos in one call; their tensors are concatenated in input order.
/// transformers groups videos by shape for batching and puts the results back in input order;
/// every per-video quantity (the pixel budget, the mask) depends on that video alone.
pub fn preprocess_videos(
    videos: &[VideoFrames<'_>],
    cfg: &VideoProcessorConfig,
) -> Result<ProcessedVideos, VideoProcessError> {
    check_config(cfg)?;
    if videos.is_empty() {
        return Err(VideoProcessError::Input("no videos to preprocess".into()));
    }
    let mut out = ProcessedVideos::empty(cfg.patch_dim());
    for (v, video) in videos.iter().enumerate() {
        let one = process_one(video, None, cfg).map_err(|e| match e {
            VideoProcessError::Input(m) if videos.len() > 1 => {
                VideoProcessError::Input(format!("video {v}: {m}"))
            }
            other => other,
        })?;
        out.append(one);
    }
    Ok(out)
}

/// [`preprocess_video`] for frames a reader already resized to [`target_size`] of their decoded
/// size `source` (height, width), as `load_video` does: the processor's arithmetic runs on the
/// decoded size and the frames are not resized again (torch's same-size resize is the identity).
pub fn preprocess_video_resized(
    frames: &[RgbImage],
    selection: &FrameSelection,
    video_fps: Option<f64>,
    source: (usize, usize),
    cfg: &VideoProcessorConfig,
) -> Result<ProcessedVideos, VideoProcessError> {
    check_config(cfg)?;
    let video = VideoFrames {
        frames,
        selection,
        fps: video_fps,
    };
    process_one(&video, Some(source), cfg)
}

fn check_config(cfg: &VideoProcessorConfig) -> Result<(), VideoProcessError> {
    cfg.validate().map_err(VideoProcessError::InvalidConfig)?;
    if cfg.temporal_patch_size != 1 {
        return Err(VideoProcessError::InvalidConfig(format!(
            "temporal_patch_size {} is not supported: the vision encoder embeds single-frame patches",
            cfg.temporal_patch_size
        )));
    }
    Ok(())
}

fn process_one(
    video: &VideoFrames<'_>,
    source: Option<(usize, usize)>,
    cfg: &VideoProcessorConfig,
) -> Result<ProcessedVideos, VideoProcessError> {
    let frames = video.frames;
    let t = frames.len();
    if t == 0 {
        return Err(VideoProcessError::Input("the video has no frames".into()));
    }
    if video.selection.indices.len() != t {
        return Err(VideoProcessError::Input(format!(
            "{t} frames given for {} sampled indices",
            video.selection.indices.len()
        )));
    }
    let (w, h) = frames[0].dimensions();
    // transformers stacks a video's frames into one tensor, so they must share a size.
    if let Some((k, f)) = frames
        .iter()
        .enumerate()
        .find(|(_, f)| f.dimensions() != (w, h))
    {
        return Err(VideoProcessError::Input(format!(
            "frame {k} is {}x{} (WxH) but frame 0 is {w}x{h}: the frames of one video must share a size",
            f.width(),
            f.height()
        )));
    }
    let (fh, fw) = (h as usize, w as usize);
    let (h, w) = source.unwrap_or((fh, fw));
    let (seconds, fps_assumed) = timestamps(video.selection, video.fps)?;
    let (rh, rw) = target_size(h, w, t, cfg)?;
    let (gh, gw) = (rh / cfg.patch_size, rw / cfg.patch_size);
    if (fh, fw) != (h, w) && (fh, fw) != (rh, rw) {
        return Err(VideoProcessError::Input(format!(
            "frames of {fw}x{fh} are neither the decoded size {w}x{h} nor the processor's {rw}x{rh}"
        )));
    }
    let mut pixels = Vec::with_capacity(t * gh * gw * cfg.patch_dim());
    for frame in frames {
        // Frames a reader already shrank (`preprocess_video_resized`) are not resized again.
        let resized;
        let pixels_in = if (fh, fw) == (rh, rw) {
            frame.as_raw().as_slice()
        } else {
            resized = resize_bicubic_antialias_u8(frame.as_raw(), h, w, rh, rw);
            &resized
        };
        patchify_into(
            pixels_in,
            rh,
            rw,
            cfg.patch_size,
            cfg.merge_size,
            &mut pixels,
        );
    }
    let grid = [t, gh, gw];
    let (pixels, mask) = if cfg.use_token_compression {
        compression_mask(pixels, cfg.patch_dim(), grid, cfg.merge_size)?
    } else {
        let tokens = t * gh * gw / (cfg.merge_size * cfg.merge_size);
        (pixels, vec![true; tokens])
    };
    Ok(ProcessedVideos {
        pixel_values: pixels,
        grid_thw: vec![grid.map(|d| d as i64)],
        merge_sizes: vec![cfg.merge_size as i64],
        compression_mask: mask,
        patch_dim: cfg.patch_dim(),
        timestamps: vec![VideoTimestamps {
            indices: video.selection.indices.clone(),
            seconds,
            fps_assumed,
        }],
    })
}

/// The size (height, width) `VideoLlama3VideoProcessor` resizes each of `t` frames of `h`×`w` to:
/// `smart_resize` with the pixel budget `longest_edge // t` the frames share, checked against
/// the bound on one video's pixels before anything is allocated.
pub fn target_size(
    h: usize,
    w: usize,
    t: usize,
    cfg: &VideoProcessorConfig,
) -> Result<(usize, usize), VideoProcessError> {
    // The whole video shares `longest_edge` ("diff from Qwen!" in transformers).
    let per_frame = cfg.max_pixels / t.max(1);
    if per_frame == 0 {
        return Err(VideoProcessError::Input(format!(
            "{t} frames leave no pixels of size.longest_edge = {} for each frame",
            cfg.max_pixels
        )));
    }
    let (rh, rw) = smart_resize(h, w, cfg.factor(), cfg.min_pixels, per_frame)?;
    // Each frame keeps at least size.shortest_edge pixels, so the frames together can pass the
    // shared budget: bounded before the pixels are allocated.
    let most = vl3c_frontends::limits::MAX_VIDEO_PIXELS;
    if t.checked_mul(rh)
        .and_then(|x| x.checked_mul(rw))
        .is_none_or(|total| total > most)
    {
        return Err(VideoProcessError::Input(format!(
            "{t} frames of {rh}x{rw} pixels are more than vl3c preprocesses for one video (at most {most} pixels); \
             sample fewer frames (fps, num_frames) or lower size.shortest_edge"
        )));
    }
    Ok((rh, rw))
}
