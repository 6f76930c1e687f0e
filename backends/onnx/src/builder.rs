//! Building one ONNX graph: nodes with generated value names, small constants inline, large
//! initializers in the shared external data file (each distinct tensor stored once, however
//! many graphs use it), inputs and outputs with IR dims as `dim_param`s.

use crate::proto::{self, attribute_type, data_type, AttributeProto, NodeProto, TensorProto};
use crate::OPSET;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use vl3c_engine::EngineError;
use vl3c_ir::{DType, Dim};

/// Tensors at least this large go to the data file; smaller ones stay in the graph.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// onnxruntime maps external data when offsets are page-aligned.
const ALIGN: u64 = 4096;

/// The external data file all graphs of one export share.
pub struct DataFile {
    path: PathBuf,
    /// The file's name, as the graphs' `location`s give it (next to the graphs).
    location: String,
    out: BufWriter<File>,
    len: u64,
    stored: HashMap<String, (u64, u64)>,
}

impl DataFile {
    pub fn create(path: &Path) -> Result<DataFile, EngineError> {
        let file = File::create(path)
            .map_err(|e| EngineError::file(path, format!("cannot create: {e}")))?;
        Ok(DataFile {
            path: path.to_path_buf(),
            location: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            stored: HashMap::new(),
        })
    }

    /// Where the tensor `key` lies, writing it (from `bytes`) the first time it is asked for.
    fn place(
        &mut self,
        key: &str,
        bytes: impl FnOnce() -> Result<Vec<u8>, EngineError>,
    ) -> Result<(u64, u64), EngineError> {
        if let Some(&at) = self.stored.get(key) {
            return Ok(at);
        }
        let bytes = bytes()?;
        let err = |e: std::io::Error| EngineError::file(&self.path, format!("cannot write: {e}"));
        let pad = (ALIGN - self.len % ALIGN) % ALIGN;
        self.out.write_all(&vec![0; pad as usize]).map_err(err)?;
        self.out.write_all(&bytes).map_err(err)?;
        let at = (self.len + pad, bytes.len() as u64);
        self.len = at.0 + at.1;
        self.stored.insert(key.to_string(), at);
        Ok(at)
    }

    pub fn finish(mut self) -> Result<u64, EngineError> {
        self.out
            .flush()
            .map_err(|e| EngineError::file(&self.path, format!("cannot write: {e}")))?;
        Ok(self.len)
    }
}

pub fn onnx_type(d: DType) -> i32 {
    match d {
        DType::F32 => data_type::FLOAT,
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        DType::I32 => data_type::INT32,
        DType::I64 => data_type::INT64,
        DType::Bool => data_type::BOOL,
    }
}

pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

fn dims_proto(shape: &[Dim]) -> proto::TensorShapeProto {
    proto::TensorShapeProto {
        dim: shape
            .iter()
            .map(|d| match d.as_const() {
                Some(c) => proto::Dimension {
                    dim_value: Some(c),
                    dim_param: None,
                },
                None => proto::Dimension {
                    dim_value: None,
                    dim_param: Some(d.to_string()),
                },
            })
            .collect(),
    }
}

pub fn value_info(name: &str, dtype: DType, shape: &[Dim]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: onnx_type(dtype),
                shape: Some(dims_proto(shape)),
            }),
        }),
    }
}

pub struct GraphBuilder<'d> {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<proto::ValueInfoProto>,
    outputs: Vec<proto::ValueInfoProto>,
    data: &'d mut DataFile,
    /// Initializer name by key, so a tensor used twice in one graph is one initializer.
    named: HashMap<String, String>,
    next: usize,
}

impl<'d> GraphBuilder<'d> {
    pub fn new(data: &'d mut DataFile) -> GraphBuilder<'d> {
        GraphBuilder {
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            data,
            named: HashMap::new(),
            next: 0,
        }
    }

    fn fresh(&mut self, op: &str) -> String {
        self.next += 1;
        format!("{op}_{}", self.next)
    }

    /// Appends a node with one output and returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.op_into(op, inputs, attrs, &out);
        out
    }

    /// Appends a node whose output is named `out`.
    pub fn op_into(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    /// A tensor initializer named `name`; `bytes` is only called the first time `key` is seen
    /// in the whole export. Small tensors stay inline.
    pub fn initializer(
        &mut self,
        key: &str,
        name: &str,
        dtype: DType,
        shape: &[usize],
        bytes: impl FnOnce() -> Result<Vec<u8>, EngineError>,
    ) -> Result<String, EngineError> {
        if let Some(n) = self.named.get(key) {
            return Ok(n.clone());
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let size = shape.iter().product::<usize>() * dtype.size_bytes();
        let mut t = TensorProto {
            dims,
            data_type: onnx_type(dtype),
            name: name.to_string(),
            ..Default::default()
        };
        if size < EXTERNAL_MIN_BYTES {
            t.raw_data = bytes()?;
        } else {
            let (offset, length) = self.data.place(key, bytes)?;
            let entry = |k: &str, v: String| proto::StringStringEntryProto {
                key: k.into(),
                value: v,
            };
            t.external_data = vec![
                entry("location", self.data.location.clone()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ];
            t.data_location = proto::EXTERNAL;
        }
        self.initializers.push(t);
        self.named.insert(key.to_string(), name.to_string());
        Ok(name.to_string())
    }

    fn constant(&mut self, dtype: DType, shape: &[usize], bytes: Vec<u8>) -> String {
        let key = format!("const {dtype} {shape:?} {bytes:?}");
        if let Some(n) = self.named.get(&key) {
            return n.clone();
        }
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: onnx_type(dtype),
            name: name.clone(),
            raw_data: bytes,
            ..Default::default()
        });
        self.named.insert(key, name.clone());
        name
    }

    /// A 1-D i64 constant.
    pub fn ints(&mut self, v: &[i64]) -> String {
        self.constant(DType::I64, &[v.len()], bytemuck::cast_slice(v).to_vec())
    }

    /// A scalar (rank-0) constant of a float, integer or bool dtype.
    pub fn scalar(&mut self, dtype: DType, value: f64) -> String {
        let bytes = match dtype {
            DType::F32 => (value as f32).to_le_bytes().to_vec(),
            DType::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
            DType::BF16 => half::bf16::from_f64(value).to_le_bytes().to_vec(),
            DType::I32 => (value as i32).to_le_bytes().to_vec(),
            DType::I64 => (value as i64).to_le_bytes().to_vec(),
            DType::Bool => vec![(value != 0.0) as u8],
        };
        self.constant(dtype, &[], bytes)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[Dim]) {
        self.inputs.push(value_info(name, dtype, shape));
    }

    /// Declares graph output `name` carrying `value`.
    pub fn output(&mut self, name: &str, value: &str, dtype: DType, shape: &[Dim]) {
        if value != name {
            self.op_into("Identity", &[value], vec![], name);
        }
        self.outputs.push(value_info(name, dtype, shape));
    }

    pub fn finish(self, name: &str, doc: &str) -> proto::ModelProto {
        proto::ModelProto {
            // IR version 8 is what opset 17 shipped with.
            ir_version: 8,
            opset_import: vec![proto::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "vl3c".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(proto::GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                doc_string: String::new(),
                input: self.inputs,
                output: self.outputs,
                value_info: Vec::new(),
            }),
            metadata_props: Vec::new(),
        }
    }
}
