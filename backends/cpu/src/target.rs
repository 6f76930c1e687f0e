//! The CPU target: what runs each node (`select`), the folds evaluated and matmul weights
//! packed into `weights.bin`, the fused ops' native code into `kernels.o`, and the plan that
//! records all of it.

use crate::plan::{self, Claim, GraphPlan, Plan};
use crate::select::{self, attention_claim, holds_caches, tied_matmul, Want};
use crate::{codegen, pack};
use half::bf16;
use vl3c_engine::{
    Emit, Emitted, EngineError, Target, TensorEntry, TensorLayout, TensorStore, WeightsWriter,
};
use vl3c_ir::{DType, Graph, Op};
use vl3c_reference::Tensor;

/// What the CPU target stored, for the user.
#[derive(Debug, Default, Clone)]
pub struct CpuReport {
    pub packed_bf16: usize,
    pub packed_f32: usize,
    pub folds_raw: usize,
    pub raw_weights: usize,
    pub kernels: usize,
    pub weights_bytes: u64,
}

#[derive(Default)]
pub struct CpuTarget {
    pub report: CpuReport,
}

fn err(message: impl Into<String>) -> EngineError {
    EngineError::Incompatible(message.into())
}

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn cost_model(&self) -> &'static str {
        "cpu"
    }

    fn emit(&mut self, graphs: &[&Graph], out: &mut Emit) -> Result<Emitted, EngineError> {
        let mut report = CpuReport::default();
        let mut store = TensorStore::create(out, plan::WEIGHTS)?;
        let mut plan = Plan::default();
        let total_folds: usize = graphs
            .iter()
            .map(|g| g.nodes.iter().filter(|n| n.op == Op::Fold).count())
            .sum();
        let mut done = 0;
        // The KV caches are the engine's when both graphs that use them let it keep them all.
        let by_name = |n: &str| graphs.iter().find(|g| g.name == n).copied();
        let held = match (by_name("prefill"), by_name("decode")) {
            (Some(p), Some(d)) => holds_caches(p) && holds_caches(d),
            _ => false,
        };
        for g in graphs.iter().copied() {
            let (wants, skip) = select::select(g, held);
            let mut gp = GraphPlan::default();
            // A matmul weight `[k, n]`, packed for the kernels.
            let packed =
                |store: &mut TensorStore, out: &Emit, fold: usize, report: &mut CpuReport| {
                    store
                        .fold_with(out, g, fold, "packed", |w, out| {
                            match bf16_weight_rows(g, fold, out) {
                                Some((parts, k)) => {
                                    report.packed_bf16 += 1;
                                    store_bf16_rows(w, out, &parts, k)
                                }
                                None => store_packed(w, &out.fold(g, fold)?, report),
                            }
                        })
                        .map(|(name, _)| name)
                };
            for (i, want) in wants.iter().enumerate() {
                let Some(want) = want else { continue };
                if *want == Want::Fold {
                    if !skip[i] {
                        let (tensor, new) = store.raw_fold(out, g, i)?;
                        report.folds_raw += usize::from(new);
                        gp.claims.push(Claim::Fold { node: i, tensor });
                    } // else only packed readers: its raw value is never needed
                    done += 1;
                    out.progress("fold+pack weights", done, total_folds);
                    continue;
                }
                if skip[i] {
                    continue;
                }
                let claim = match want {
                    Want::Fold => unreachable!("handled above"),
                    Want::Matmul => Claim::Matmul {
                        node: i,
                        tensor: packed(&mut store, out, g.nodes[i].inputs[1].index(), &mut report)?,
                    },
                    Want::Attention(p) => attention_claim(i, p),
                    Want::CacheAppend(rows) => Claim::CacheAppend {
                        node: i,
                        rows: rows.clone(),
                    },
                    Want::SwiGluColumns { matrix, gate, up } => Claim::SwiGluColumns {
                        node: i,
                        matrix: *matrix,
                        gate: *gate,
                        up: *up,
                    },
                    Want::Kernel(desc) => {
                        let kernel =
                            plan.kernels
                                .iter()
                                .position(|k| k == desc)
                                .unwrap_or_else(|| {
                                    plan.kernels.push(*desc);
                                    plan.kernels.len() - 1
                                });
                        Claim::Kernel { node: i, kernel }
                    }
                    // A tied table is read from the LM head's stored weight, so it is stored once.
                    Want::Gather => match tied_matmul(g, i) {
                        Some(m) => Claim::Gather {
                            node: i,
                            tensor: packed(
                                &mut store,
                                out,
                                g.nodes[m].inputs[1].index(),
                                &mut report,
                            )?,
                            transposed: true,
                        },
                        None => {
                            let Op::Weight { name } = &g.nodes[g.nodes[i].inputs[0].index()].op
                            else {
                                unreachable!("gather_claimable")
                            };
                            report.raw_weights += usize::from(store.weight(out, name)?);
                            Claim::Gather {
                                node: i,
                                tensor: name.clone(),
                                transposed: false,
                            }
                        }
                    },
                };
                gp.claims.push(claim);
            }
            for (i, n) in g.nodes.iter().enumerate() {
                if let (Op::Weight { name }, false) = (&n.op, skip[i]) {
                    report.raw_weights += usize::from(store.weight(out, name)?);
                    gp.weights.push(name.clone());
                }
            }
            plan.graphs.insert(g.name.clone(), gp);
        }
        plan.tensors = store.finish()?;
        out.progress("fold+pack weights", total_folds, total_folds);

        out.progress("codegen", 0, 1);
        // The fused ops' native code, ahead of time: one object the loader only relocates.
        let mut cpu_features = Vec::new();
        if !plan.kernels.is_empty() {
            let specs: Vec<_> = plan.kernels.iter().map(|k| k.spec()).collect();
            let obj = codegen::compile_kernels(&specs).map_err(|e| err(format!("codegen: {e}")))?;
            out.write(plan::KERNELS, &obj.bytes)?;
            cpu_features = plan::codegen_features();
        } else {
            out.remove_stale(plan::KERNELS);
        }
        report.kernels = plan.kernels.len();
        out.progress("codegen", 1, 1);
        out.write(
            plan::PLAN,
            serde_json::to_string_pretty(&plan)
                .expect("plan serializes")
                .as_bytes(),
        )?;
        report.weights_bytes = std::fs::metadata(out.dir().join(plan::WEIGHTS))
            .map(|m| m.len())
            .unwrap_or(0);
        let summary = format!(
            "{} bf16-packed and {} f32 matmul weights, {} folded tensors, {} raw weights, {} kernels, weights.bin {:.1} MiB",
            report.packed_bf16,
            report.packed_f32,
            report.folds_raw,
            report.raw_weights,
            report.kernels,
            report.weights_bytes as f64 / (1 << 20) as f64
        );
        self.report = report;
        Ok(Emitted {
            cpu_features,
            cpu_features_optional: plan::optional_features(),
            summary,
            warnings: Vec::new(),
        })
    }
}

