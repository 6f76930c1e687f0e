//! What the ONNX tests share: fixtures, export through the compile driver, tract as the runner.

use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;
use vl3c_driver::{compile, ModelSource};
use vl3c_frontends::checkpoint::Checkpoint;
use vl3c_onnx::{MatmulPrecision, ModelInfo, OnnxTarget};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

pub fn export(model: &Path, out: &Path, precision: MatmulPrecision) -> OnnxTarget {
    let ckpt = Checkpoint::open(model).expect("fixture checkpoint opens");
    let mut target = OnnxTarget::new(precision, ModelInfo::default());
    compile(
        &ModelSource::checkpoint(model, &ckpt),
        &mut target,
        out,
        &mut |_, _, _| {},
    )
    .expect("export succeeds");
    target
}

pub fn load(file: &Path) -> HashMap<String, Tensor> {
    let bytes = std::fs::read(file).expect("fixture file reads");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors parses");
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let shape = v.shape().to_vec();
            let t = match v.dtype() {
                safetensors::Dtype::F32 => {
                    let d: Vec<f32> = bytemuck_f32(v.data());
                    Tensor::from_shape(&shape, &d)
                }
                safetensors::Dtype::I64 => {
                    let d: Vec<i64> = v
                        .data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    Tensor::from_shape(&shape, &d)
                }
                safetensors::Dtype::BOOL => {
                    let d: Vec<bool> = v.data().iter().map(|&b| b != 0).collect();
                    Tensor::from_shape(&shape, &d)
                }
                other => panic!("fixture tensor {name} has dtype {other:?}"),
            };
            (name, t.expect("shape matches data"))
        })
        .collect()
}

pub fn bytemuck_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs one exported graph on concrete inputs (by name); the graph's inputs it does not get
/// are an error. Returns the outputs by name.
pub fn run(file: &Path, inputs: &HashMap<&str, Tensor>) -> HashMap<String, Tensor> {
    let mut model = tract_onnx::onnx()
        .model_for_path(file)
        .unwrap_or_else(|e| panic!("tract loads {}: {e:?}", file.display()));
    let names: Vec<String> = model
        .input_outlets()
        .unwrap()
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let mut args = TVec::new();
    for (i, name) in names.iter().enumerate() {
        let t = inputs
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no value for input {name}"));
        model
            .set_input_fact(i, InferenceFact::from(TypedFact::shape_and_dt_of(t)))
            .unwrap();
        args.push(t.clone().into_tvalue());
    }
    let outputs: Vec<String> = model
        .output_outlets()
        .unwrap()
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    // The graphs' shapes depend on input values (the grid, masks), which tract's typed
    // translation cannot see through; the inference model evaluates each op eagerly.
    let plan = model
        .into_runnable()
        .unwrap_or_else(|e| panic!("tract plans {}: {e:?}", file.display()));
    let result = plan
        .run(args)
        .unwrap_or_else(|e| panic!("tract runs {}: {e:?}", file.display()));
    outputs
        .into_iter()
        .zip(result)
        .map(|(n, v)| (n, v.into_tensor()))
        .collect()
}

/// A tensor's elements, in order.
pub fn vals<T: Datum + Clone>(t: &Tensor) -> Vec<T> {
    t.to_plain_array_view::<T>()
        .unwrap()
        .iter()
        .cloned()
        .collect()
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    vals::<f32>(t)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn rows(t: &Tensor, start: usize, end: usize) -> Tensor {
    t.slice(0, start, end).unwrap()
}
