//! Optimization profiles from symbol bounds.
//!
//! Each profile pins some symbols (decode: `seq_len = 1`), narrows others (decode:
//! `past_len <= max_context - 1`) and leaves the rest at their IR bounds. Every dynamic axis then
//! gets `min`/`max` from [`Dim::bounds`] over those ranges, and `opt` from evaluating the axis at
//! each symbol's typical value: the one the profile states, else the symbol's pinned value, else
//! the midpoint `min + (max - min) / 2` of its range (as TensorRT-LLM's vision builder does; the
//! caller states a better one where it knows the workload, since kernels are tuned for `opt`).
//!
//! TensorRT requires `0 <= min <= opt <= max` on every axis (`IOptimizationProfile::setDimensions`
//! in NvInferRuntime.h); zero is allowed and gives an empty tensor, which is how the prefill
//! profile feeds a KV cache of `past_len = 0`. A range that can go negative is an error here.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vl3c_ir::{Bounds, Dim};

use crate::Error;

/// TensorRT's `Dims::MAX_DIMS`.
const MAX_RANK: usize = 8;

/// One graph input as exported: its name and its shape in IR dims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub name: String,
    pub shape: Vec<Dim>,
}

impl InputShape {
    pub fn new(name: impl Into<String>, shape: impl IntoIterator<Item = Dim>) -> Self {
        InputShape {
            name: name.into(),
            shape: shape.into_iter().collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeRange {
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolRange {
    pub min: i64,
    pub opt: i64,
    pub max: i64,
}

/// A TensorRT optimization profile: the shape range of every dynamic input. Static inputs are
/// left out, as TensorRT takes their shape from the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub shapes: BTreeMap<String, ShapeRange>,
    /// The range of each symbol the inputs use, so the runtime can pick the profile whose range
    /// holds the current `seq_len`/`past_len`.
    pub symbols: BTreeMap<String, SymbolRange>,
}

/// What one profile pins, narrows and tunes for; symbols it does not name keep their IR bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileSpec {
    pub name: String,
    pub fixed: BTreeMap<String, i64>,
    /// Intersected with the IR's bounds, so a profile can only narrow them.
    pub bounds: BTreeMap<String, Bounds>,
    pub opt: BTreeMap<String, i64>,
}

impl ProfileSpec {
    pub fn new(name: impl Into<String>) -> Self {
        ProfileSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn fix(mut self, symbol: &str, value: i64) -> Self {
        self.fixed.insert(symbol.to_string(), value);
        self
    }

    pub fn bound(mut self, symbol: &str, min: i64, max: i64) -> Self {
        self.bounds.insert(symbol.to_string(), Bounds { min, max });
        self
    }

    pub fn opt(mut self, symbol: &str, value: i64) -> Self {
        self.opt.insert(symbol.to_string(), value);
        self
    }
}

/// The decoder's two profiles, in this order (the runtime selects them by index): prefill
/// (`past_len = 0`, `seq_len` in `1..=max_context`) and decode (`seq_len = 1`, `past_len` in
/// `0..=max_context - 1`). Both are further clipped by the IR's bounds.
pub fn decoder_specs(max_context: i64) -> Vec<ProfileSpec> {
    vec![
        ProfileSpec::new("prefill")
            .fix("past_len", 0)
            .bound("seq_len", 1, max_context),
        ProfileSpec::new("decode")
            .fix("seq_len", 1)
            .bound("past_len", 0, max_context - 1),
    ]
}

/// The profiles of one graph, one per spec in order; none when no input has a symbolic axis.
pub fn profiles(
    inputs: &[InputShape],
    bounds: &BTreeMap<String, Bounds>,
    specs: &[ProfileSpec],
) -> Result<Vec<Profile>, Error> {
    for input in inputs {
        if input.name.contains(',') {
            return Err(Error::InputName(input.name.clone()));
        }
        if input.shape.len() > MAX_RANK {
            return Err(Error::Rank {
                input: input.name.clone(),
                rank: input.shape.len(),
            });
        }
    }
    let dynamic: Vec<&InputShape> = inputs
        .iter()
        .filter(|i| i.shape.iter().any(|d| d.as_const().is_none()))
        .collect();
    let Some(first) = dynamic.first() else {
        return Ok(Vec::new());
    };
    if specs.is_empty() {
        return Err(Error::NoProfile(first.name.clone()));
    }
    let mut used = Vec::new();
    for input in &dynamic {
        for d in &input.shape {
            d.symbols(&mut used);
        }
    }
    let mut out: Vec<Profile> = Vec::new();
    for spec in specs {
        if out.iter().any(|p| p.name == spec.name) {
            return Err(Error::DuplicateProfile(spec.name.clone()));
        }
        out.push(profile(&dynamic, &used, bounds, spec)?);
    }
    Ok(out)
}

fn profile(
    inputs: &[&InputShape],
    used: &[String],
    ir: &BTreeMap<String, Bounds>,
    spec: &ProfileSpec,
) -> Result<Profile, Error> {
    let named = spec
        .fixed
        .keys()
        .chain(spec.bounds.keys())
        .chain(spec.opt.keys());
    for symbol in named {
        if !ir.contains_key(symbol) && !used.contains(symbol) {
            return Err(Error::UnknownSymbol {
                profile: spec.name.clone(),
                symbol: symbol.clone(),
            });
        }
    }
    let ranges = symbol_ranges(used, ir, spec)?;
    let opt_env: HashMap<String, i64> = ranges.iter().map(|(s, r)| (s.clone(), r.opt)).collect();
    let of = |s: &str| {
        ranges.get(s).map(|r| Bounds {
            min: r.min,
            max: r.max,
        })
    };

    let mut shapes = BTreeMap::new();
    for input in inputs {
        let mut range = ShapeRange {
            min: Vec::new(),
            opt: Vec::new(),
            max: Vec::new(),
        };
        for (axis, dim) in input.shape.iter().enumerate() {
            let err_at = |symbol: Option<String>| {
                let (profile, input, dim) =
                    (spec.name.clone(), input.name.clone(), dim.to_string());
                match symbol {
                    Some(symbol) => Error::Unbounded {
                        profile,
                        input,
                        axis,
                        dim,
                        symbol,
                    },
                    None => Error::NoRange {
                        profile,
                        input,
                        axis,
                        dim,
                    },
                }
            };
            let Some(b) = dim.bounds(&of) else {
                let mut syms = Vec::new();
                dim.symbols(&mut syms);
                return Err(err_at(syms.into_iter().find(|s| !ranges.contains_key(s))));
            };
            if b.min < 0 {
                return Err(Error::Negative {
                    profile: spec.name.clone(),
                    input: input.name.clone(),
                    axis,
                    dim: dim.to_string(),
                    min: b.min,
                });
            }
            let opt = dim.eval(&opt_env).map_err(|_| err_at(None))?;
            range.min.push(b.min);
            // Interval arithmetic contains every point value; the clamp only guards that.
            range.opt.push(opt.clamp(b.min, b.max));
            range.max.push(b.max);
        }
        shapes.insert(input.name.clone(), range);
    }
    let symbols = ranges
        .into_iter()
        .filter(|(s, _)| used.contains(s))
        .collect();
    Ok(Profile {
        name: spec.name.clone(),
        shapes,
        symbols,
    })
}

/// Every symbol's range in this profile: IR bounds, narrowed by the spec, then pinned.
/// Symbols with no bounds anywhere are absent; the axes using them report it.
fn symbol_ranges(
    used: &[String],
    ir: &BTreeMap<String, Bounds>,
    spec: &ProfileSpec,
) -> Result<BTreeMap<String, SymbolRange>, Error> {
    let mut names: Vec<&String> = ir.keys().chain(used.iter()).collect();
    names.extend(spec.fixed.keys().chain(spec.bounds.keys()));
    names.sort();
    names.dedup();
    let mut out = BTreeMap::new();
    for symbol in names {
        let narrowed = match (ir.get(symbol), spec.bounds.get(symbol)) {
            (Some(a), Some(b)) => Some(Bounds {
                min: a.min.max(b.min),
                max: a.max.min(b.max),
            }),
            (a, b) => a.or(b).copied(),
        };
        let range = match (spec.fixed.get(symbol), narrowed) {
            (Some(&value), Some(b)) if value < b.min || value > b.max => {
                return Err(Error::Pinned {
                    profile: spec.name.clone(),
                    symbol: symbol.clone(),
                    value,
                    min: b.min,
                    max: b.max,
                })
            }
            (Some(&v), _) => Bounds { min: v, max: v },
            (None, Some(b)) if b.min > b.max => {
                return Err(Error::EmptyRange {
                    profile: spec.name.clone(),
                    symbol: symbol.clone(),
                    min: b.min,
                    max: b.max,
                })
            }
            (None, Some(b)) => b,
            (None, None) => continue,
        };
        let midpoint = ((i128::from(range.min) + i128::from(range.max)) / 2) as i64;
        let opt = spec.opt.get(symbol).copied().unwrap_or(midpoint);
        if opt < range.min || opt > range.max {
            return Err(Error::OptOutOfRange {
                profile: spec.name.clone(),
                symbol: symbol.clone(),
                value: opt,
                min: range.min,
                max: range.max,
            });
        }
        out.insert(
            symbol.clone(),
            SymbolRange {
                min: range.min,
                opt,
                max: range.max,
            },
        );
    }
    Ok(out)
}
