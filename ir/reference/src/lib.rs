//! The reference executor: runs any verified graph on the CPU, one node at a time, in f32
//! arithmetic. It defines the semantics every backend is tested against, so each op is a plain
//! loop (matmul excepted, which goes through `gemm`); see `op.rs` in vl3c-ir for the op set.
//!
//! Memory stays bounded by the live set: weights are borrowed from the caller and decoded only
//! when a node reads them (a `weight → cast` pair decodes straight into the cast's dtype), and
//! every value is dropped right after its last reader.

mod accel;
mod bind;
mod elementwise;
mod erf;
mod fused;
mod index;
/// The f32 gemm and its operand layouts, shared with the CPU engine's matmul so both block alike.
pub mod matmul;
pub mod profile;
mod prune;
mod reduce;
/// Broadcast and strided-walk helpers, shared with the CPU engine's kernels.
pub mod shape;
mod tensor;

pub use accel::{skipped, skipped_for, Accelerate, Computed, Operands, Reference};
pub use prune::diff_frame_prune;
pub use tensor::{dtype_from_safetensors, dtype_to_safetensors, Tensor, TensorData};

use bind::{Binder, OutOfBounds};
use std::borrow::Cow;
use std::collections::HashMap;
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// A stored tensor: little-endian bytes, borrowed (from a checkpoint's memory map, or an engine's
/// weights read at load).
#[derive(Clone, Debug)]
pub struct WeightView<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

/// Where `weight` nodes find their data.
pub trait WeightSource {
    fn weight(&self, name: &str) -> Option<WeightView<'_>>;
}

/// In-memory weights, for tests. The bytes are the vectors' own memory, which is the
/// little-endian encoding on every target this runs on.
impl WeightSource for HashMap<String, Tensor> {
    fn weight(&self, name: &str) -> Option<WeightView<'_>> {
        let t = self.get(name)?;
        Some(WeightView {
            dtype: t.dtype(),
            shape: t.shape.clone(),
            bytes: t.raw_bytes(),
        })
    }
}

/// One safetensors file. Tensors of dtypes the IR lacks read as missing.
impl WeightSource for safetensors::SafeTensors<'_> {
    fn weight(&self, name: &str) -> Option<WeightView<'_>> {
        let v = self.tensor(name).ok()?;
        let dtype = dtype_from_safetensors(v.dtype()).ok()?;
        Some(WeightView {
            dtype,
            shape: v.shape().to_vec(),
            bytes: v.data(),
        })
    }
}

/// Where `cache_read` nodes find their caches.
pub trait CacheSource {
    /// The cache's dtype and shape, when there is one of that name.
    fn shape(&self, name: &str) -> Option<(DType, Vec<usize>)>;
    /// Its values; `None` when a backend keeps them (only the backend's claims read them).
    fn tensor(&self, name: &str) -> Option<&Tensor>;
}

/// Caches as tensors: what `cache_append` returns in [`Outputs::caches`], passed back in.
impl CacheSource for HashMap<String, Tensor> {
    fn shape(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.get(name).map(|t| (t.dtype(), t.shape.clone()))
    }
    fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.get(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("input `{name}` {message}")]
    Input { name: String, message: String },
    #[error("weight `{name}` {message}")]
    Weight { name: String, message: String },
    #[error("cache `{name}` {message}")]
    Cache { name: String, message: String },
    #[error(
        "symbol `{symbol}` = {value} (bound by {bound_by}) is outside its bounds [{min}, {max}]"
    )]
    SymbolBounds {
        symbol: String,
        value: i64,
        min: i64,
        max: i64,
        bound_by: String,
    },
    #[error("{node} ({op}): {message}")]
    Node {
        node: NodeId,
        op: &'static str,
        message: String,
    },
    #[error("output `{name}`: {message}")]
    Output { name: String, message: String },
    /// A backend running the graph failed outside any one node (a device, its memory).
    #[error("{0}")]
    Backend(String),
}

impl ExecError {
    fn bounds(e: OutOfBounds, bound_by: String) -> ExecError {
        ExecError::SymbolBounds {
            symbol: e.symbol,
            value: e.value,
            min: e.min,
            max: e.max,
            bound_by,
        }
    }
}

