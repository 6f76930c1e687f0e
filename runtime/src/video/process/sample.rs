//! Which frames a video contributes (`VideoLlama3VideoProcessor.sample_frames`, spec §4.1) and
//! their timestamps (`VideoMetadata.timestamps`).

use super::{VideoProcessError, VideoProcessorConfig};

/// What the caller asks for, as the `fps=` / `num_frames=` arguments of transformers'
/// `apply_chat_template`. Naming either turns sampling on (`do_sample_frames` is set for the
/// caller); naming both is an error, as is naming one while the config sets the other.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingRequest {
    pub fps: Option<f64>,
    pub num_frames: Option<usize>,
}

/// The frames a video contributes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSelection {
    pub indices: Vec<usize>,
    /// Whether `sample_frames` chose them. transformers then holds the indices in an int32
    /// tensor, so their timestamps are computed in float32; without sampling they are Python
    /// ints and the timestamps are float64. The two can print differently (9 / 20 fps is "0.4"
    /// in float32 and "0.5" in float64).
    pub sampled: bool,
}

impl FrameSelection {
    /// Every frame of a `total`-frame video, unsampled.
    pub fn all(total: usize) -> Self {
        Self {
            indices: (0..total).collect(),
            sampled: false,
        }
    }
}

/// The longest `torch.arange` that torch fills in one piece. Longer ranges are split across
/// torch's threads, and each piece restarts the 8-wide chunking that [`torch_arange_int`]
/// reproduces, so beyond this length the last bits can depend on torch's thread count.
pub const ARANGE_EXACT_LEN: usize = 32768;

/// Frames of a `total_frames` video with `video_fps` (None where unknown) for this request:
/// what transformers' processor feeds the model. Without a request and with `do_sample_frames`
/// off, every frame.
pub fn sample_indices(
    total_frames: usize,
    video_fps: Option<f64>,
    cfg: &VideoProcessorConfig,
    request: SamplingRequest,
) -> Result<FrameSelection, VideoProcessError> {
    cfg.validate().map_err(VideoProcessError::InvalidConfig)?;
    let requested = request.fps.is_some() || request.num_frames.is_some();
    let most = vl3c_frontends::limits::MAX_FRAMES;
    if let Some(n) = request.num_frames.filter(|&n| n > most) {
        return Err(VideoProcessError::Sampling(format!(
            "num_frames {n} is more than vl3c takes from one video (at most {most})"
        )));
    }
    if !requested && !cfg.do_sample_frames {
        // Every frame is decoded and kept: a bound, before anything is allocated per frame.
        if total_frames > most {
            return Err(VideoProcessError::Sampling(format!(
                "the video has {total_frames} frames, more than vl3c takes from one video (at most {most}); sample it (fps or num_frames)"
            )));
        }
        return Ok(FrameSelection::all(total_frames));
    }
    // The call's values fill in over the config's, then both are passed on (so a config
    // `num_frames` clashes with a requested `fps`, as in transformers).
    let fps = request.fps.or(cfg.fps);
    let num_frames = request.num_frames.or(cfg.num_frames);
    let indices = sample_frames(total_frames, video_fps, fps, num_frames, cfg)?;
    Ok(FrameSelection {
        indices,
        sampled: true,
    })
}

