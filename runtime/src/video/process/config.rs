//! Video processor settings (`video_preprocessor_config.json`).

use std::path::Path;

use serde_json::{Map, Value};

use vl3c_frontends::limits::{
    check_size, read_bounded_to_string, MAX_CONFIG_BYTES, MAX_FRAMES, MAX_MERGE, MAX_PATCH,
    MAX_PIXELS,
};

use super::VideoProcessError;

/// The file transformers' `VideoLlama3VideoProcessor.from_pretrained` reads.
pub const VIDEO_PROCESSOR_FILE: &str = "video_preprocessor_config.json";

/// Settings of `VideoLlama3VideoProcessor` that change its output.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoProcessorConfig {
    /// Spatial patch size p (14).
    pub patch_size: usize,
    /// Merge size m (2 for videos).
    pub merge_size: usize,
    /// Frames per temporal patch. Only 1 can be preprocessed (the vision encoder embeds
    /// single-frame patches), but sampling rounds frame counts to it as transformers does.
    pub temporal_patch_size: usize,
    /// `size.shortest_edge`: the minimum pixel count of a frame (not an edge length).
    pub min_pixels: usize,
    /// `size.longest_edge`: the pixel budget of the whole video; each of T frames gets `// T`.
    pub max_pixels: usize,
    /// Fewest frames `fps` sampling picks.
    pub min_frames: usize,
    /// Most frames `fps` sampling picks (`num_frames` sampling ignores it, as transformers does).
    pub max_frames: usize,
    /// Default sampling rate, used when sampling is on and the call names neither.
    pub fps: Option<f64>,
    /// Default frame count, used when sampling is on and the call names neither.
    pub num_frames: Option<usize>,
    /// Whether a call that names neither `fps` nor `num_frames` samples (with the defaults).
    pub do_sample_frames: bool,
    /// Differential Frame Pruning; when off the compression mask is all true.
    pub use_token_compression: bool,
}

impl Default for VideoProcessorConfig {
    /// transformers' class attributes of `VideoLlama3VideoProcessor`.
    fn default() -> Self {
        Self {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 1,
            min_pixels: 128 * 28 * 28,
            max_pixels: 768 * 28 * 28,
            min_frames: 4,
            max_frames: 180,
            fps: None,
            num_frames: None,
            do_sample_frames: false,
            use_token_compression: true,
        }
    }
}