#[derive(Debug)]
pub struct Outputs {
    /// The graph's outputs by name.
    pub outputs: HashMap<String, Tensor>,
    /// The state of every cache a `cache_append` wrote, by cache name (not those a backend
    /// keeps itself).
    pub caches: HashMap<String, Tensor>,
    /// Every symbol's value in this run.
    pub symbols: HashMap<String, i64>,
    /// The most bytes of executor-owned values alive at once (intermediates, decoded weights,
    /// the node being computed); inputs, caches and checkpoint bytes are the caller's.
    pub peak_bytes: usize,
}

/// Runs `graph`. `inputs` and `caches` are matched by name against the graph's `input` and
/// `cache_read` nodes; their shapes bind the graph's symbols.
pub fn execute(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightSource,
    caches: &HashMap<String, Tensor>,
) -> Result<Outputs, ExecError> {
    execute_with(graph, inputs, weights, caches, &Reference)
}

/// [`execute`] with a backend that may claim nodes (see [`Accelerate`]).
pub fn execute_with(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightSource,
    caches: &dyn CacheSource,
    accel: &dyn Accelerate,
) -> Result<Outputs, ExecError> {
    execute_inner(graph, inputs, weights, caches, accel, &HashMap::new(), None)
}

/// [`execute_with`] computing only the outputs named in `wanted` (and every cache append):
/// the other outputs are absent from the result, and nodes only they read are not run.
pub fn execute_for(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightSource,
    caches: &dyn CacheSource,
    accel: &dyn Accelerate,
    wanted: &[&str],
) -> Result<Outputs, ExecError> {
    if let Some(name) = wanted
        .iter()
        .find(|w| !graph.outputs.iter().any(|(n, _)| n == *w))
    {
        return Err(ExecError::Output {
            name: name.to_string(),
            message: format!("is not an output of graph `{}`", graph.name),
        });
    }
    execute_inner(
        graph,
        inputs,
        weights,
        caches,
        accel,
        &HashMap::new(),
        Some(wanted),
    )
}

/// [`execute`] where some symbols are given rather than read off the inputs' shapes: those no
/// input binds (an `iota` of a length the caller decides, as a kernel test does).
pub fn execute_sized(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightSource,
    caches: &HashMap<String, Tensor>,
    symbols: &HashMap<String, i64>,
) -> Result<Outputs, ExecError> {
    execute_inner(graph, inputs, weights, caches, &Reference, symbols, None)
}

fn execute_inner(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    weights: &dyn WeightSource,
    caches: &dyn CacheSource,
    accel: &dyn Accelerate,
    symbols: &HashMap<String, i64>,
    wanted: Option<&[&str]>,
) -> Result<Outputs, ExecError> {
    let claims: Vec<Option<Vec<NodeId>>> = (0..graph.nodes.len())
        .map(|i| accel.claim(graph, i))
        .collect();
    let outputs: Vec<(String, NodeId)> = graph
        .outputs
        .iter()
        .filter(|(name, _)| wanted.is_none_or(|w| w.contains(&name.as_str())))
        .cloned()
        .collect();
    let skip = skipped_for(graph, &claims, &outputs);
    let sources = bind_sources(graph, inputs, caches)?;
    let mut binder = Binder::new(graph);
    bind_all(graph, &mut binder, &sources)?;
    for (name, &value) in symbols {
        binder.env.entry(name.clone()).or_insert(value);
    }
    let (last, views) = plan_lifetimes(graph, &claims);
    let mut dying = vec![Vec::new(); graph.nodes.len()];
    for (j, &l) in last.iter().enumerate() {
        if l < graph.nodes.len() {
            dying[l].push(j);
        }
    }
    let slots = sources
        .iter()
        .map(|s| match s {
            None => Slot::Empty,
            Some(Source {
                tensor: Some(t), ..
            }) => Slot::Borrowed(t),
            Some(Source { tensor: None, .. }) => Slot::Held,
        })
        .collect();
    let mut ex = Exec {
        graph,
        weights,
        binder,
        slots,
        last,
        views,
        dying,
        live: 0,
        peak: 0,
        accel,
        claims,
        skip,
        outputs,
    };
    if profile::enabled() {
        for i in 0..graph.nodes.len() {
            let t = std::time::Instant::now();
            ex.step(i)?;
            if !ex.skip[i] {
                let claim = ex.claims[i].is_some().then(|| accel.label(i));
                profile::record(
                    &graph.name,
                    graph.nodes[i].op.mnemonic(),
                    claim,
                    t.elapsed(),
                );
            }
        }
    } else {
        for i in 0..graph.nodes.len() {
            ex.step(i)?;
        }
    }
    ex.finish()
}

