//! The video flags where vl3c may depart from transformers, shared by every command that takes
//! `--video`. Both default to transformers' behaviour: transformers is the oracle.

use vl3c_runtime::video::{RotationMode, TimestampMode};

#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct VideoFlags {
    /// `ignore` (default): frames as stored, as transformers' PyAV loader gives them; `apply`:
    /// turned by the container's display rotation, so a portrait phone video is upright.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Rotation::Ignore)]
    pub video_rotation: Rotation,
    /// Where the prompt's `Time {t}s` labels come from: `index` (default): frame index / average
    /// frame rate, as transformers; `pts`: each frame's presentation time, right for
    /// variable-frame-rate video.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Timestamps::Index)]
    pub video_timestamps: Timestamps,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rotation {
    #[default]
    Ignore,
    Apply,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timestamps {
    #[default]
    Index,
    Pts,
}

impl VideoFlags {
    pub fn rotation(&self) -> RotationMode {
        match self.video_rotation {
            Rotation::Ignore => RotationMode::Ignore,
            Rotation::Apply => RotationMode::Apply,
        }
    }

    pub fn timestamps(&self) -> TimestampMode {
        match self.video_timestamps {
            Timestamps::Index => TimestampMode::Index,
            Timestamps::Pts => TimestampMode::Pts,
        }
    }
}
