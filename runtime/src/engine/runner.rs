//! Runs an engine's graphs: the reference executor's binding, checks and memory management,
//! with the engine claiming (through [`Accelerate`]) the nodes its plan lists — folds read from
//! `weights.bin`, matmuls on pre-laid-out weights, generated kernels, embedding lookups read in
//! place, attention on the attention kernel, and cache appends into the engine's own KV cache.

use super::attention;
use super::claims::{self, Claimed, Kind};
use super::kernels::Kernels;
use super::kv::{CacheSpec, KvStore};
use super::weights::Weights;
use crate::exec::{
    execute_for, execute_with, Accelerate, CacheSource, Computed, ExecError, Operands, Outputs,
    Tensor, WeightSource, WeightView,
};
use crate::model::{GraphRunner, NamedTensors};
use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use vl3c_cpu::attention::{Precision, View};
use vl3c_cpu::elementwise;
use vl3c_cpu::plan::{AppendRows, AttentionOperand, Claim, Plan};
use vl3c_cpu::GemmMode;
use vl3c_engine::{TensorEntry, TensorLayout};
use vl3c_frontends::lower::ModelGraphs;
use vl3c_ir::{DType, Graph, NodeId, Op};

pub(crate) struct Runner {
    /// `weights.bin`, in memory; every tensor is a view into it.
    map: Arc<Weights>,
    plan: Plan,
    /// Per graph name: claimed node → what computes it and what it reads.
    claims: HashMap<String, HashMap<usize, Claimed>>,
    threads: usize,
    kernels: Option<Kernels>,
    /// Arithmetic of the bf16 GEMMs, shared with `Engine::set_gemm_mode` (0 auto, 1 exact, 2 bf16 dot, 3 AMX).
    mode: Arc<AtomicU8>,
    /// Whether every matmul weight is stored as packed bf16 (a bf16 checkpoint): only then may
    /// attention round to bf16 (see [`Runner::attention_precision`]).
    bf16_weights: bool,
    /// The KV caches the engine keeps, when its plan claims the appends.
    kv_specs: Option<Vec<CacheSpec>>,
    max_context: usize,
}