/// Each node's last reader (`usize::MAX`: kept to the end, as outputs and cache states are), and
/// which transposes are left as views: a swap of the last two dims read only by matmuls, which
/// reads the source through strides. A view keeps its source alive as long as itself. A claim
/// that reads an earlier node past its operands keeps that node alive until the claim.
fn plan_lifetimes(graph: &Graph, claims: &[Option<Vec<NodeId>>]) -> (Vec<usize>, Vec<bool>) {
    let mut last = graph.last_uses();
    let mut only_matmul_reads = vec![true; graph.nodes.len()];
    for (i, reads) in claims.iter().enumerate() {
        for r in reads.iter().flatten() {
            if r.index() < i && last[r.index()] != usize::MAX {
                last[r.index()] = last[r.index()].max(i);
                only_matmul_reads[r.index()] = false;
            }
        }
    }
    for (i, n) in graph.nodes.iter().enumerate() {
        if matches!(n.op, Op::CacheAppend { .. }) {
            last[i] = usize::MAX;
        }
        for (pos, inp) in n.inputs.iter().enumerate() {
            // A fused matmul reads its two factors as a matmul does; its epilogue elementwise.
            let matmul_read =
                n.op == Op::MatMul || (matches!(n.op, Op::FusedMatMul { .. }) && pos < 2);
            if !matmul_read {
                if let Some(r) = only_matmul_reads.get_mut(inp.index()) {
                    *r = false;
                }
            }
        }
    }
    let mut views = vec![false; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        let swaps_last_two = |perm: &[usize]| {
            let r = perm.len();
            r >= 2
                && perm[r - 2] == r - 1
                && perm[r - 1] == r - 2
                && perm[..r - 2].iter().enumerate().all(|(a, &b)| a == b)
        };
        if let (Op::Transpose { perm }, [src]) = (&n.op, n.inputs.as_slice()) {
            if swaps_last_two(perm)
                && only_matmul_reads[i]
                && last[i] != i
                && last[i] != usize::MAX
                && src.index() < i
            {
                views[i] = true;
                last[src.index()] = last[src.index()].max(last[i]);
            }
        }
    }
    (last, views)
}

/// An `input` or `cache_read` node with the tensor the caller gave for it (none for a cache a
/// backend keeps: then only its shape).
struct Source<'a> {
    is_cache: bool,
    name: &'a str,
    tensor: Option<&'a Tensor>,
    shape: Vec<usize>,
}

impl Source<'_> {
    fn error(&self, message: String) -> ExecError {
        let name = self.name.to_string();
        if self.is_cache {
            ExecError::Cache { name, message }
        } else {
            ExecError::Input { name, message }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} `{}`",
            if self.is_cache { "cache" } else { "input" },
            self.name
        )
    }
}

/// One entry per node: the source's tensor, checked for presence and dtype.
fn bind_sources<'a>(
    graph: &'a Graph,
    inputs: &'a HashMap<String, Tensor>,
    caches: &'a dyn CacheSource,
) -> Result<Vec<Option<Source<'a>>>, ExecError> {
    graph
        .nodes
        .iter()
        .map(|n| {
            let (is_cache, name) = match &n.op {
                Op::Input { name } => (false, name),
                Op::CacheRead { name } => (true, name),
                _ => return Ok(None),
            };
            let fail = |message: String| match is_cache {
                true => ExecError::Cache {
                    name: name.clone(),
                    message,
                },
                false => ExecError::Input {
                    name: name.clone(),
                    message,
                },
            };
            let missing = || fail(format!("is not given (the graph needs {})", n.ty));
            let (tensor, dtype, shape) = match is_cache {
                false => inputs
                    .get(name)
                    .map(|t| (Some(t), t.dtype(), t.shape.clone()))
                    .ok_or_else(missing)?,
                true => match caches.tensor(name) {
                    Some(t) => (Some(t), t.dtype(), t.shape.clone()),
                    None => caches
                        .shape(name)
                        .map(|(d, s)| (None, d, s))
                        .ok_or_else(missing)?,
                },
            };
            if dtype != n.ty.dtype {
                return Err(fail(format!(
                    "has dtype {dtype} but the graph needs {}",
                    n.ty
                )));
            }
            if let Some(t) = tensor.filter(|t| t.numel() != t.shape.iter().product::<usize>()) {
                return Err(fail(format!(
                    "holds {} elements but has shape {:?}",
                    t.numel(),
                    t.shape
                )));
            }
            Ok(Some(Source {
                is_cache,
                name,
                tensor,
                shape,
            }))
        })
        .collect()
}

