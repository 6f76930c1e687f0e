//! Image processor settings (`preprocessor_config.json`).

use std::path::Path;

use serde_json::Value;

use vl3c_frontends::limits::{
    check_size, read_bounded_to_string, MAX_CONFIG_BYTES, MAX_MERGE, MAX_PATCH, MAX_PIXELS,
};

use super::PreprocessError;

/// Settings of `VideoLlama3ImageProcessor` that change its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageProcessorConfig {
    /// Spatial patch size p (14).
    pub patch_size: usize,
    /// Merge size m: 1 for images.
    pub merge_size: usize,
    /// `size.shortest_edge`: the minimum pixel count (not an edge length).
    pub min_pixels: usize,
    /// `size.longest_edge`: the maximum pixel count (not an edge length).
    pub max_pixels: usize,
}

impl Default for ImageProcessorConfig {
    /// transformers' class defaults: `size = {"shortest_edge": 56*56,
    /// "longest_edge": 28*28*1280}`, patch 14, merge 1.
    fn default() -> Self {
        Self {
            patch_size: 14,
            merge_size: 1,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
        }
    }
}

impl ImageProcessorConfig {
    /// Resize factor `patch_size * merge_size`.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one `pixel_values` row: `3 * p * p` (temporal patch 1).
    pub fn patch_dim(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }

    /// Reads `dir/preprocessor_config.json` if it exists, else the defaults.
    pub fn from_model_dir(dir: &Path) -> Result<Self, PreprocessError> {
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = read_bounded_to_string(&path, MAX_CONFIG_BYTES, "preprocessor_config.json")
            .map_err(|e| PreprocessError::Io {
                path: path.clone(),
                error: e,
            })?;
        Self::from_json_str(&text).map_err(|e| match e {
            PreprocessError::InvalidConfig(msg) => PreprocessError::Config { path, msg },
            other => other,
        })
    }

    /// Parses the contents of a `preprocessor_config.json`. Three styles:
    /// * transformers 5: `"size": {"shortest_edge": .., "longest_edge": ..}`
    /// * legacy top-level `"min_pixels"` / `"max_pixels"` (they override `size`,
    ///   as in `VideoLlama3ImageProcessor.__init__`)
    /// * DAMO's original processor: `"min_tokens"` / `"max_tokens"`, in units
    ///   of `patch_size²` pixels (used where `min_pixels`/`max_pixels` are absent)
    ///
    /// plus `patch_size` and `merge_size`. Missing fields keep the defaults.
    pub fn from_json_str(text: &str) -> Result<Self, PreprocessError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| PreprocessError::InvalidConfig(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| {
            PreprocessError::InvalidConfig("top level is not a JSON object".into())
        })?;
        let mut cfg = Self::default();
        // Every size is bounded as it is read, before any product of it is formed or anything
        // is allocated from it (see `vl3c_frontends::limits`).
        let bounded =
            |key: &str, v: Option<&Value>, max: usize| -> Result<Option<usize>, PreprocessError> {
                let x = get_uint(v, key)?;
                if let Some(x) = x {
                    check_size(key, x, max).map_err(PreprocessError::InvalidConfig)?;
                }
                Ok(x)
            };
        if let Some(p) = bounded("patch_size", obj.get("patch_size"), MAX_PATCH)? {
            cfg.patch_size = p;
        }
        if let Some(m) = bounded("merge_size", obj.get("merge_size"), MAX_MERGE)? {
            cfg.merge_size = m;
        }
        if let Some(size) = obj.get("size") {
            if !size.is_null() {
                let s = size.as_object().ok_or_else(|| {
                    PreprocessError::InvalidConfig("`size` is not an object".into())
                })?;
                if let Some(x) = bounded("size.shortest_edge", s.get("shortest_edge"), MAX_PIXELS)?
                {
                    cfg.min_pixels = x;
                }
                if let Some(x) = bounded("size.longest_edge", s.get("longest_edge"), MAX_PIXELS)? {
                    cfg.max_pixels = x;
                }
            }
        }
        let pp = cfg.patch_size * cfg.patch_size;
        // DAMO's token counts are pixels in units of patch²: bounded as the pixels they make.
        let tokens = |key: &str| -> Result<Option<usize>, PreprocessError> {
            let Some(t) = get_uint(obj.get(key), key)? else {
                return Ok(None);
            };
            match t.checked_mul(pp).filter(|&p| p <= MAX_PIXELS) {
                Some(pixels) => Ok(Some(pixels)),
                None => Err(PreprocessError::InvalidConfig(format!(
                    "{key} is {t}, more than vl3c accepts (at most {} tokens of {pp} pixels: {MAX_PIXELS} pixels)",
                    MAX_PIXELS / pp.max(1)
                ))),
            }
        };
        if let Some(p) = tokens("min_tokens")? {
            cfg.min_pixels = p;
        }
        if let Some(p) = tokens("max_tokens")? {
            cfg.max_pixels = p;
        }
        if let Some(x) = bounded("min_pixels", obj.get("min_pixels"), MAX_PIXELS)? {
            cfg.min_pixels = x;
        }
        if let Some(x) = bounded("max_pixels", obj.get("max_pixels"), MAX_PIXELS)? {
            cfg.max_pixels = x;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks every entry point makes before using a config (one built in code too): sizes
    /// that would divide by zero, and sizes past `vl3c_frontends::limits`.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.patch_size == 0 || self.merge_size == 0 {
            return Err(PreprocessError::InvalidConfig(format!(
                "patch_size ({}) and merge_size ({}) must be positive",
                self.patch_size, self.merge_size
            )));
        }
        for (field, value, max) in [
            ("patch_size", self.patch_size, MAX_PATCH),
            ("merge_size", self.merge_size, MAX_MERGE),
            ("min_pixels", self.min_pixels, MAX_PIXELS),
            ("max_pixels", self.max_pixels, MAX_PIXELS),
        ] {
            check_size(field, value, max).map_err(PreprocessError::InvalidConfig)?;
        }
        Ok(())
    }
}

/// A non-negative integer field (JSON integer, or a float with an integral value).
fn get_uint(v: Option<&Value>, name: &str) -> Result<Option<usize>, PreprocessError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if let Some(u) = v.as_u64() {
                return Ok(Some(u as usize));
            }
            if let Some(f) = v.as_f64() {
                if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 {
                    return Ok(Some(f as usize));
                }
            }
            Err(PreprocessError::InvalidConfig(format!(
                "`{name}` must be a non-negative integer, got {v}"
            )))
        }
    }
}