/// The checkpoint weights whose stacked rows are fold `fold`'s value transposed, and `k`,
/// where the fold is a matmul weight built the usual way (`transpose(w)` or
/// `transpose(cast(w))` to f32, or several of them
/// concatenated along columns: a merged projection) from 2-D bf16 weights: then the packed
/// form is those weights' rows as stored, with no fold to evaluate (no f32 copy, no transpose).
fn bf16_weight_rows(g: &Graph, fold: usize, out: &Emit) -> Option<(Vec<String>, usize)> {
    fn collect(g: &Graph, id: usize, names: &mut Vec<String>) -> Option<()> {
        let node = &g.nodes[id];
        match &node.op {
            Op::Transpose { perm } if perm == &[1, 0] => {
                let mut src = &g.nodes[node.inputs[0].index()];
                // A bf16 → f32 cast is exact: packing to bf16 gives the stored bits back.
                if src.op == (Op::Cast { to: DType::F32 }) {
                    src = &g.nodes[src.inputs[0].index()];
                }
                let Op::Weight { name } = &src.op else {
                    return None;
                };
                (src.ty.dtype == DType::BF16 && src.ty.rank() == 2)
                    .then(|| names.push(name.clone()))
            }
            Op::Concat { axis: 1 } => node
                .inputs
                .iter()
                .try_for_each(|x| collect(g, x.index(), names)),
            _ => None,
        }
    }
    let node = &g.nodes[fold];
    if node.op != Op::Fold || node.ty.rank() != 2 {
        return None;
    }
    let mut names = Vec::new();
    collect(g, node.inputs[0].index(), &mut names)?;
    let k = node.ty.shape[0].as_const()? as usize;
    // The checkpoint must hold them as the graph declares (bf16 [n_i, k]).
    names
        .iter()
        .all(|name| {
            out.weight(name)
                .is_ok_and(|w| w.dtype == DType::BF16 && w.shape.len() == 2 && w.shape[1] == k)
        })
        .then_some((names, k))
}

fn store_bf16_rows(
    w: &mut WeightsWriter,
    out: &Emit,
    parts: &[String],
    k: usize,
) -> Result<TensorEntry, EngineError> {
    let views = parts
        .iter()
        .map(|name| out.weight(name))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: Vec<&[u8]> = views.iter().map(|v| v.bytes).collect();
    let p = pack::pack_bf16_rows(&bytes, k);
    let n = p.n();
    w.push(
        p.as_bytes(),
        "f32",
        vec![k, n],
        TensorLayout::PackedBf16 { n, k },
    )
}

/// A matmul weight `[k, n]`: bf16 panels when every value is a bf16 (exact, half the bytes,
/// the bf16 kernels), else f32 `[k, n]` as is (f32 checkpoints keep full precision).
fn store_packed(
    w: &mut WeightsWriter,
    t: &Tensor,
    report: &mut CpuReport,
) -> Result<TensorEntry, EngineError> {
    let [k, n] = t.shape[..] else {
        return Err(err(format!(
            "matmul weight has shape {:?}, not [k, n]",
            t.shape
        )));
    };
    let v = t.as_f32();
    let exact = v
        .iter()
        .all(|&x| bf16::from_f32(x).to_f32().to_bits() == x.to_bits());
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
    w.push(
        p.as_bytes(),
        "f32",
        vec![k, n],
        TensorLayout::PackedBf16 { n, k },
    )
}