impl Runner {
    /// Checks every claim against the graphs (see `claims.rs`); a claim that does not fit is
    /// an error naming it.
    pub(crate) fn new(
        map: Arc<Weights>,
        plan: Plan,
        graphs: &ModelGraphs,
        threads: usize,
        kernels: Option<Kernels>,
        mode: Arc<AtomicU8>,
        max_context: usize,
    ) -> Result<Runner, String> {
        let held = kv_held(&plan, graphs)?;
        let mut claims = HashMap::new();
        for g in graphs.all() {
            let gp = plan
                .graphs
                .get(&g.name)
                .ok_or_else(|| format!("has no plan for graph `{}`", g.name))?;
            claims::check_raw_weights(g, &plan, &gp.weights)?;
            let mut by_node = HashMap::new();
            for c in &gp.claims {
                let (node, claimed) = claims::check(g, &plan, c, held)?;
                if by_node.insert(node, claimed).is_some() {
                    return Err(format!("graph `{}` claims %{node} twice", g.name));
                }
            }
            claims::check_held_caches(g, &by_node)?;
            claims.insert(g.name.clone(), by_node);
        }
        // Caches attention reads as keys are kept transposed.
        let keys: Vec<String> = claims
            .values()
            .flat_map(|c: &HashMap<usize, Claimed>| c.values())
            .filter_map(|c| match &c.kind {
                Kind::Attention(a) => match &a.k {
                    AttentionOperand::Cache { name } => Some(name.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let kv_specs = held
            .then(|| cache_specs(&graphs.decode, &keys))
            .transpose()?;
        let layouts: Vec<&TensorLayout> = claims
            .values()
            .flat_map(|c| c.values())
            .filter_map(|c| match &c.kind {
                Kind::Matmul(e) => Some(&e.layout),
                _ => None,
            })
            .collect();
        let bf16_weights = !layouts.is_empty()
            && layouts
                .iter()
                .all(|l| matches!(l, TensorLayout::PackedBf16 { .. }));
        Ok(Runner {
            map,
            plan,
            claims,
            threads: threads.max(1),
            kernels,
            mode,
            bf16_weights,
            kv_specs,
            max_context,
        })
    }

    fn bytes(&self, e: &TensorEntry) -> &[u8] {
        self.map.bytes(e)
    }

    fn gemm_mode(&self) -> GemmMode {
        match self.mode.load(Ordering::Relaxed) {
            1 => GemmMode::Exact,
            2 => GemmMode::Bf16Dot,
            3 => GemmMode::Amx,
            _ => GemmMode::Auto,
        }
    }

    /// The arithmetic of attention's products, following the GEMMs': bf16 products only for a
    /// bf16 checkpoint (an f32 one keeps the reference's f32 arithmetic whatever the mode), and
    /// there in the modes that round the GEMMs' activations to bf16 (`Auto` does where it picks
    /// AMX or `vdpbf16ps`, and not where it keeps exact f32 FMA).
    fn attention_precision(&self) -> Precision {
        let rounded = match self.gemm_mode() {
            GemmMode::Exact => false,
            GemmMode::Bf16Dot | GemmMode::Amx => true,
            GemmMode::Auto => GemmMode::Auto.resolve() != GemmMode::Exact,
        };
        if rounded && self.bf16_weights {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    fn execute(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &dyn CacheSource,
        kv: Option<&KvStore>,
        wanted: Option<&[&str]>,
    ) -> Result<Outputs, ExecError> {
        let empty = HashMap::new();
        let claims = self.claims.get(&graph.name).unwrap_or(&empty);
        let accel = Accel {
            runner: self,
            claims,
            kv,
        };
        match wanted {
            None => execute_with(graph, inputs, self, caches, &accel),
            Some(w) => execute_for(graph, inputs, self, caches, &accel, w),
        }
    }
}

/// Whether the plan has the engine keep the KV caches: prefill and decode claim every cache
/// append, or none of them.
fn kv_held(plan: &Plan, graphs: &ModelGraphs) -> Result<bool, String> {
    let mut seen = Vec::new();
    for g in graphs.all() {
        let appends = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::CacheAppend { .. }))
            .count();
        let claimed = plan.graphs.get(&g.name).map_or(0, |gp| {
            gp.claims
                .iter()
                .filter(|c| matches!(c, Claim::CacheAppend { .. }))
                .count()
        });
        if appends > 0 {
            if claimed != 0 && claimed != appends {
                return Err(format!(
                    "graph `{}` claims {claimed} of its {appends} cache appends",
                    g.name
                ));
            }
            seen.push(claimed > 0);
        } else if claimed > 0 {
            return Err(format!(
                "graph `{}` claims cache appends it does not have",
                g.name
            ));
        }
    }
    if seen.iter().any(|&s| s != seen[0]) {
        return Err("prefill and decode disagree on who keeps the KV cache".into());
    }
    Ok(seen.first().copied().unwrap_or(false))
}

/// Every cache the decode graph reads; `keys`: the ones attention reads as keys.
fn cache_specs(g: &Graph, keys: &[String]) -> Result<Vec<CacheSpec>, String> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::CacheRead { name } => Some((name, &n.ty)),
            _ => None,
        })
        .map(|(name, ty)| {
            match (
                ty.rank(),
                ty.shape.first().and_then(|d| d.as_const()),
                ty.shape.last().and_then(|d| d.as_const()),
            ) {
                (3, Some(h), Some(d)) => Ok(CacheSpec {
                    name: name.clone(),
                    heads: h as usize,
                    d: d as usize,
                    keys: keys.contains(name),
                }),
                _ => Err(format!(
                    "cache `{name}` is {ty}, not [heads, len, d] with constant heads and d"
                )),
            }
        })
        .collect()
}

impl WeightSource for Runner {
    /// The raw checkpoint weights the graphs still read, straight from the map (no copy).
    fn weight(&self, name: &str) -> Option<WeightView<'_>> {
        let e = self
            .plan
            .tensors
            .get(name)
            .filter(|e| e.layout == TensorLayout::Raw)?;
        Some(WeightView {
            dtype: DType::from_str(&e.dtype).ok()?,
            shape: e.shape.clone(),
            bytes: self.bytes(e),
        })
    }
}

impl GraphRunner for Runner {
    fn run(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
    ) -> Result<Outputs, ExecError> {
        self.execute(graph, inputs, caches, None, None)
    }

    fn run_for(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        caches: &NamedTensors,
        wanted: &[&str],
    ) -> Result<Outputs, ExecError> {
        self.execute(graph, inputs, caches, None, Some(wanted))
    }

    fn new_kv(&self) -> Option<Box<dyn Any + Send>> {
        let specs = self.kv_specs.as_ref()?;
        Some(Box::new(KvStore::new(specs, self.max_context)))
    }

    fn run_kv(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        kv: &mut (dyn Any + Send),
    ) -> Result<Outputs, ExecError> {
        self.run_kv_wanted(graph, inputs, kv, None)
    }

    fn run_kv_for(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        kv: &mut (dyn Any + Send),
        wanted: &[&str],
    ) -> Result<Outputs, ExecError> {
        self.run_kv_wanted(graph, inputs, kv, Some(wanted))
    }
}

impl Runner {
    fn run_kv_wanted(
        &self,
        graph: &Graph,
        inputs: &NamedTensors,
        kv: &mut (dyn Any + Send),
        wanted: Option<&[&str]>,
    ) -> Result<Outputs, ExecError> {
        let store = kv
            .downcast_ref::<KvStore>()
            .ok_or_else(|| ExecError::Cache {
                name: "*".into(),
                message: "is not this engine's KV cache".into(),
            })?;
        let lens = store.lens();
        let out = self.execute(graph, inputs, store, Some(store), wanted);
        if out.is_err() {
            store.restore(&lens);
        }
        out
    }
}

struct Accel<'r> {
    runner: &'r Runner,
    claims: &'r HashMap<usize, Claimed>,
    kv: Option<&'r KvStore>,
}