/// Binds symbols from the sources' shapes and checks each source against its declared shape
/// (vl3c-ir's `Graph::symbol_values`, whose errors are re-addressed to the input or cache).
fn bind_all(
    graph: &Graph,
    binder: &mut Binder,
    sources: &[Option<Source>],
) -> Result<(), ExecError> {
    let mut given: Vec<(&str, &[usize])> = Vec::new();
    let mut seen: Vec<(bool, &str)> = Vec::new();
    for src in sources.iter().flatten() {
        if !seen.contains(&(src.is_cache, src.name)) {
            seen.push((src.is_cache, src.name));
            given.push((src.name, &src.shape));
        }
    }
    let env = graph.symbol_values(&given).map_err(|e| {
        let src = e
            .node
            .and_then(|id| sources.get(id.index()))
            .and_then(|s| s.as_ref());
        match src {
            Some(src) => {
                let prefix = format!("{} ", src.describe());
                src.error(
                    e.message
                        .strip_prefix(&prefix)
                        .unwrap_or(&e.message)
                        .to_string(),
                )
            }
            None => ExecError::Input {
                name: "?".into(),
                message: e.to_string(),
            },
        }
    })?;
    binder.env = env;
    Ok(())
}

enum Slot<'a> {
    Empty,
    Borrowed(&'a Tensor),
    Owned(Tensor),
    /// A checked weight, decoded by each reader on demand.
    Weight,
    /// The last-two-dims transpose of another node's value, not materialized.
    TransposeOf(NodeId),
    /// A value the backend keeps (see [`Computed::Held`]).
    Held,
}

struct Exec<'a> {
    graph: &'a Graph,
    weights: &'a dyn WeightSource,
    binder: Binder<'a>,
    slots: Vec<Slot<'a>>,
    /// Index of the last reader of each node; `usize::MAX` lives to the end.
    last: Vec<usize>,
    /// Transposes left as views (see `plan_lifetimes`).
    views: Vec<bool>,
    /// For each node, the values to drop once it has run.
    dying: Vec<Vec<usize>>,
    live: usize,
    peak: usize,
    accel: &'a dyn Accelerate,
    claims: Vec<Option<Vec<NodeId>>>,
    skip: Vec<bool>,
    /// The outputs asked for, of `graph.outputs`.
    outputs: Vec<(String, NodeId)>,
}

/// The operands of node `node`, read through the executor's slots.
struct SlotOperands<'e, 'a> {
    ex: &'e Exec<'a>,
    node: usize,
}

impl Operands for SlotOperands<'_, '_> {
    fn get(&self, pos: usize) -> Result<Cow<'_, Tensor>, ExecError> {
        let id = *self.ex.graph.nodes[self.node]
            .inputs
            .get(pos)
            .ok_or_else(|| self.ex.node_err(self.node, format!("has no operand {pos}")))?;
        self.ex.operand(id)
    }

    fn node(&self, id: NodeId) -> Result<Cow<'_, Tensor>, ExecError> {
        let listed = self.ex.claims[self.node]
            .as_ref()
            .is_some_and(|r| r.contains(&id));
        if !listed {
            return Err(self.ex.node_err(
                self.node,
                format!("reads {id}, which its claim does not list"),
            ));
        }
        self.ex.operand(id)
    }
}

