//! `vl3c compile`: checkpoint → engine directory (format in `vl3c_backends::engine`).
//!
//! It lives here rather than in vl3c-backends because building `weights.bin` evaluates every
//! `fold` subgraph once, with the reference executor (the definition of the IR), which backends
//! cannot depend on.

use super::plan::{claims_for, fold_key, holds_caches, kernel_desc, tied_matmul, Want};
use crate::exec::{execute, Tensor};
use crate::model::Model;
use half::bf16;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use vl3c_backends::cpu::{codegen, pack};
use vl3c_backends::engine::{
    self as fmt, sha256_file, Claim, EngineError, FileEntry, GraphPlan, Manifest, Plan, Source, TensorEntry, TensorLayout,
    WeightsWriter,
};
use vl3c_ir::{Graph, NodeId, Op};
use vl3c_passes::cost::Target;
use vl3c_passes::schedule::{optimize_graph_with, Memo};
use vl3c_passes::Budget;

/// Compile progress: `(stage, done, total)`; a new stage starts at done = 0.
pub type Progress<'p> = &'p mut dyn FnMut(&str, usize, usize);

#[derive(Debug, Default)]
pub struct CompileReport {
    pub packed_bf16: usize,
    pub packed_f32: usize,
    pub folds_raw: usize,
    pub raw_weights: usize,
    pub kernels: usize,
    pub weights_bytes: u64,
}

fn err(message: impl Into<String>) -> EngineError {
    EngineError::Incompatible(message.into())
}

