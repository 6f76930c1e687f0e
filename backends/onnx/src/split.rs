//! The IR's five graphs cut into the exported ones: each vision graph with the projector after
//! it, the prefill graph's prefix up to the embeddings (`embedding.onnx`) and its rest with
//! the embeddings, positions and caches as inputs (`decoder.onnx`, which serves prefill and
//! decode alike: the decode graph differs only in where its embeddings come from).

use crate::builder::{DataFile, GraphBuilder};
use crate::lower::{Lowerer, Val};
use crate::proto::ModelProto;
use crate::{ExportedGraph, IoSpec, MatmulPrecision, Role, DATA_FILE};
use prost::Message;
use vl3c_engine::{Emit, EngineError};
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

fn incompatible(m: impl Into<String>) -> EngineError {
    EngineError::Incompatible(format!("onnx export: {}", m.into()))
}

/// Inputs and outputs as declared, for the exported graph's description.
struct Io {
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
}

impl Io {
    fn new() -> Io {
        Io {
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn input(&mut self, lw: &mut Lowerer, name: &str, dtype: DType, shape: Vec<Dim>) -> Val {
        lw.b.input(name, dtype, &shape);
        self.inputs.push(IoSpec {
            name: name.into(),
            dtype,
            shape,
        });
        Val {
            name: name.into(),
            dtype,
        }
    }

    fn output(&mut self, lw: &mut Lowerer, name: &str, val: &Val, shape: Vec<Dim>) {
        lw.b.output(name, &val.name, val.dtype, &shape);
        self.outputs.push(IoSpec {
            name: name.into(),
            dtype: val.dtype,
            shape,
        });
    }

    /// Input `name` of type `[1] ++ ty`, as the batch-free value the IR computes with.
    fn batched_input(&mut self, lw: &mut Lowerer, name: &str, ty: &TensorType) -> Val {
        let mut shape = vec![Dim::Const(1)];
        shape.extend(ty.shape.iter().cloned());
        let v = self.input(lw, name, ty.dtype, shape);
        Val {
            name: lw.squeeze(&v.name, &[0]),
            dtype: v.dtype,
        }
    }

    /// Output `name`: node `id` of `g` with a leading batch axis of 1.
    fn batched_output(&mut self, lw: &mut Lowerer, name: &str, g: &Graph, id: NodeId) {
        let v = lw.value(id).expect("lowered").clone();
        let batched = Val {
            name: lw.unsqueeze(&v.name, &[0]),
            dtype: v.dtype,
        };
        let mut shape = vec![Dim::Const(1)];
        shape.extend(g.ty(id).shape.iter().cloned());
        self.output(lw, name, &batched, shape);
    }

    fn finish(self, file: &str, role: Role, graphs: &[&Graph]) -> ExportedGraph {
        let mut names = Vec::new();
        for s in self.inputs.iter().chain(&self.outputs) {
            for d in &s.shape {
                d.symbols(&mut names);
            }
        }
        let symbols = names
            .into_iter()
            .filter_map(|n| {
                let b = graphs.iter().find_map(|g| g.symbol_bounds(&n))?;
                Some((n, b))
            })
            .collect();
        ExportedGraph {
            file: file.into(),
            role,
            inputs: self.inputs,
            outputs: self.outputs,
            symbols,
        }
    }
}

pub fn export_all(
    graphs: &[&Graph],
    out: &mut Emit,
    precision: MatmulPrecision,
) -> Result<Vec<ExportedGraph>, EngineError> {
    let by_name = |name: &str| {
        graphs
            .iter()
            .find(|g| g.name == name)
            .copied()
            .ok_or_else(|| incompatible(format!("there is no `{name}` graph")))
    };
    let projector = by_name("projector")?;
    let prefill = by_name("prefill")?;
    let data_path = out.path(DATA_FILE)?;
    let mut data = DataFile::create(&data_path)?;
    let mut exported = Vec::new();
    let parts: [(&str, usize); 4] = [
        ("vision_m1.onnx", 1),
        ("vision_m2.onnx", 2),
        ("embedding.onnx", 0),
        ("decoder.onnx", 0),
    ];
    for (i, (file, merge)) in parts.into_iter().enumerate() {
        out.progress("export", i, parts.len());
        let emit: &Emit = out;
        let (model, graph) = match file {
            "embedding.onnx" => embedding(prefill, &mut data, emit, precision)?,
            "decoder.onnx" => decoder(prefill, &mut data, emit, precision)?,
            _ => {
                let vision = by_name(&format!("vision_m{merge}"))?;
                vision_part(vision, projector, merge, file, &mut data, emit, precision)?
            }
        };
        out.write(file, &model.encode_to_vec())?;
        exported.push(graph);
    }
    data.finish()?;
    out.progress("export", parts.len(), parts.len());
    Ok(exported)
}

fn output_id(g: &Graph, name: &str) -> Result<NodeId, EngineError> {
    g.output(name)
        .ok_or_else(|| incompatible(format!("{} has no output `{name}`", g.name)))
}

/// Vision encoder and projector over one image or video: `grid_thw` is `[1, 3]`, so the frames
/// of the one entry are the attention segments and all have h·w patches.
fn vision_part(
    vision: &Graph,
    projector: &Graph,
    merge: usize,
    file: &str,
    data: &mut DataFile,
    emit: &Emit,
    precision: MatmulPrecision,
) -> Result<(ModelProto, ExportedGraph), EngineError> {
    let mut io = Io::new();
    let mut lw = Lowerer::new(vision, GraphBuilder::new(data), emit, precision);
    for (id, name, ty) in vision.inputs() {
        let shape = match name {
            "grid_thw" => vec![Dim::Const(1), Dim::Const(3)],
            "merge_sizes" => vec![Dim::Const(1)],
            _ => ty.shape.clone(),
        };
        let v = io.input(&mut lw, name, ty.dtype, shape);
        lw.bind(id, v);
    }
    let features = output_id(vision, "features")?;
    let keep = vision.output("keep_mask");
    let wanted: Vec<NodeId> = std::iter::once(features).chain(keep).collect();
    lw.lower(&wanted)?;
    let feature_val = lw.value(features).expect("lowered").clone();
    let keep_val = keep.map(|k| lw.value(k).expect("lowered").clone());
    let b = lw.into_builder();

    let mut lw = Lowerer::new(projector, b, emit, precision);
    let (pin, _, _) = projector
        .inputs()
        .next()
        .ok_or_else(|| incompatible("the projector has no input"))?;
    lw.bind(pin, feature_val);
    let embeds = output_id(projector, "embeds")?;
    lw.lower(&[embeds])?;
    let embeds_val = lw.value(embeds).expect("lowered").clone();
    let tokens = vision.ty(features).shape[0].clone();
    let hidden = projector.ty(embeds).shape[1].clone();
    io.output(
        &mut lw,
        "features",
        &embeds_val,
        vec![tokens.clone(), hidden],
    );
    if let Some(k) = keep_val {
        io.output(&mut lw, "keep_mask", &k, vec![tokens]);
    }
    let doc = format!(
        "VideoLLaMA3 vision encoder + projector, merge size {merge}: one image or one video per call"
    );
    let model = lw
        .into_builder()
        .finish(file.trim_end_matches(".onnx"), &doc);
    let graph = io.finish(file, Role::Vision { merge }, &[vision, projector]);
    Ok((model, graph))
}

/// The embeddings the decoder layers start from: the last node that writes image or video
/// features into the token embeddings.
fn embeddings_node(prefill: &Graph) -> Result<NodeId, EngineError> {
    (0..prefill.nodes.len())
        .rev()
        .map(|i| NodeId(i as u32))
        .find(|&id| prefill.node(id).op == Op::MaskedScatter)
        .ok_or_else(|| incompatible("the prefill graph has no masked_scatter"))
}

fn ancestors(g: &Graph, of: NodeId) -> Vec<bool> {
    let mut seen = vec![false; g.nodes.len()];
    seen[of.index()] = true;
    for i in (0..=of.index()).rev() {
        if seen[i] {
            for inp in &g.nodes[i].inputs {
                seen[inp.index()] = true;
            }
        }
    }
    seen
}

/// onnxruntime-genai's names for the embedding graph's feature inputs.
fn embedding_input_name(ir: &str) -> &str {
    match ir {
        "image_embeds" => "image_features",
        "video_embeds" => "video_features",
        other => other,
    }
}

fn embedding(
    prefill: &Graph,
    data: &mut DataFile,
    emit: &Emit,
    precision: MatmulPrecision,
) -> Result<(ModelProto, ExportedGraph), EngineError> {
    let cut = embeddings_node(prefill)?;
    let needed = ancestors(prefill, cut);
    let mut io = Io::new();
    let mut lw = Lowerer::new(prefill, GraphBuilder::new(data), emit, precision);
    for (id, name, ty) in prefill.inputs() {
        if needed[id.index()] {
            let v = io.input(
                &mut lw,
                embedding_input_name(name),
                ty.dtype,
                ty.shape.clone(),
            );
            lw.bind(id, v);
        }
    }
    lw.lower(&[cut])?;
    io.batched_output(&mut lw, "inputs_embeds", prefill, cut);
    let doc = "VideoLLaMA3 token embeddings with the image and video features scattered in";
    let model = lw.into_builder().finish("embedding", doc);
    Ok((
        model,
        io.finish("embedding.onnx", Role::Embedding, &[prefill]),
    ))
}

/// `layers.{i}.key` → (i, "key").
fn cache_slot(name: &str) -> Result<(usize, &str), EngineError> {
    let bad = || incompatible(format!("cache state `{name}` is not `layers.N.key|value`"));
    let rest = name.strip_prefix("layers.").ok_or_else(bad)?;
    let (i, kind) = rest.split_once('.').ok_or_else(bad)?;
    let i = i.parse().map_err(|_| bad())?;
    match kind {
        "key" | "value" => Ok((i, kind)),
        _ => Err(bad()),
    }
}

fn decoder(
    prefill: &Graph,
    data: &mut DataFile,
    emit: &Emit,
    precision: MatmulPrecision,
) -> Result<(ModelProto, ExportedGraph), EngineError> {
    let cut = embeddings_node(prefill)?;
    let cut_ty = prefill.ty(cut).clone();
    let seq_len = cut_ty.shape[0].clone();
    let mut io = Io::new();
    let mut lw = Lowerer::new(prefill, GraphBuilder::new(data), emit, precision);

    let e = io.batched_input(&mut lw, "inputs_embeds", &cut_ty);
    lw.bind(cut, e);

    let mut caches: Vec<(usize, &str, NodeId)> = Vec::new();
    for (i, n) in prefill.nodes.iter().enumerate() {
        if let Op::CacheRead { name } = &n.op {
            let (layer, kind) = cache_slot(name)?;
            caches.push((layer, kind, NodeId(i as u32)));
        }
    }
    caches.sort();
    let past_len = caches
        .first()
        .map(|&(_, _, id)| prefill.ty(id).shape[1].clone())
        .ok_or_else(|| incompatible("the prefill graph reads no KV cache"))?;
    let total = past_len.clone() + seq_len.clone();

    let mask = io.input(
        &mut lw,
        "attention_mask",
        DType::I64,
        vec![Dim::Const(1), total.clone()],
    );
    let positions = io.input(
        &mut lw,
        "position_ids",
        DType::I64,
        vec![Dim::Const(1), seq_len.clone()],
    );
    for &(layer, kind, id) in &caches {
        let name = format!("past_key_values.{layer}.{kind}");
        let v = io.batched_input(&mut lw, &name, prefill.ty(id));
        lw.bind(id, v);
    }
    let m = lw.squeeze(&mask.name, &[0]);
    lw.key_mask = Some(lw.cast(&m, DType::Bool));

    // The positions of the new tokens: `iota(seq_len) + past_len` in the IR.
    let positions = lw.squeeze(&positions.name, &[0]);
    for (i, n) in prefill.nodes.iter().enumerate() {
        if let Op::Iota { len, start, dtype } = &n.op {
            if *len == seq_len && *start == past_len {
                let name = if *dtype == DType::I64 {
                    positions.clone()
                } else {
                    lw.cast(&positions, *dtype)
                };
                lw.bind(
                    NodeId(i as u32),
                    Val {
                        name,
                        dtype: *dtype,
                    },
                );
            }
        }
    }

    let logits = output_id(prefill, "logits")?;
    let appends: Vec<NodeId> = (0..prefill.nodes.len())
        .map(|i| NodeId(i as u32))
        .filter(|&id| matches!(prefill.node(id).op, Op::CacheAppend { .. }))
        .collect();
    let mut wanted = vec![logits];
    wanted.extend(&appends);
    lw.lower(&wanted)?;
    let logits_val = lw.value(logits).expect("lowered").clone();
    io.output(
        &mut lw,
        "logits",
        &logits_val,
        prefill.ty(logits).shape.clone(),
    );
    let mut presents: Vec<(usize, &str, NodeId)> = Vec::new();
    for &id in &appends {
        let Op::CacheAppend { name, .. } = &prefill.node(id).op else {
            unreachable!("filtered above")
        };
        let (layer, kind) = cache_slot(name)?;
        presents.push((layer, kind, id));
    }
    presents.sort();
    for (layer, kind, id) in presents {
        io.batched_output(&mut lw, &format!("present.{layer}.{kind}"), prefill, id);
    }
    let doc =
        "VideoLLaMA3 language model: inputs_embeds and the KV cache → logits and the new cache";
    let model = lw.into_builder().finish("decoder", doc);
    Ok((model, io.finish("decoder.onnx", Role::Decoder, &[prefill])))
}

/// One IR graph as it stands, inputs and outputs named as in the IR, its weights in `data`
/// (the op tests' way in: any graph the vision-specific ops allow, i.e. one grid entry).
pub fn export_graph(
    g: &Graph,
    data: &mut DataFile,
    emit: &Emit,
    precision: MatmulPrecision,
) -> Result<ModelProto, EngineError> {
    let mut io = Io::new();
    let mut lw = Lowerer::new(g, GraphBuilder::new(data), emit, precision);
    for (id, name, ty) in g.inputs() {
        let v = io.input(&mut lw, name, ty.dtype, ty.shape.clone());
        lw.bind(id, v);
    }
    let outs: Vec<NodeId> = g.outputs.iter().map(|(_, id)| *id).collect();
    lw.lower(&outs)?;
    for (name, id) in &g.outputs {
        let v = lw.value(*id).expect("lowered").clone();
        io.output(&mut lw, name, &v, g.ty(*id).shape.clone());
    }
    Ok(lw.into_builder().finish(&g.name, ""))
}
