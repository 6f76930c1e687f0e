//! TensorRT target, build half: optimization profiles derived from the IR's symbol bounds, the
//! `trtexec` command that builds each engine, a manifest (`tensorrt.json`) that records both, and
//! the engines themselves through `trtx` where TensorRT's libraries can be loaded.
//!
//! TensorRT 10.12+ deprecates weak typing and 11 removes it: there are no `--fp16`/`--bf16`
//! builder flags to set, the exported graphs carry their precision, and the network is created
//! strongly typed (`--stronglyTyped`, a no-op on 11).

mod engines;
mod profile;
mod target;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use engines::{build_engines, LIBRARIES};
pub use profile::{
    decoder_specs, profiles, InputShape, Profile, ProfileSpec, ShapeRange, SymbolRange,
};
pub use target::TensorRtTarget;

/// The manifest's file name inside the engine directory.
pub const MANIFEST: &str = "tensorrt.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("profile `{profile}`: input `{input}` axis {axis} (`{dim}`) uses `{symbol}`, which has no bounds: declare them in the IR or fix/bound it in the profile")]
    Unbounded {
        profile: String,
        input: String,
        axis: usize,
        dim: String,
        symbol: String,
    },
    #[error("profile `{profile}`: input `{input}` axis {axis} (`{dim}`) has no finite range (overflow, or a divisor that can be <= 0)")]
    NoRange {
        profile: String,
        input: String,
        axis: usize,
        dim: String,
    },
    #[error("profile `{profile}`: input `{input}` axis {axis} (`{dim}`) can be {min}; TensorRT needs 0 <= min")]
    Negative {
        profile: String,
        input: String,
        axis: usize,
        dim: String,
        min: i64,
    },
    #[error("profile `{profile}`: `{symbol}` has the empty range {min}..={max} (its IR bounds narrowed by the profile)")]
    EmptyRange {
        profile: String,
        symbol: String,
        min: i64,
        max: i64,
    },
    #[error("profile `{profile}` pins `{symbol}` to {value}, outside its bounds {min}..={max}")]
    Pinned {
        profile: String,
        symbol: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("profile `{profile}`: opt value {value} of `{symbol}` lies outside {min}..={max}")]
    OptOutOfRange {
        profile: String,
        symbol: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error(
        "profile `{profile}` names `{symbol}`, which no input uses and the IR does not declare"
    )]
    UnknownSymbol { profile: String, symbol: String },
    #[error("input `{0}` has symbolic axes but no profile was asked for")]
    NoProfile(String),
    #[error("two profiles are named `{0}`")]
    DuplicateProfile(String),
    #[error("input `{input}` has rank {rank}; TensorRT allows at most 8")]
    Rank { input: String, rank: usize },
    #[error("input name `{0}` contains a comma, which trtexec's shape specs cannot carry")]
    InputName(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: bad manifest: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("TensorRT: {context}: {message}")]
    TensorRt { context: String, message: String },
}

/// One engine to build: file names are relative to the engine directory, where the ONNX graphs,
/// their shared external data (`model.onnx.data`) and the plans all lie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginePlan {
    pub onnx: String,
    pub engine: String,
    /// In TensorRT's profile index order; empty when every input is static (TensorRT then makes
    /// the one default profile itself).
    pub profiles: Vec<Profile>,
}

/// Whether the engines were built, for the manifest and the one line the compiler prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Availability {
    Built {
        /// The TensorRT API the engines were built through.
        tensorrt: String,
        engines: Vec<String>,
    },
    Unavailable {
        /// One line: what was looked for and not found.
        reason: String,
    },
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Built { tensorrt, engines } => {
                write!(f, "TensorRT engines built ({tensorrt}): {}", engines.join(", "))
            }
            Availability::Unavailable { reason } => write!(
                f,
                "TensorRT engines not built: {reason}; the ONNX graphs, profiles and trtexec commands are in {MANIFEST}"
            ),
        }
    }
}

/// `tensorrt.json`: what the runtime half reads to pick a profile, and what a person runs where
/// the engines were not built here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub availability: Availability,
    /// The commands run from the engine directory (paths in them are relative to it).
    pub plans: Vec<ManifestPlan>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPlan {
    #[serde(flatten)]
    pub plan: EnginePlan,
    pub built: bool,
    pub trtexec: String,
}

/// The exact `trtexec` command line that builds `plan`, run from the engine directory.
///
/// Several profiles use trtexec's `--profile=N` groups: each `--profile=N` is followed directly
/// by that profile's `--minShapes`, `--optShapes` and `--maxShapes` (trtexec reads the three
/// arguments after the index; NVIDIA/TensorRT `samples/common/sampleOptions.cpp`,
/// `getOptimizationProfiles`). One profile is given without `--profile`, which older trtexecs
/// read as the profile to run inference with. `--skipInference` because building is the whole
/// point here; benchmarking would need the runtime's inputs.
pub fn trtexec_command(plan: &EnginePlan) -> String {
    let mut args = vec![
        "trtexec".to_string(),
        format!("--onnx={}", plan.onnx),
        format!("--saveEngine={}", plan.engine),
        "--stronglyTyped".to_string(),
        "--skipInference".to_string(),
    ];
    let grouped = plan.profiles.len() > 1;
    for (i, p) in plan.profiles.iter().enumerate() {
        if grouped {
            args.push(format!("--profile={i}"));
        }
        for (which, flag) in ["--minShapes", "--optShapes", "--maxShapes"]
            .iter()
            .enumerate()
        {
            let spec: Vec<String> = p
                .shapes
                .iter()
                .map(|(name, r)| {
                    let dims = [&r.min, &r.opt, &r.max][which];
                    format!("{}:{}", trtexec_name(name), shape_spec(dims))
                })
                .collect();
            args.push(format!("{flag}={}", spec.join(",")));
        }
    }
    args.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shape_spec(dims: &[i64]) -> String {
    dims.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// trtexec splits `name:dims` at a colon, so a name holding one travels in single quotes.
fn trtexec_name(name: &str) -> String {
    if name.contains(':') {
        format!("'{name}'")
    } else {
        name.to_string()
    }
}

/// POSIX shell quoting, only where needed so the common command stays readable.
fn shell_word(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Writes `tensorrt.json` in `dir`.
pub fn write_manifest(
    dir: &Path,
    plans: &[EnginePlan],
    availability: &Availability,
) -> Result<(), Error> {
    let built = |p: &EnginePlan| match availability {
        Availability::Built { engines, .. } => engines.contains(&p.engine),
        Availability::Unavailable { .. } => false,
    };
    let manifest = Manifest {
        format: 1,
        availability: availability.clone(),
        plans: plans
            .iter()
            .map(|p| ManifestPlan {
                plan: p.clone(),
                built: built(p),
                trtexec: trtexec_command(p),
            })
            .collect(),
    };
    let path = dir.join(MANIFEST);
    let mut text = serde_json::to_string_pretty(&manifest).expect("the manifest is plain data");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
}

pub fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Manifest { path, source })
}