pub fn compile_engine(model_dir: &Path, target: &str, out_dir: &Path, progress: Progress) -> Result<CompileReport, EngineError> {
    if target != "cpu" {
        return Err(EngineError::UnsupportedTarget(target.to_string()));
    }
    let model = Model::open(model_dir).map_err(|e| EngineError::file(model_dir, e.to_string()))?;
    let ckpt = model.checkpoint().expect("opened from a checkpoint");
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::file(out_dir, format!("cannot create: {e}")))?;

    // Optimize, sharing the window memo so identical windows across graphs saturate once.
    let mut graphs = model.graphs().clone();
    let cost = Target::by_name("cpu").expect("cpu is a target");
    let mut memo = Memo::default();
    for (i, name) in fmt::GRAPH_NAMES.iter().enumerate() {
        progress("optimize", i, fmt::GRAPH_NAMES.len());
        let g = graphs.get_mut(name).expect("a graph of ModelGraphs");
        let (opt, _) = optimize_graph_with(g, &cost, &Budget::default(), &mut memo).map_err(|e| err(e.to_string()))?;
        *g = opt;
    }
    progress("optimize", fmt::GRAPH_NAMES.len(), fmt::GRAPH_NAMES.len());

    // Plan every graph, then evaluate each distinct fold once and store what the plan reads.
    let weights = crate::model::CheckpointWeights(ckpt);
    let mut writer = WeightsWriter::create(&out_dir.join(fmt::WEIGHTS))?;
    let mut plan = Plan::default();
    let mut report = CompileReport::default();
    let mut stored: HashMap<String, String> = HashMap::new(); // fold key + form → tensor name
    let total_folds: usize = graphs.all().iter().map(|g| g.nodes.iter().filter(|n| n.op == Op::Fold).count()).sum();
    let mut done = 0;
    // The KV caches are the engine's when both graphs that use them let it keep them all.
    let held = holds_caches(&graphs.prefill) && holds_caches(&graphs.decode);
    for name in fmt::GRAPH_NAMES {
        let g = graphs.get(name).expect("a graph of ModelGraphs");
        let (claims, skip) = claims_for(g, held);
        let mut gp = GraphPlan::default();
        let mut keys: HashMap<usize, String> = HashMap::new();
        // Stores (once across graphs) the value of fold `fold` in one form; its tensor name.
        let mut store_fold = |fold: usize, packed: bool, writer: &mut WeightsWriter, plan: &mut Plan, report: &mut CompileReport| {
            let key = keys.entry(fold).or_insert_with(|| fold_key(g, NodeId(fold as u32))).clone();
            let form = if packed { "packed" } else { "raw" };
            if let Some(t) = stored.get(&format!("{form} {key}")) {
                return Ok::<_, EngineError>(t.clone());
            }
            let value = eval_fold(g, fold, &weights)?;
            let tname = format!("{form}{}", stored.len());
            let entry = if packed { store_packed(writer, &value, report)? } else { store_raw(writer, &value, report)? };
            plan.tensors.insert(tname.clone(), entry);
            stored.insert(format!("{form} {key}"), tname.clone());
            Ok(tname)
        };
        for (i, c) in claims.iter().enumerate() {
            let Some(want) = c else { continue };
            match want {
                Want::Matmul => {
                    let tensor = store_fold(g.nodes[i].inputs[1].index(), true, &mut writer, &mut plan, &mut report)?;
                    gp.claims.push(Claim::Matmul { node: i, tensor });
                }
                Want::Fold => {
                    if !skip[i] {
                        let tensor = store_fold(i, false, &mut writer, &mut plan, &mut report)?;
                        gp.claims.push(Claim::Fold { node: i, tensor });
                    } // else only packed readers: its raw value is never needed
                    done += 1;
                    progress("fold+pack weights", done, total_folds);
                }
                Want::Attention => gp.claims.push(Claim::Attention { node: i }),
                Want::CacheAppend => gp.claims.push(Claim::CacheAppend { node: i }),
                Want::Gather if skip[i] => {}
                Want::Gather => {
                    // A tied table is read from the LM head's stored weight, so it is stored once.
                    let claim = match tied_matmul(g, i) {
                        Some(m) => {
                            let tensor = store_fold(g.nodes[m].inputs[1].index(), true, &mut writer, &mut plan, &mut report)?;
                            Claim::Gather { node: i, tensor, transposed: true }
                        }
                        None => {
                            let Op::Weight { name } = &g.nodes[g.nodes[i].inputs[0].index()].op else { unreachable!("gather_claimable") };
                            store_weight(&mut writer, &mut plan, ckpt, name, &mut report)?;
                            Claim::Gather { node: i, tensor: name.clone(), transposed: false }
                        }
                    };
                    gp.claims.push(claim);
                }
            }
        }
        for i in (0..g.nodes.len()).filter(|&i| !skip[i] && claims[i].is_none()) {
            if let Some(desc) = kernel_desc(g, i) {
                let kernel = plan.kernels.iter().position(|k| *k == desc).unwrap_or_else(|| {
                    plan.kernels.push(desc);
                    plan.kernels.len() - 1
                });
                gp.claims.push(Claim::Kernel { node: i, kernel });
            }
        }
        for (i, n) in g.nodes.iter().enumerate() {
            if let (Op::Weight { name }, false) = (&n.op, skip[i]) {
                store_weight(&mut writer, &mut plan, ckpt, name, &mut report)?;
                gp.weights.push(name.clone());
            }
        }
        plan.graphs.insert(name.to_string(), gp);
    }
    writer.finish()?;
    progress("fold+pack weights", total_folds, total_folds);

    progress("codegen", 0, 1);
    // The fused ops' native code, ahead of time: one object the loader only relocates.
    let mut cpu_features = Vec::new();
    if !plan.kernels.is_empty() {
        let specs: Vec<_> = plan.kernels.iter().map(|k| k.spec()).collect();
        let obj = codegen::compile_kernels(&specs).map_err(|e| err(format!("codegen: {e}")))?;
        write(out_dir, fmt::KERNELS, &obj.bytes)?;
        cpu_features = fmt::codegen_features();
    } else {
        // A stale object from an earlier compile into the same directory is not this engine's.
        let _ = std::fs::remove_file(out_dir.join(fmt::KERNELS));
    }
    report.kernels = plan.kernels.len();
    progress("codegen", 1, 1);

    progress("write", 0, 1);
    let text: String = graphs.all().iter().map(|g| format!("{g}\n")).collect();
    write(out_dir, fmt::GRAPHS, text.as_bytes())?;
    write(out_dir, fmt::PLAN, serde_json::to_string_pretty(&plan).expect("plan serializes").as_bytes())?;
    let mut files = BTreeMap::new();
    for name in fmt::COPIED {
        let src = model_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out_dir.join(name)).map_err(|e| EngineError::file(&src, format!("cannot copy: {e}")))?;
        }
    }
    for name in [fmt::GRAPHS, fmt::PLAN, fmt::WEIGHTS, fmt::KERNELS].into_iter().chain(fmt::COPIED) {
        let path = out_dir.join(name);
        if path.is_file() {
            files.insert(name.to_string(), sha256_file(&path)?);
        }
    }
    report.weights_bytes = files[fmt::WEIGHTS].bytes;
    let mut source_files = BTreeMap::new();
    for f in ckpt.files() {
        let file_name = f.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        source_files.insert(file_name, sha256_file(f)?);
    }
    let index = model_dir.join("model.safetensors.index.json");
    if index.is_file() {
        source_files.insert("model.safetensors.index.json".into(), sha256_file(&index)?);
    }
    let manifest = Manifest {
        format_version: fmt::FORMAT_VERSION,
        target: target.to_string(),
        cpu_features,
        cpu_features_optional: fmt::optional_features(),
        vl3c_version: env!("CARGO_PKG_VERSION").to_string(),
        source: Source { config_sha256: sha256_file(&model_dir.join("config.json"))?.sha256, files: source_files },
        files,
    };
    write(out_dir, fmt::MANIFEST, serde_json::to_string_pretty(&manifest).expect("manifest serializes").as_bytes())?;
    progress("write", 1, 1);
    Ok(report)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileEntry, EngineError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| EngineError::file(&path, format!("cannot write: {e}")))?;
    Ok(FileEntry { bytes: bytes.len() as u64, sha256: fmt::sha256_hex(bytes) })
}



