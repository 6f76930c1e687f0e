//! Videos: decoding a file into RGB frames (`decode`) and turning sampled frames into the model's
//! inputs exactly as transformers' `VideoLlama3VideoProcessor` does (`process`). [`load_video`]
//! strings them together the way transformers' pipeline does: read the container's frame count
//! and rate, choose the frames, decode only those, preprocess.

pub mod decode;
pub mod process;

use std::path::Path;

use crate::chat::VideoTokens;
use crate::media::{CacheKey, CacheKeyBuilder, EncodedVideo};
use crate::model::{Model, ModelError};

pub use decode::{open_video, VideoError, VideoFormat, VideoMetadata, VideoReader, VideoRotation};
pub use process::{ProcessedVideos, SamplingRequest, VideoProcessError, VideoProcessorConfig};

/// How to read one video: transformers' `fps` / `num_frames`, plus the frame rate of a directory
/// of frames (which has no container to say it), and where vl3c may depart from transformers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoRequest {
    pub fps: Option<f64>,
    pub num_frames: Option<usize>,
    pub frame_rate: Option<f64>,
    pub rotation: RotationMode,
    pub timestamps: TimestampMode,
}

/// Whether frames are turned by the container's display rotation. transformers (PyAV's
/// `to_ndarray`) does not turn them: `Ignore`, the default, gives its pixels; `Apply` gives what
/// a player shows (a phone's portrait video upright).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RotationMode {
    #[default]
    Ignore,
    Apply,
}

/// Where the prompt's `Time {t}s` labels come from. transformers computes `index / fps` with the
/// average frame rate (`Index`, the default); `Pts` uses each frame's presentation time (from
/// the first frame's), which differs for variable-frame-rate video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimestampMode {
    #[default]
    Index,
    Pts,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadVideoError {
    #[error(transparent)]
    Decode(#[from] VideoError),
    #[error(transparent)]
    Process(#[from] VideoProcessError),
    #[error("--frame-rate {0} is not a positive frame rate")]
    FrameRate(f64),
}

/// One video, decoded and preprocessed: what its prompt and the vision encoder need.
#[derive(Debug, Clone)]
pub struct LoadedVideo {
    pub metadata: VideoMetadata,
    /// The processor's output for this one video (its mask is the processor's; the engine
    /// computes its own when it encodes).
    pub processed: ProcessedVideos,
    /// Hash of the decoded frames and every setting that shapes the features.
    pub key: CacheKey,
}

impl LoadedVideo {
    /// The prompt layout with every merged token kept: the longest this video can make a prompt.
    pub fn unpruned_tokens(&self) -> VideoTokens {
        let frames = &self.processed.timestamps[0];
        let per_frame = self.processed.tokens_per_video()[0] / frames.seconds.len().max(1);
        VideoTokens {
            timestamps: frames.seconds.clone(),
            kept_per_frame: vec![per_frame; frames.seconds.len()],
        }
    }

    /// Runs the vision encoder and projector; the keep-mask comes from the model's video graph.
    pub fn encode(&self, model: &Model) -> Result<EncodedVideo, ModelError> {
        let p = &self.processed;
        let timestamps = p.timestamps[0].seconds.clone();
        EncodedVideo::encode(
            model,
            &p.pixel_values,
            p.patch_dim,
            p.grid_thw[0],
            p.merge_sizes[0],
            timestamps,
        )
    }
}

/// Opens `path`, picks the frames `request` asks for from the container's frame count and rate,
/// decodes only those (`progress(done, total)` as it goes) and preprocesses them.
pub fn load_video(
    path: &Path,
    cfg: &VideoProcessorConfig,
    request: &VideoRequest,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedVideo, LoadVideoError> {
    let mut reader = open_video(path)?;
    let mut metadata = reader.metadata().clone();
    if let Some(rate) = request.frame_rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadVideoError::FrameRate(rate));
        }
        // A container's own rate wins; the flag is for directories of frames.
        metadata.fps = metadata.fps.or(Some(rate));
    }
    let sampling = SamplingRequest {
        fps: request.fps,
        num_frames: request.num_frames,
    };
    let selection = process::sample_indices(metadata.total_frames, metadata.fps, cfg, sampling)?;
    let rotation = match request.rotation {
        RotationMode::Apply => metadata.rotation,
        RotationMode::Ignore => VideoRotation::default(),
    };
    let (h, w) = if rotation.swaps_sides() {
        (metadata.width, metadata.height)
    } else {
        (metadata.height, metadata.width)
    };
    // Each frame is shrunk to the processor's size as it is decoded, so a long 4K clip never
    // holds its sampled frames at full size; the processor is told the decoded size.
    let target = process::target_size(h, w, selection.indices.len(), cfg)?;
    let map = |frame: image::RgbImage| {
        let frame = rotation.apply(frame);
        let (fw, fh) = (frame.width() as usize, frame.height() as usize);
        if (fh, fw) != (h, w) || target == (h, w) {
            return frame;
        }
        let (rh, rw) = target;
        let pixels = crate::preprocess::resize_bicubic_antialias_u8(frame.as_raw(), h, w, rh, rw);
        image::RgbImage::from_raw(rw as u32, rh as u32, pixels).expect("rh·rw·3 bytes")
    };
    let frames = reader.read_frames_mapped(&selection.indices, &map, progress)?;
    let mut processed =
        process::preprocess_video_resized(&frames, &selection, metadata.fps, (h, w), cfg)?;
    if request.timestamps == TimestampMode::Pts {
        if let Some(times) = reader.frame_times()? {
            let first = times.first().copied().unwrap_or(0.0);
            processed.timestamps[0].seconds = selection
                .indices
                .iter()
                .map(|&i| times.get(i).map_or(0.0, |t| t - first))
                .collect();
        }
    }

    let mut key = CacheKeyBuilder::new("video");
    for f in &frames {
        key.bytes(&f.width().to_le_bytes())
            .bytes(&f.height().to_le_bytes())
            .bytes(f.as_raw());
    }
    key.text(&format!("{h}x{w} {:?}", selection.indices));
    key.text(&format!("{:?}", processed.timestamps[0].seconds));
    key.text(&format!("{cfg:?}"));
    Ok(LoadedVideo {
        metadata,
        processed,
        key: key.finish(),
    })
}