impl VideoProcessorConfig {
    /// Resize factor `patch_size * merge_size`.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one `pixel_values_videos` row: `3 · temporal_patch_size · p · p`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Reads `dir/video_preprocessor_config.json`, or the class defaults where it is absent.
    pub fn from_model_dir(dir: &Path) -> Result<Self, VideoProcessError> {
        let path = dir.join(VIDEO_PROCESSOR_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = read_bounded_to_string(&path, MAX_CONFIG_BYTES, VIDEO_PROCESSOR_FILE).map_err(
            |error| VideoProcessError::Io {
                path: path.clone(),
                error,
            },
        )?;
        Self::from_json_str(&text).map_err(|e| match e {
            VideoProcessError::InvalidConfig(msg) => VideoProcessError::Config { path, msg },
            other => other,
        })
    }

    /// Parses a `video_preprocessor_config.json`. `size = {shortest_edge, longest_edge}` sets the
    /// pixel bounds and the legacy top-level `min_pixels` / `max_pixels` override it, as
    /// `VideoLlama3VideoProcessor.__init__` does; missing keys keep the class defaults. Settings
    /// this port does not implement (another resample, mean, std or rescale factor, resize or
    /// normalization turned off) are errors rather than silently different pixels.
    pub fn from_json_str(text: &str) -> Result<Self, VideoProcessError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| invalid("top level is not a JSON object".into()))?;
        let mut cfg = Self::default();
        let uint = |key: &str| get_uint(obj.get(key), key);
        if let Some(x) = uint("patch_size")? {
            cfg.patch_size = x;
        }
        if let Some(x) = uint("merge_size")? {
            cfg.merge_size = x;
        }
        if let Some(x) = uint("temporal_patch_size")? {
            cfg.temporal_patch_size = x;
        }
        if let Some(x) = uint("min_frames")? {
            cfg.min_frames = x;
        }
        if let Some(x) = uint("max_frames")? {
            cfg.max_frames = x;
        }
        cfg.num_frames = uint("num_frames")?;
        cfg.fps = get_f64(obj.get("fps"), "fps")?;
        // A JSON null reaches transformers as None, which `if use_token_compression:` and
        // `if do_sample_frames` read as false.
        if let Some(v) = obj.get("do_sample_frames") {
            cfg.do_sample_frames = get_bool(v, "do_sample_frames")?.unwrap_or(false);
        }
        if let Some(v) = obj.get("use_token_compression") {
            cfg.use_token_compression = get_bool(v, "use_token_compression")?.unwrap_or(false);
        }
        read_size(obj, &mut cfg)?;
        check_unsupported(obj)?;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    /// The checks every entry point makes before using a config: sizes that would divide by
    /// zero or leave `size` without its two bounds (transformers' `resize` rejects a zero bound),
    /// and sizes past `vl3c_frontends::limits`, which would reach an allocation.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("patch_size", self.patch_size, MAX_PATCH),
            ("merge_size", self.merge_size, MAX_MERGE),
            ("temporal_patch_size", self.temporal_patch_size, MAX_MERGE),
            ("size.shortest_edge", self.min_pixels, MAX_PIXELS),
            ("size.longest_edge", self.max_pixels, MAX_PIXELS),
            ("min_frames", self.min_frames, MAX_FRAMES),
            ("max_frames", self.max_frames, MAX_FRAMES),
            ("num_frames", self.num_frames.unwrap_or(0), MAX_FRAMES),
        ] {
            check_size(&format!("`{name}`"), v, max)?;
        }
        for (name, v) in [
            ("patch_size", self.patch_size),
            ("merge_size", self.merge_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("size.shortest_edge", self.min_pixels),
            ("size.longest_edge", self.max_pixels),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if let Some(fps) = self.fps {
            if !fps.is_finite() {
                return Err(format!("`fps` must be a finite number, got {fps}"));
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> VideoProcessError {
    VideoProcessError::InvalidConfig(msg)
}

/// `size` and the legacy `min_pixels` / `max_pixels` keys.
fn read_size(
    obj: &Map<String, Value>,
    cfg: &mut VideoProcessorConfig,
) -> Result<(), VideoProcessError> {
    let (mut min, mut max) = (Some(cfg.min_pixels), Some(cfg.max_pixels));
    if let Some(size) = obj.get("size").filter(|s| !s.is_null()) {
        let s = size
            .as_object()
            .ok_or_else(|| invalid(format!("`size` must be an object, got {size}")))?;
        // A `size` given replaces the class default whole, so a missing bound stays missing.
        min = get_uint(s.get("shortest_edge"), "size.shortest_edge")?;
        max = get_uint(s.get("longest_edge"), "size.longest_edge")?;
    }
    if let Some(x) = get_uint(obj.get("min_pixels"), "min_pixels")? {
        min = Some(x);
    }
    if let Some(x) = get_uint(obj.get("max_pixels"), "max_pixels")? {
        max = Some(x);
    }
    match (min, max) {
        (Some(min), Some(max)) => {
            cfg.min_pixels = min;
            cfg.max_pixels = max;
            Ok(())
        }
        _ => Err(invalid(
            "`size` must contain both `shortest_edge` and `longest_edge` (pixel counts)".into(),
        )),
    }
}

/// Keys whose non-default values would change the pixels in ways this port does not implement.
fn check_unsupported(obj: &Map<String, Value>) -> Result<(), VideoProcessError> {
    for key in ["do_resize", "do_rescale", "do_normalize"] {
        if get_bool(obj.get(key).unwrap_or(&Value::Null), key)? == Some(false) {
            return Err(invalid(format!("`{key}: false` is not supported")));
        }
    }
    // 3 is PIL's BICUBIC, transformers' only resample for this processor.
    if let Some(r) = get_uint(obj.get("resample"), "resample")? {
        if r != 3 {
            return Err(invalid(format!(
                "`resample` {r} is not supported (only 3, bicubic)"
            )));
        }
    }
    if let Some(f) = get_f64(obj.get("rescale_factor"), "rescale_factor")? {
        if (f - 1.0 / 255.0).abs() > 1e-12 {
            return Err(invalid(format!(
                "`rescale_factor` {f} is not supported (only 1/255)"
            )));
        }
    }
    for key in ["image_mean", "image_std"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let ok = match v {
                    Value::Number(n) => n.as_f64() == Some(0.5),
                    Value::Array(a) => a.len() == 3 && a.iter().all(|x| x.as_f64() == Some(0.5)),
                    _ => false,
                };
                if !ok {
                    return Err(invalid(format!(
                        "`{key}` {v} is not supported (only [0.5, 0.5, 0.5])"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A non-negative integer field (a JSON integer, or a float with an integral value).
fn get_uint(v: Option<&Value>, name: &str) -> Result<Option<usize>, VideoProcessError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if let Some(u) = v.as_u64().and_then(|u| usize::try_from(u).ok()) {
                return Ok(Some(u));
            }
            match v.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as usize)),
                _ => Err(invalid(format!(
                    "`{name}` must be a non-negative integer, got {v}"
                ))),
            }
        }
    }
}

fn get_f64(v: Option<&Value>, name: &str) -> Result<Option<f64>, VideoProcessError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a number, got {v}"))),
    }
}

fn get_bool(v: &Value, name: &str) -> Result<Option<bool>, VideoProcessError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(invalid(format!("`{name}` must be true or false, got {v}"))),
    }
}