/// The value of fold node `fold`: its (weight-only) ancestors copied into a graph of their own
/// and run on the reference executor.
fn eval_fold(g: &Graph, fold: usize, weights: &crate::model::CheckpointWeights) -> Result<Tensor, EngineError> {
    let mut needed = vec![false; fold + 1];
    needed[fold] = true;
    for i in (0..=fold).rev() {
        if needed[i] {
            for inp in &g.nodes[i].inputs {
                needed[inp.index()] = true;
            }
        }
    }
    let mut sub = Graph::new(format!("{}.fold{fold}", g.name));
    sub.symbols = g.symbols.clone();
    let mut map = vec![NodeId(u32::MAX); fold + 1];
    for i in (0..=fold).filter(|&i| needed[i]) {
        let mut node = g.nodes[i].clone();
        if matches!(node.op, Op::Input { .. } | Op::CacheRead { .. }) {
            return Err(err(format!("{}: fold %{fold} reads a runtime value", g.name)));
        }
        node.inputs = node.inputs.iter().map(|x| map[x.index()]).collect();
        map[i] = NodeId(sub.nodes.len() as u32);
        sub.nodes.push(node);
    }
    sub.set_output("value", map[fold]);
    let mut out = execute(&sub, &HashMap::new(), weights, &HashMap::new()).map_err(|e| err(format!("{}: evaluating fold %{fold}: {e}", g.name)))?;
    Ok(out.outputs.remove("value").expect("the output was set"))
}

/// A checkpoint weight, stored raw under its own name (once).
fn store_weight(
    w: &mut WeightsWriter,
    plan: &mut Plan,
    ckpt: &vl3c_frontends::Checkpoint,
    name: &str,
    report: &mut CompileReport,
) -> Result<(), EngineError> {
    if !plan.tensors.contains_key(name) {
        let t = ckpt.tensor(name).ok_or_else(|| err(format!("weight `{name}` is not in the checkpoint")))?;
        let e = w.push(t.bytes, &t.dtype.to_string(), t.shape.to_vec(), TensorLayout::Raw)?;
        plan.tensors.insert(name.to_string(), e);
        report.raw_weights += 1;
    }
    Ok(())
}

fn store_raw(w: &mut WeightsWriter, t: &Tensor, report: &mut CompileReport) -> Result<TensorEntry, EngineError> {
    report.folds_raw += 1;
    w.push(t.raw_bytes(), &t.dtype().to_string(), t.shape.clone(), TensorLayout::Raw)
}

/// A matmul weight `[k, n]`: bf16 panels when every value is a bf16 (exact, half the bytes,
/// the bf16 kernels), else f32 `[k, n]` as is (f32 checkpoints keep full precision).
fn store_packed(w: &mut WeightsWriter, t: &Tensor, report: &mut CompileReport) -> Result<TensorEntry, EngineError> {
    let [k, n] = t.shape[..] else { return Err(err(format!("matmul weight has shape {:?}, not [k, n]", t.shape))) };
    let v = t.as_f32();
    let exact = v.iter().all(|&x| bf16::from_f32(x).to_f32().to_bits() == x.to_bits());
    if !exact {
        report.packed_f32 += 1;
        let bytes: &[u8] = bytemuck::cast_slice(&v);
        return w.push(bytes, "f32", vec![k, n], TensorLayout::Raw);
    }
    report.packed_bf16 += 1;
    let mut wt = vec![bf16::ZERO; n * k];
    for i in 0..k {
        for j in 0..n {
            wt[j * k + i] = bf16::from_f32(v[i * n + j]);
        }
    }
    let p = pack(&wt, n, k);
    w.push(p.as_bytes(), "f32", vec![k, n], TensorLayout::PackedBf16 { n, k })
}
