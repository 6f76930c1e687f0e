//! `--target tensorrt`: the ONNX export (strongly typed: the matmul precision is in the graphs),
//! one engine plan per exported graph with optimization profiles from the IR's symbol bounds,
//! `tensorrt.json`, and the engines themselves where TensorRT's libraries load.

use crate::{
    build_engines, decoder_specs, profiles, write_manifest, Availability, EnginePlan, InputShape,
    ProfileSpec, MANIFEST,
};
use vl3c_engine::{Emit, Emitted, EngineError, Target};
use vl3c_ir::Graph;
use vl3c_onnx::{ExportedGraph, MatmulPrecision, ModelInfo, OnnxTarget, Role};

pub struct TensorRtTarget {
    onnx: OnnxTarget,
    /// The longest sequence (prompt + generated) the decoder profiles cover; the IR's bound of
    /// `past_len` + 1 when not given.
    pub max_context: Option<i64>,
    availability: Option<Availability>,
}

impl TensorRtTarget {
    pub fn new(precision: MatmulPrecision, info: ModelInfo, max_context: Option<i64>) -> Self {
        TensorRtTarget {
            onnx: OnnxTarget::new(precision, info),
            max_context,
            availability: None,
        }
    }

    /// Whether the last `emit` built the engines.
    pub fn availability(&self) -> Option<&Availability> {
        self.availability.as_ref()
    }
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Incompatible(format!("tensorrt: {e}"))
}

/// The profiles each exported graph gets. Vision: one, from one image's smallest grid to the
/// per-call bound, tuned for a 448×448 image (1024 patches) or a 16-frame 448×448 video.
/// Embedding: one, tuned for a 300-token prompt. Decoder: prefill and decode.
fn specs(g: &ExportedGraph, max_context: i64) -> Vec<ProfileSpec> {
    let clip = |s: &str, v: i64| {
        g.symbols
            .get(s)
            .map_or(v, |b| v.clamp(b.min, b.max.min(max_context.max(b.min))))
    };
    match g.role {
        Role::Vision { merge } => {
            let tokens = if merge == 1 { 1024 } else { 16 * 256 };
            let max = g.symbols.get("n_merged").map_or(tokens, |b| b.max);
            vec![ProfileSpec::new("vision").opt("n_merged", tokens.min(max))]
        }
        Role::Embedding => {
            let mut spec = ProfileSpec::new("prompt")
                .bound("seq_len", 1, max_context)
                .opt("seq_len", clip("seq_len", 300));
            // Video tokens before pruning may outnumber the context: up to 16× is covered.
            for (s, max) in [
                ("n_image_tokens", max_context),
                ("n_video_tokens", 16 * max_context),
                ("n_video_kept", max_context),
            ] {
                if g.symbols.contains_key(s) {
                    spec = spec.bound(s, 0, max).opt(s, clip(s, 256));
                }
            }
            vec![spec]
        }
        Role::Decoder => decoder_specs(max_context)
            .into_iter()
            .map(|s| {
                let opt = if s.name == "prefill" {
                    ("seq_len", 300)
                } else {
                    ("past_len", 300)
                };
                s.opt(opt.0, clip(opt.0, opt.1).min(max_context - 1).max(1))
            })
            .collect(),
    }
}

impl Target for TensorRtTarget {
    fn name(&self) -> &'static str {
        "tensorrt"
    }

    fn cost_model(&self) -> &'static str {
        "tensorrt"
    }

    fn emit(&mut self, graphs: &[&Graph], out: &mut Emit) -> Result<Emitted, EngineError> {
        let exported = self.onnx.emit(graphs, out)?;
        let ir_context = self
            .onnx
            .exported()
            .iter()
            .find_map(|g| g.symbols.get("past_len"))
            .map(|b| b.max + 1)
            .ok_or_else(|| err("the decoder has no past_len bound"))?;
        let max_context = self.max_context.unwrap_or(ir_context);
        if max_context < 2 || max_context > ir_context {
            return Err(err(format!(
                "--max-context {max_context} must lie in 2..={ir_context} (the model's bound)"
            )));
        }
        let mut plans = Vec::new();
        for g in self.onnx.exported() {
            let inputs: Vec<InputShape> = g
                .inputs
                .iter()
                .map(|s| InputShape::new(s.name.clone(), s.shape.iter().cloned()))
                .collect();
            plans.push(EnginePlan {
                onnx: g.file.clone(),
                engine: g.file.replace(".onnx", ".plan"),
                profiles: profiles(&inputs, &g.symbols, &specs(g, max_context))
                    .map_err(|e| err(format!("{}: {e}", g.file)))?,
            });
        }
        out.progress("tensorrt", 0, plans.len());
        let availability = build_engines(out.dir(), &plans).map_err(err)?;
        if let Availability::Built { engines, .. } = &availability {
            for e in engines {
                out.path(e)?;
            }
        }
        write_manifest(out.dir(), &plans, &availability).map_err(err)?;
        out.path(MANIFEST)?;
        out.progress("tensorrt", plans.len(), plans.len());
        let mut emitted = exported;
        emitted.summary = format!("{}; {availability}", emitted.summary);
        self.availability = Some(availability);
        Ok(emitted)
    }
}