/// `VideoLlama3VideoProcessor.sample_frames` with explicit `fps` / `num_frames`, and the
/// indexing that follows it (`video[indices]`), which fails where torch's arange reaches `total`.
pub fn sample_frames(
    total: usize,
    video_fps: Option<f64>,
    fps: Option<f64>,
    num_frames: Option<usize>,
    cfg: &VideoProcessorConfig,
) -> Result<Vec<usize>, VideoProcessError> {
    let err = |m: String| Err(VideoProcessError::Sampling(m));
    let tps = cfg.temporal_patch_size;
    if tps == 0 {
        return err("temporal_patch_size must be positive".into());
    }
    let n = match (num_frames, fps) {
        (Some(_), Some(_)) => {
            return err("`num_frames` and `fps` are mutually exclusive; use only one".into())
        }
        // transformers fails here with a TypeError (`None > int`).
        (None, None) => {
            return err(
                "sampling is on (`do_sample_frames`) but neither `fps` nor `num_frames` is set"
                    .into(),
            );
        }
        // Python's round() of num_frames / tps: ties to even.
        (Some(n), None) => (n as f64 / tps as f64).round_ties_even() as usize * tps,
        (None, Some(fps)) => {
            if !fps.is_finite() {
                return err(format!("fps must be a finite number, got {fps}"));
            }
            let Some(video_fps) = video_fps else {
                return err(format!(
                    "sampling at {fps} fps needs the video's frame rate, which is unknown; give a frame count instead"
                ));
            };
            check_video_fps(video_fps)?;
            let max_frames = floor_to(cfg.max_frames.min(total) as f64, tps);
            let n = total as f64 / video_fps * fps;
            // min(max(n, min_frames), max_frames, total): Python compares ints and floats exactly,
            // and every int here is far below 2^53.
            let n = n
                .max(cfg.min_frames as f64)
                .min(max_frames as f64)
                .min(total as f64);
            floor_to(n, tps)
        }
    };
    if n > total {
        return err(format!(
            "the inferred num_frames={n} exceeds the video's {total} frames; ask for fewer frames or a lower fps"
        ));
    }
    if n == 0 {
        return err(if total == 0 {
            "the video has no frames".into()
        } else {
            format!("no frames to sample (num_frames rounds to 0 with temporal_patch_size {tps})")
        });
    }
    let raw = torch_arange_int(total, n);
    match raw.iter().find(|&&i| i < 0 || i as u64 >= total as u64) {
        // transformers' `video[indices]` raises IndexError here.
        Some(&bad) => err(format!(
            "transformers' torch.arange(0, {total}, {total}/{n}) gives {} indices, among them {bad}, past the \
             video's {total} frames (transformers fails with an IndexError); ask for another frame count",
            raw.len()
        )),
        None => Ok(raw.into_iter().map(|i| i as usize).collect()),
    }
}

/// `floor(x / tps) * tps`, Python's arithmetic for non-negative finite x.
fn floor_to(x: f64, tps: usize) -> usize {
    (x / tps as f64).floor() as usize * tps
}

fn check_video_fps(fps: f64) -> Result<(), VideoProcessError> {
    if fps.is_finite() && fps > 0.0 {
        Ok(())
    } else {
        Err(VideoProcessError::Input(format!(
            "the video's frame rate {fps} is not a positive number"
        )))
    }
}

/// `torch.arange(0, total, total / n).int()` on the CPU, value for value, for n ≥ 1.
///
/// * The length is `ceil(total / (total / n))` in f64, which can be n + 1 (total 15, n 13:
///   the extra value is 15 itself).
/// * The default dtype is float32, so each value is rounded to f32 before `.int()` truncates.
/// * torch fills 16 values per step as two 8-wide vectors: each vector's first value
///   `f32(step · i0)` is rounded to f32 *before* `i0 + k`'s value `base + k · step` is formed
///   in f64 and rounded again; a tail shorter than 16 is filled one value at a time,
///   `f32(step · i)`. The double rounding changes the truncated index for long videos (a few
///   million frames), so it is reproduced rather than approximated. Exact up to
///   [`ARANGE_EXACT_LEN`] values.
pub fn torch_arange_int(total: usize, n: usize) -> Vec<i64> {
    const W: usize = 8;
    let step = total as f64 / n as f64;
    let len = (total as f64 / step).ceil();
    // A positive step over [0, total) leaves the length finite and ≤ total + 1.
    let len = if len.is_finite() && len > 0.0 {
        len as usize
    } else {
        0
    };
    let trunc = |x: f64| (x as f32).trunc() as i64;
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i + 2 * W <= len {
        for base_idx in [i, i + W] {
            let base = f64::from((step * base_idx as f64) as f32);
            out.extend((0..W).map(|k| trunc(base + k as f64 * step)));
        }
        i += 2 * W;
    }
    out.extend((i..len).map(|i| trunc(step * i as f64)));
    out
}

/// Per frame its time in seconds, `frame_idx / fps` as `VideoMetadata.timestamps` computes it
/// (in float32 when `sample_frames` chose the frames, see [`FrameSelection::sampled`]). An
/// unknown fps is taken as 1, as `VideoLlama3Processor` does; the flag says so, for a warning.
pub fn timestamps(
    selection: &FrameSelection,
    video_fps: Option<f64>,
) -> Result<(Vec<f64>, bool), VideoProcessError> {
    if let Some(fps) = video_fps {
        check_video_fps(fps)?;
    }
    let fps = video_fps.unwrap_or(1.0);
    let seconds = if selection.sampled {
        // int32 tensor / Python float: both operands become float32, one f32 division.
        let fps = fps as f32;
        selection
            .indices
            .iter()
            .map(|&i| f64::from(i as f32 / fps))
            .collect()
    } else {
        selection.indices.iter().map(|&i| i as f64 / fps).collect()
    };
    Ok((seconds, video_fps.is_none()))
}