impl Accelerate for Accel<'_> {
    fn claim(&self, _: &Graph, node: usize) -> Option<Vec<NodeId>> {
        self.claims.get(&node).map(|c| c.reads.clone())
    }

    fn label(&self, node: usize) -> &'static str {
        match self.claims.get(&node).map(|c| &c.kind) {
            Some(Kind::Fold(_)) => "fold:",
            Some(Kind::Matmul(_)) => "matmul:",
            Some(Kind::Kernel(_)) => "kernel:",
            Some(Kind::Gather(..)) => "gather:",
            Some(Kind::Attention(_)) => "attention:",
            Some(Kind::CacheAppend(..)) => "kv:",
            Some(Kind::SwiGluColumns(..)) => "swiglu:",
            None => "claimed",
        }
    }

    fn compute(&self, graph: &Graph, node: usize, ops: &dyn Operands) -> Result<Computed, String> {
        let arity = graph.nodes[node].inputs.len();
        let err = |e: ExecError| e.to_string();
        let r = self.runner;
        Ok(Computed::Value(match &self.claims[&node].kind {
            Kind::Fold(e) => {
                let dtype =
                    DType::from_str(&e.dtype).map_err(|_| format!("stored dtype `{}`", e.dtype))?;
                Tensor::from_bytes(dtype, &e.shape, r.bytes(e))?
            }
            Kind::Kernel(k) => {
                let kernels = r.kernels.as_ref().ok_or("the engine has no kernels.o")?;
                let ops = (0..arity)
                    .map(|p| ops.get(p))
                    .collect::<Result<Vec<Cow<Tensor>>, _>>()
                    .map_err(err)?;
                let ops: Vec<&Tensor> = ops.iter().map(|t| t.as_ref()).collect();
                kernels.run(*k, &ops, r.threads)?
            }
            Kind::Gather(e, transposed) => {
                let ids = ops.get(1).map_err(err)?;
                super::gather::rows(r.bytes(e), e, *transposed, &ids, graph.nodes[node].ty.dtype)?
            }
            Kind::Attention(p) => {
                attention::compute(graph, p, ops, self.kv, r.threads, r.attention_precision())?
            }
            Kind::CacheAppend(name, src) => {
                let kv = self
                    .kv
                    .ok_or("the engine keeps this KV cache; run the graph with it")?;
                return Ok(Computed::Held(match src {
                    AppendRows::Operand => kv.append(name, ops.get(1).map_err(err)?.as_ref())?,
                    AppendRows::Columns {
                        node: x,
                        offset,
                        rope,
                    } => {
                        let ty = &graph.nodes[node].ty;
                        let (h, d) = (
                            ty.shape[0].as_const().unwrap_or(0) as usize,
                            ty.shape[2].as_const().unwrap_or(0) as usize,
                        );
                        let xt = ops.node(NodeId(*x as u32)).map_err(err)?;
                        let [len, width] = xt.shape[..] else {
                            return Err(format!("projection {:?} is not 2-D", xt.shape));
                        };
                        let data = f32s(&xt)?.get(*offset..).ok_or("projection too narrow")?;
                        let view = View {
                            data,
                            heads: h,
                            len,
                            d,
                            head_stride: d,
                            row_stride: width,
                        };
                        let tables = match rope {
                            Some([c, s]) => Some((
                                ops.node(NodeId(*c as u32)).map_err(err)?,
                                ops.node(NodeId(*s as u32)).map_err(err)?,
                            )),
                            None => None,
                        };
                        let rope = match &tables {
                            Some((c, s)) => Some((f32s(c)?, f32s(s)?)),
                            None => None,
                        };
                        kv.append_view(name, view, rope)?
                    }
                }));
            }
            Kind::SwiGluColumns(x, go, uo) => {
                let xt = ops.node(*x).map_err(err)?;
                let [rows, width] = xt.shape[..] else {
                    return Err(format!("gate/up {:?} is not 2-D", xt.shape));
                };
                let f = graph.nodes[node].ty.shape[1].as_const().unwrap_or(0) as usize;
                let xv = f32s(&xt)?;
                if go.max(uo) + f > width {
                    return Err(format!("gate/up columns run past {width}"));
                }
                let mut out = vec![0f32; rows * f];
                elementwise::swiglu(
                    &xv[*go..],
                    width,
                    &xv[*uo..],
                    width,
                    rows,
                    f,
                    &mut out,
                    r.threads,
                );
                Tensor::f32(vec![rows, f], out)
            }
            Kind::Matmul(e) => {
                let a = ops.get(0).map_err(err)?;
                let epilogue = (2..arity)
                    .map(|p| ops.get(p))
                    .collect::<Result<Vec<Cow<Tensor>>, _>>()
                    .map_err(err)?;
                let epilogue: Vec<&Tensor> = epilogue.iter().map(|t| t.as_ref()).collect();
                super::matmul::matmul(&a, e, r.bytes(e), &epilogue, r.gemm_mode(), r.threads)?
            }
        }))
    }
}

fn f32s(t: &Tensor) -> Result<&[f32], String> {
    match &t.data {
        crate::exec::TensorData::F32(v) => Ok(v),
        _ => Err(format!("expected f32, got {}", t.dtype())),
    }
}