impl<'a> Exec<'a> {
    fn node_err(&self, i: usize, message: impl Into<String>) -> ExecError {
        ExecError::Node {
            node: NodeId(i as u32),
            op: self.graph.nodes[i].op.mnemonic(),
            message: message.into(),
        }
    }

    fn weight_view(&self, i: usize) -> Result<(&str, WeightView<'a>), ExecError> {
        let Op::Weight { name } = &self.graph.nodes[i].op else {
            unreachable!("weight slot of a non-weight")
        };
        let w = self.weights.weight(name).ok_or_else(|| ExecError::Weight {
            name: name.clone(),
            message: "is not in the checkpoint".into(),
        })?;
        Ok((name, w))
    }

    /// Decodes weight node `i`, straight into f32 when `to_f32` (the fused `weight → cast`).
    fn materialize(&self, i: usize, to_f32: bool) -> Result<Tensor, ExecError> {
        let (name, w) = self.weight_view(i)?;
        let t = if to_f32 {
            Tensor::f32_from_bytes(w.dtype, &w.shape, w.bytes)
        } else {
            Tensor::from_bytes(w.dtype, &w.shape, w.bytes)
        };
        t.map_err(|message| ExecError::Weight {
            name: name.to_string(),
            message,
        })
    }

    /// Checks weight node `i` against its declared type without decoding it.
    fn check_weight(&mut self, i: usize) -> Result<(), ExecError> {
        let (name, w) = self.weight_view(i)?;
        let ty = &self.graph.nodes[i].ty;
        let fail = |message: String| ExecError::Weight {
            name: name.to_string(),
            message,
        };
        if w.dtype != ty.dtype {
            return Err(fail(format!(
                "has dtype {} but the graph needs {ty}",
                w.dtype
            )));
        }
        let n: usize = w.shape.iter().product();
        if w.bytes.len() != n * w.dtype.size_bytes() {
            return Err(fail(format!(
                "has {} bytes, not the {} of {}{:?}",
                w.bytes.len(),
                n * w.dtype.size_bytes(),
                w.dtype,
                w.shape
            )));
        }
        let name = name.to_string();
        self.binder
            .bind_from(&ty.shape, &w.shape)
            .map_err(|e| ExecError::bounds(e, format!("weight `{name}`")))?;
        if !self.binder.matches(&ty.shape, &w.shape) {
            let message = format!(
                "has shape {:?} but the graph needs {}",
                w.shape,
                self.binder.describe(&ty.shape)
            );
            return Err(ExecError::Weight { name, message });
        }
        Ok(())
    }

