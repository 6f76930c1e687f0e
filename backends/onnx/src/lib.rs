//! ONNX export of the optimized graphs, in the split onnxruntime-genai, optimum and
//! transformers.js use: `vision_m{1,2}.onnx` (patches → projected features, one image or video
//! per call; `_m2` also gives Differential Frame Pruning's keep-mask), `embedding.onnx`
//! (input_ids + features → inputs_embeds) and `decoder.onnx` (inputs_embeds + KV cache →
//! logits + the new cache). Every graph is lowered from the IR the other targets compile
//! ([`lower`]), cut along the graphs' seams ([`split`]); weights go to one external data file
//! shared by all graphs.

mod builder;
mod genai;
mod lower;
pub mod proto;
mod split;
pub mod summary;

use std::collections::BTreeMap;
use vl3c_engine::{Emit, Emitted, EngineError, Target};
use vl3c_ir::{Bounds, DType, Dim, Graph};

/// The data file every exported graph's initializers live in.
pub const DATA_FILE: &str = "model.onnx.data";
/// The onnxruntime-genai style description of the exported files.
pub const GENAI_CONFIG: &str = "genai_config.json";
/// The ONNX opset the graphs use (LayerNormalization is opset 17).
pub const OPSET: i64 = 17;

/// Writes graph `g` alone to `file` in `out` (weights in `data_file` there): inputs and outputs
/// named as in the IR. The vision ops (`vision_position_ids`, `segment_ids`, segment attention,
/// `diff_frame_prune`) are lowered for one grid entry.
pub fn export_graph(
    g: &Graph,
    out: &mut Emit,
    file: &str,
    data_file: &str,
) -> Result<(), EngineError> {
    let mut data = builder::DataFile::create(&out.path(data_file)?)?;
    let model = split::export_graph(g, &mut data, out, MatmulPrecision::F32)?;
    data.finish()?;
    out.write(file, &prost::Message::encode_to_vec(&model))
}

/// The precision of the matmul weights (and the matmuls); norms, softmax, RoPE and every other
/// op compute in f32 whatever this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatmulPrecision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl MatmulPrecision {
    pub fn parse(s: &str) -> Option<MatmulPrecision> {
        match s {
            "f32" => Some(MatmulPrecision::F32),
            "bf16" => Some(MatmulPrecision::Bf16),
            "f16" => Some(MatmulPrecision::F16),
            _ => None,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            MatmulPrecision::F32 => DType::F32,
            MatmulPrecision::Bf16 => DType::BF16,
            MatmulPrecision::F16 => DType::F16,
        }
    }
}

/// What each exported graph is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Vision encoder + projector for one image or one video of this merge size.
    Vision {
        merge: usize,
    },
    Embedding,
    Decoder,
}

/// One input or output of an exported graph; dims that are not constants are named after the
/// IR's symbols (`seq_len`, `past_len + seq_len`) and are the ONNX `dim_param`s.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// One exported `.onnx` file.
#[derive(Clone, Debug)]
pub struct ExportedGraph {
    pub file: String,
    pub role: Role,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// The bounds of every symbol in the inputs' and outputs' shapes, from the IR.
    pub symbols: BTreeMap<String, Bounds>,
}

/// Facts about the model the IR does not carry, for `genai_config.json`: the CLI reads them
/// from the checkpoint's config files.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    /// `generation_config.json`, `preprocessor_config.json` etc. by file name, when present.
    pub configs: BTreeMap<String, serde_json::Value>,
}

/// The ONNX export as a compile target, so it reuses the driver's lowering, optimization,
/// manifest and hashing.
#[derive(Default)]
pub struct OnnxTarget {
    pub precision: MatmulPrecision,
    pub info: ModelInfo,
    exported: Vec<ExportedGraph>,
}

impl OnnxTarget {
    pub fn new(precision: MatmulPrecision, info: ModelInfo) -> OnnxTarget {
        OnnxTarget {
            precision,
            info,
            exported: Vec::new(),
        }
    }

    /// The files the last `emit` wrote.
    pub fn exported(&self) -> &[ExportedGraph] {
        &self.exported
    }
}

impl Target for OnnxTarget {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn cost_model(&self) -> &'static str {
        "tensorrt"
    }

    fn emit(&mut self, graphs: &[&Graph], out: &mut Emit) -> Result<Emitted, EngineError> {
        self.exported = split::export_all(graphs, out, self.precision)?;
        let config = genai::config(&self.exported, &self.info, self.precision);
        out.write(
            GENAI_CONFIG,
            &serde_json::to_vec_pretty(&config).expect("the config serializes"),
        )?;
        let files: Vec<&str> = self.exported.iter().map(|g| g.file.as_str()).collect();
        Ok(Emitted {
            summary: format!(
                "{} (opset {OPSET}, {} matmuls), weights in {DATA_FILE}",
                files.join(", "),
                self.precision.dtype()
            ),
            ..Emitted::default()
        })
    }
}