    fn operand(&self, id: NodeId) -> Result<Cow<'_, Tensor>, ExecError> {
        Ok(match &self.slots[id.index()] {
            Slot::Borrowed(t) => Cow::Borrowed(*t),
            Slot::Owned(t) => Cow::Borrowed(t),
            Slot::Weight => Cow::Owned(self.materialize(id.index(), false)?),
            Slot::TransposeOf(src) => {
                let Op::Transpose { perm } = &self.graph.nodes[id.index()].op else {
                    unreachable!("view of a non-transpose")
                };
                let src = self.operand(*src)?;
                let t = shape::transpose(src.as_ref(), perm)
                    .map_err(|m| self.node_err(id.index(), m))?;
                Cow::Owned(t)
            }
            Slot::Empty => return Err(self.node_err(id.index(), "value read after it was freed")),
            Slot::Held => {
                return Err(self.node_err(
                    id.index(),
                    "value is kept by the backend; only its claims read it",
                ))
            }
        })
    }

    /// A matmul operand, and whether it is the pending transpose of the tensor returned.
    fn matmul_operand(&self, id: NodeId) -> Result<(Cow<'_, Tensor>, bool), ExecError> {
        match &self.slots[id.index()] {
            Slot::TransposeOf(src) => Ok((self.operand(*src)?, true)),
            _ => Ok((self.operand(id)?, false)),
        }
    }

    fn step(&mut self, i: usize) -> Result<(), ExecError> {
        let node = &self.graph.nodes[i];
        if node.inputs.iter().any(|inp| inp.index() >= i) {
            return Err(self.node_err(i, "an operand is not defined before this node"));
        }
        if let Some(a) = node.op.arity() {
            if node.inputs.len() != a {
                return Err(
                    self.node_err(i, format!("takes {a} operands, got {}", node.inputs.len()))
                );
            }
        }
        if self.skip[i] {
            self.free_dead(i);
            return Ok(());
        }
        if self.claims[i].is_some() {
            match self
                .accel
                .compute(self.graph, i, &SlotOperands { ex: self, node: i })
                .map_err(|m| self.node_err(i, m))?
            {
                Computed::Value(result) => {
                    self.check_result(i, &result)?;
                    self.store(i, result, 0);
                }
                Computed::Held(shape) => {
                    self.check_shape(i, &shape)?;
                    self.slots[i] = Slot::Held;
                }
            }
            self.free_dead(i);
            return Ok(());
        }
        match &node.op {
            Op::Input { .. } | Op::CacheRead { .. } => {} // bound before the run
            Op::Transpose { .. } if self.views[i] => {
                self.slots[i] = Slot::TransposeOf(node.inputs[0])
            }
            Op::Weight { .. } => {
                self.check_weight(i)?;
                self.slots[i] = Slot::Weight;
                if self.last[i] == usize::MAX {
                    let t = self.materialize(i, false)?;
                    self.store(i, t, 0);
                }
            }
            _ => {
                let (result, transient) = self.compute(i)?;
                self.check_result(i, &result)?;
                self.store(i, result, transient);
            }
        }
        self.free_dead(i);
        Ok(())
    }

    /// The node's value and the bytes of operands decoded just for it.
    fn compute(&mut self, i: usize) -> Result<(Tensor, usize), ExecError> {
        let node = &self.graph.nodes[i];
        let op = node.op.mnemonic();
        let err = |message: String| ExecError::Node {
            node: NodeId(i as u32),
            op,
            message,
        };
        // Reshape only relabels: a dying owned operand is moved, not copied.
        if let Op::Reshape { shape } = &node.op {
            let shape = self.binder.eval_shape(shape).map_err(err)?;
            let src = node.inputs[0].index();
            let t = match (&self.slots[src], self.last[src] == i) {
                (Slot::Owned(_), true) => {
                    let Slot::Owned(t) = std::mem::replace(&mut self.slots[src], Slot::Empty)
                    else {
                        unreachable!()
                    };
                    self.live -= t.size_bytes();
                    t
                }
                _ => self.operand(node.inputs[0])?.into_owned(),
            };
            return Ok((shape::reshape(t, shape).map_err(err)?, 0));
        }
        if let (Op::Cast { to }, Some(Slot::Weight)) = (
            &node.op,
            node.inputs.first().map(|x| &self.slots[x.index()]),
        ) {
            // Every float cast goes through f32, so decoding a float weight straight to f32 is
            // exact and skips the buffer of the weight's own dtype.
            let src = node.inputs[0].index();
            let w = self.materialize(src, self.graph.nodes[src].ty.dtype.is_float())?;
            let transient = if w.dtype() == *to { 0 } else { w.size_bytes() };
            return Ok((elementwise::cast_owned(w, *to), transient));
        }
        if let Op::MatMul = &node.op {
            let ((a, a_t), (b, b_t)) = (
                self.matmul_operand(node.inputs[0])?,
                self.matmul_operand(node.inputs[1])?,
            );
            let transient = [&a, &b]
                .iter()
                .map(|o| {
                    if let Cow::Owned(t) = o {
                        t.size_bytes()
                    } else {
                        0
                    }
                })
                .sum();
            return Ok((matmul::matmul(&a, a_t, &b, b_t).map_err(err)?, transient));
        }
        if let Op::FusedMatMul { .. } = &node.op {
            let ((a, a_t), (b, b_t)) = (
                self.matmul_operand(node.inputs[0])?,
                self.matmul_operand(node.inputs[1])?,
            );
            let epilogue = node.inputs[2..]
                .iter()
                .map(|&id| self.operand(id))
                .collect::<Result<Vec<_>, _>>()?;
            let owned = |o: &Cow<Tensor>| {
                if let Cow::Owned(t) = o {
                    t.size_bytes()
                } else {
                    0
                }
            };
            let transient = owned(&a) + owned(&b) + epilogue.iter().map(owned).sum::<usize>();
            let e: Vec<&Tensor> = epilogue.iter().map(|c| c.as_ref()).collect();
            return Ok((
                fused::fused_matmul(&a, a_t, &b, b_t, &e).map_err(err)?,
                transient,
            ));
        }
        let ops = node
            .inputs
            .iter()
            .map(|&id| self.operand(id))
            .collect::<Result<Vec<_>, _>>()?;
        let transient = ops
            .iter()
            .map(|o| {
                if let Cow::Owned(t) = o {
                    t.size_bytes()
                } else {
                    0
                }
            })
            .sum();
        let o: Vec<&Tensor> = ops.iter().map(|c| c.as_ref()).collect();
        let b = &self.binder;
        let expected_len = |len: &Dim| b.eval(len).ok().and_then(|v| usize::try_from(v).ok());
        let r = match &node.op {
            Op::Constant { value, dtype } => Ok(elementwise::constant(*value, *dtype)),
            Op::Iota { len, start, dtype } => elementwise::iota(
                b.eval(len).map_err(err)?,
                b.eval(start).map_err(err)?,
                *dtype,
            ),
            Op::Unary(u) => elementwise::unary(*u, o[0]),
            Op::Binary(op) => elementwise::binary(*op, o[0], o[1]),
            Op::Select => elementwise::select(o[0], o[1], o[2]),
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => reduce::reduce(*op, o[0], axes, *keep_dims),
            Op::Transpose { perm } => shape::transpose(o[0], perm),
            Op::Broadcast { shape } => {
                shape::broadcast_to(o[0], &b.eval_shape(shape).map_err(err)?)
            }
            Op::Concat { axis } => shape::concat(&o, *axis),
            Op::Slice { axis, start, end } => shape::slice(
                o[0],
                *axis,
                b.eval(start).map_err(err)?,
                b.eval(end).map_err(err)?,
            ),
            Op::Gather { axis } => index::gather(o[0], o[1], *axis),
            Op::Cast { to } => Ok(elementwise::cast(o[0], *to)),
            Op::MaskedSelect { len } => match (expected_len(len), &o[1].data) {
                (Some(n), TensorData::Bool(m)) if m.iter().filter(|&&x| x).count() != n => {
                    Err(format!(
                        "len `{len}` is {n} but the mask has {} true entries",
                        m.iter().filter(|&&x| x).count()
                    ))
                }
                _ => index::masked_select(o[0], o[1]),
            },
            Op::MaskedScatter => index::masked_scatter(o[0], o[1], o[2]),
            Op::VisionPositionIds { len } => {
                index::vision_position_ids(o[0], o[1], expected_len(len))
            }
            Op::SegmentIds { len } => index::segment_ids(o[0], expected_len(len)),
            Op::DiffFramePrune {
                threshold,
                merge,
                len,
            } => prune::diff_frame_prune(o[0], o[1], *threshold, *merge, expected_len(len)),
            Op::CacheAppend { axis, .. } => shape::concat(&o, *axis),
            Op::Fold => Ok(o[0].clone()),
            Op::Softmax => fused::softmax(o[0]),
            Op::LayerNorm { eps } => fused::layer_norm(o[0], o[1], o[2], *eps),
            Op::RmsNorm { eps } => fused::rms_norm(o[0], o[1], *eps),
            Op::Activation(a) => fused::activation(*a, o[0]),
            Op::SwiGlu => fused::swiglu(o[0], o[1]),
            Op::Rope => fused::rope(o[0], o[1], o[2]),
            Op::Attention {
                scale,
                mask,
                rope_q,
                rope_k,
            } => fused::attention(&o, *scale, *mask, *rope_q, *rope_k),
            Op::SpatialMerge { merge } => fused::spatial_merge(o[0], *merge),
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::CacheRead { .. }
            | Op::Reshape { .. }
            | Op::MatMul
            | Op::FusedMatMul { .. } => {
                unreachable!("handled by the caller")
            }
        };
        Ok((r.map_err(err)?, transient))
    }

    /// The result must have the node's dtype and shape; symbols first seen here (a masked
    /// select's fresh `len`) are bound from it.
    fn check_result(&mut self, i: usize, t: &Tensor) -> Result<(), ExecError> {
        let ty: &TensorType = &self.graph.nodes[i].ty;
        if t.dtype() != ty.dtype {
            return Err(self.node_err(
                i,
                format!("result has dtype {} but the node's type is {ty}", t.dtype()),
            ));
        }
        self.check_shape(i, &t.shape)
    }

    fn check_shape(&mut self, i: usize, shape: &[usize]) -> Result<(), ExecError> {
        let ty: &TensorType = &self.graph.nodes[i].ty;
        if shape.len() == ty.rank() {
            let by = format!(
                "{} ({})",
                NodeId(i as u32),
                self.graph.nodes[i].op.mnemonic()
            );
            self.binder
                .bind_from(&ty.shape, shape)
                .map_err(|e| ExecError::bounds(e, by))?;
        }
        if !self.binder.matches(&ty.shape, shape) {
            let want = self.binder.describe(&ty.shape);
            return Err(self.node_err(
                i,
                format!("result has shape {shape:?} but the node's type is {want}"),
            ));
        }
        Ok(())
    }

    fn store(&mut self, i: usize, t: Tensor, transient: usize) {
        let size = t.size_bytes();
        self.peak = self.peak.max(self.live + transient + size);
        self.live += size;
        self.slots[i] = Slot::Owned(t);
    }

    /// Drops every value whose last reader is node `i` (or `i` itself, when nothing reads it).
    fn free_dead(&mut self, i: usize) {
        for j in std::mem::take(&mut self.dying[i]) {
            if let Slot::Owned(t) = std::mem::replace(&mut self.slots[j], Slot::Empty) {
                self.live -= t.size_bytes();
            }
        }
    }

    fn finish(mut self) -> Result<Outputs, ExecError> {
        let g = self.graph;
        let cache_nodes: Vec<(usize, &String)> = g
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.op {
                Op::CacheAppend { name, .. } => Some((i, name)),
                _ => None,
            })
            .collect();
        // Values taken by one reader are moved out; shared ones are cloned until the last taker.
        let mut takers: HashMap<usize, usize> = HashMap::new();
        let wanted = std::mem::take(&mut self.outputs);
        for idx in wanted
            .iter()
            .map(|(_, id)| id.index())
            .chain(cache_nodes.iter().map(|(i, _)| *i))
        {
            *takers.entry(idx).or_insert(0) += 1;
        }
        let mut take = |ex: &mut Exec<'a>, idx: usize| -> Result<Tensor, String> {
            let left = takers.get_mut(&idx).expect("counted above");
            *left -= 1;
            if *left == 0 && matches!(ex.slots[idx], Slot::Owned(_)) {
                let Slot::Owned(t) = std::mem::replace(&mut ex.slots[idx], Slot::Empty) else {
                    unreachable!()
                };
                return Ok(t);
            }
            match &ex.slots[idx] {
                Slot::Owned(t) => Ok(t.clone()),
                Slot::Borrowed(t) => Ok((*t).clone()),
                Slot::Weight => ex.materialize(idx, false).map_err(|e| e.to_string()),
                Slot::TransposeOf(_) | Slot::Empty => Err("has no value".into()),
                Slot::Held => Err("is kept by the backend".into()),
            }
        };
        let mut outputs = HashMap::new();
        for (name, id) in &wanted {
            let fail = |message: String| ExecError::Output {
                name: name.clone(),
                message,
            };
            if id.index() >= g.nodes.len() {
                return Err(fail(format!("refers to {id}, which is not in the graph")));
            }
            outputs.insert(name.clone(), take(&mut self, id.index()).map_err(fail)?);
        }
        let mut caches = HashMap::new();
        for (i, name) in cache_nodes {
            if matches!(self.slots[i], Slot::Held) {
                continue; // appended in place by the backend
            }
            let t = take(&mut self, i).map_err(|message| ExecError::Cache {
                name: name.clone(),
                message,
            })?;
            caches.insert(name.clone(), t);
        }
        Ok(Outputs {
            outputs,
            caches,
            symbols: self.binder.env,
            peak_bytes: self.peak,
        })
    }
}
