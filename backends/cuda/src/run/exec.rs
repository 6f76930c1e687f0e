//! Runs one graph of a loaded engine: its steps in plan order on the device, every value in a
//! device buffer from the step that computes it until its last reader. The host is involved
//! only to upload the graph's inputs, to read back the one size the data decides (the rows a
//! `masked_select` keeps) and to download the outputs.

use super::device::{DevArg, DevBuf, Device, GemmBuffers};
use super::program::{gemm_weight_ty, lock, Instance, KvStore, Layout, Program};
use super::RunError;
use crate::check::ty_of;
use crate::kir::{Lit, ParamKind, Ty};
use crate::lower::{bind_symbols, Step};
use crate::templates::Sizes;
use std::collections::{BTreeMap, HashMap};
use vl3c_ir::{Dim, Graph, Op, Scalar};
use vl3c_reference::Tensor;

/// Most chunks one decode attention splits the keys into: enough CTAs (× kv heads) to fill an
/// H100/H200 at long contexts; chunks are whole 128-key tiles, so short contexts use fewer.
const MAX_DECODE_CHUNKS: usize = 64;

/// What a run returns: the graph's outputs and every symbol's value.
pub struct RunOutputs {
    pub outputs: HashMap<String, Tensor>,
    pub symbols: HashMap<String, i64>,
    /// The most bytes of the run's own device buffers alive at once (not weights, caches or
    /// scratch).
    pub peak_bytes: usize,
}

/// A node's value on the device: its buffer and logical shape. Views (reshapes) share their
/// source's buffer; the KV caches are the store's.
#[derive(Clone, Debug)]
struct Val {
    buf: DevBuf,
    shape: Vec<usize>,
    /// Whether the buffer is a KV cache, laid out with the store's capacity per head.
    kv: bool,
}

impl Program {
    /// Runs `graph` (one of the engine's, by name) on `inputs`, reading and extending `kv`.
    pub fn run(
        &self,
        graph: &Graph,
        inputs: &HashMap<String, Tensor>,
        kv: &mut KvStore,
    ) -> Result<RunOutputs, RunError> {
        let file = self
            .graphs
            .get(&graph.name)
            .ok_or_else(|| RunError::Input {
                name: graph.name.clone(),
                message: "is not a graph of this engine".into(),
            })?;
        let mut dev = lock(&self.device);
        let mut run = GraphRun::new(self, graph, &file.stored, kv, dev.as_mut());
        let result = run
            .bind(inputs)
            .and_then(|_| run.steps(&file.plan.steps))
            .and_then(|_| run.outputs());
        run.free_all();
        let (appended, env, peak_bytes) = (
            std::mem::take(&mut run.appended),
            std::mem::take(&mut run.env),
            run.peak,
        );
        let outputs = result?;
        for (name, len) in appended {
            if let Some(c) = kv.caches.get_mut(&name) {
                c.len = len;
            }
        }
        Ok(RunOutputs {
            outputs,
            symbols: env,
            peak_bytes,
        })
    }
}

struct GraphRun<'a> {
    program: &'a Program,
    graph: &'a Graph,
    stored: &'a BTreeMap<usize, String>,
    kv: &'a KvStore,
    dev: &'a mut dyn Device,
    env: HashMap<String, i64>,
    inputs: HashMap<String, Tensor>,
    vals: Vec<Option<Val>>,
    /// Buffers this run allocated, by root node.
    owned: HashMap<usize, (DevBuf, usize)>,
    /// Bytes of `owned` now, and the most at once.
    live: usize,
    peak: usize,
    /// For each root node, the last step that reads it (or a view of it); `usize::MAX`: kept.
    last_read: Vec<usize>,
    /// Cache lengths after this run's appends, applied only when the whole run succeeds.
    appended: Vec<(String, usize)>,
}

impl<'a> GraphRun<'a> {
    fn new(
        program: &'a Program,
        graph: &'a Graph,
        stored: &'a BTreeMap<usize, String>,
        kv: &'a KvStore,
        dev: &'a mut dyn Device,
    ) -> Self {
        let n = graph.nodes.len();
        GraphRun {
            program,
            graph,
            stored,
            kv,
            dev,
            env: HashMap::new(),
            inputs: HashMap::new(),
            vals: vec![None; n],
            owned: HashMap::new(),
            live: 0,
            peak: 0,
            last_read: vec![0; n],
            appended: Vec::new(),
        }
    }

    fn node_err(&self, node: usize, message: impl std::fmt::Display) -> RunError {
        RunError::Step {
            graph: self.graph.name.clone(),
            node,
            op: self
                .graph
                .nodes
                .get(node)
                .map_or("?", |n| n.op.mnemonic())
                .to_string(),
            message: message.to_string(),
        }
    }

    /// Binds the symbols from the inputs' and caches' shapes, checking each input's dtype.
    fn bind(&mut self, inputs: &HashMap<String, Tensor>) -> Result<(), RunError> {
        let mut given: Vec<(String, Vec<usize>)> = Vec::new();
        for n in &self.graph.nodes {
            match &n.op {
                Op::Input { name } => {
                    let t = inputs.get(name).ok_or_else(|| RunError::Input {
                        name: name.clone(),
                        message: format!("is not given (the graph needs {})", n.ty),
                    })?;
                    if t.dtype() != n.ty.dtype {
                        return Err(RunError::Input {
                            name: name.clone(),
                            message: format!(
                                "has dtype {} but the graph needs {}",
                                t.dtype(),
                                n.ty
                            ),
                        });
                    }
                    given.push((name.clone(), t.shape.clone()));
                }
                Op::CacheRead { name } => {
                    let c = self.kv.caches.get(name).ok_or_else(|| RunError::Cache {
                        name: name.clone(),
                        message: "is not kept by this sequence".into(),
                    })?;
                    if !given.iter().any(|(g, _)| g == name) {
                        given.push((name.clone(), vec![c.heads, c.len, c.d]));
                    }
                }
                _ => {}
            }
        }
        let refs: Vec<(&str, &[usize])> = given
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        self.env = self
            .graph
            .symbol_values(&refs)
            .map_err(|e| RunError::Input {
                name: self.graph.name.clone(),
                message: e.to_string(),
            })?;
        self.inputs = inputs.clone();
        Ok(())
    }

    fn shape_of(&mut self, node: usize) -> Result<Vec<usize>, RunError> {
        let ty = &self.graph.nodes[node].ty;
        let mut shape = Vec::with_capacity(ty.rank());
        for d in &ty.shape {
            let v = match d.eval(&self.env) {
                Ok(v) => v,
                Err(_) => {
                    self.bind_data_dependent(node, d)?;
                    d.eval(&self.env)
                        .map_err(|e| self.node_err(node, format!("dimension `{d}`: {e}")))?
                }
            };
            shape.push(
                usize::try_from(v)
                    .map_err(|_| self.node_err(node, format!("dimension `{d}` = {v}")))?,
            );
        }
        Ok(shape)
    }

    /// A length only the data decides: the rows a `masked_select` keeps, read back from its mask
    /// (one copy to the host per graph; the pruned video length).
    fn bind_data_dependent(&mut self, node: usize, d: &Dim) -> Result<(), RunError> {
        let n = &self.graph.nodes[node];
        let Op::MaskedSelect { len: Dim::Sym(sym) } = &n.op else {
            return Err(self.node_err(node, format!("dimension `{d}` is bound by no input")));
        };
        let mask = n.inputs[1].index();
        let m = self.operand(mask, Layout::Ir)?;
        let numel: usize = m.shape.iter().product();
        let bytes = self.dev.read(m.buf, 0, numel)?;
        let kept = bytes.iter().filter(|&&b| b != 0).count() as i64;
        if let Some(b) = self.graph.symbol_bounds(sym) {
            if kept < b.min || kept > b.max {
                return Err(RunError::Input {
                    name: sym.clone(),
                    message: format!(
                        "= {kept} (rows the mask keeps) is outside [{}, {}]",
                        b.min, b.max
                    ),
                });
            }
        }
        self.env.insert(sym.clone(), kept);
        Ok(())
    }

    fn alloc_for(&mut self, node: usize, shape: &[usize]) -> Result<Val, RunError> {
        let dtype = self.graph.nodes[node].ty.dtype;
        let ty = ty_of(dtype)
            .ok_or_else(|| self.node_err(node, format!("{dtype} values have no device type")))?;
        let len = shape.iter().product::<usize>().max(1);
        let buf = self.dev.alloc(ty, len)?;
        self.owned.insert(node, (buf, len * ty.size()));
        self.live += len * ty.size();
        self.peak = self.peak.max(self.live);
        Ok(Val {
            buf,
            shape: shape.to_vec(),
            kv: false,
        })
    }

    /// The value of `node`, which a step reads: computed by an earlier step, or a source
    /// (input, stored weight, cache, constant) placed on the device on first read.
    fn operand(&mut self, node: usize, layout: Layout) -> Result<Val, RunError> {
        if layout == Layout::Ir {
            if let Some(v) = &self.vals[node] {
                return Ok(v.clone());
            }
        }
        let n = &self.graph.nodes[node];
        if let Some(tensor) = self.stored.get(&node) {
            let buf = *self
                .program
                .weights
                .get(&(tensor.clone(), layout))
                .ok_or_else(|| {
                    self.node_err(
                        node,
                        format!("tensor `{tensor}` was not uploaded as {layout:?}"),
                    )
                })?;
            let (_, shape) = &self.program.tensors[tensor];
            let mut shape = shape.clone();
            if let Layout::Nk(_) = layout {
                let r = shape.len();
                shape.swap(r - 2, r - 1);
            }
            let v = Val {
                buf,
                shape,
                kv: false,
            };
            if layout == Layout::Ir {
                self.vals[node] = Some(v.clone());
            }
            return Ok(v);
        }
        if let Layout::Nk(_) = layout {
            return Err(self.node_err(
                node,
                "is read as a stored matmul weight, but the engine stores no value for it",
            ));
        }
        let v = match &n.op {
            Op::Input { name } => {
                let t = &self.inputs[name];
                let shape = t.shape.clone();
                let bytes = t.to_bytes();
                let v = self.alloc_for(node, &shape)?;
                if !bytes.is_empty() {
                    self.dev.write(v.buf, 0, &bytes)?;
                }
                v
            }
            Op::CacheRead { name } => {
                let c = &self.kv.caches[name];
                Val {
                    buf: c.buf,
                    shape: vec![c.heads, c.len, c.d],
                    kv: true,
                }
            }
            Op::Constant { value, .. } => {
                let shape = self.shape_of(node)?;
                let v = self.alloc_for(node, &shape)?;
                let ty = ty_of(n.ty.dtype).expect("alloc_for checked");
                let one = scalar_bytes(*value, ty);
                let bytes: Vec<u8> =
                    std::iter::repeat_n(one, shape.iter().product::<usize>().max(1))
                        .flatten()
                        .collect();
                self.dev.write(v.buf, 0, &bytes)?;
                v
            }
            _ => return Err(self.node_err(node, "is read before any step computes it")),
        };
        self.vals[node] = Some(v.clone());
        Ok(v)
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), RunError> {
        self.plan_lifetimes(steps);
        for (i, step) in steps.iter().enumerate() {
            self.step(step).map_err(|e| match e {
                RunError::Device(_) | RunError::Launch { .. } => self.node_err(step.node(), e),
                other => other,
            })?;
            self.release(i);
        }
        Ok(())
    }

    /// The last step reading each buffer; outputs live to the end.
    fn plan_lifetimes(&mut self, steps: &[Step]) {
        let mut root: Vec<usize> = (0..self.graph.nodes.len()).collect();
        for s in steps {
            if let Step::Alias { node, of } = s {
                root[*node] = root[*of];
            }
        }
        for (i, s) in steps.iter().enumerate() {
            let reads: Vec<usize> = match s {
                Step::Alias { of, .. } => vec![*of],
                Step::Launch { inputs, .. } | Step::Attention { inputs, .. } => {
                    inputs.values().copied().collect()
                }
                Step::Matmul { inputs, .. } => inputs.clone(),
            };
            for r in reads {
                self.last_read[root[r]] = i;
            }
        }
        for (_, id) in &self.graph.outputs {
            self.last_read[root[id.index()]] = usize::MAX;
        }
    }

    fn release(&mut self, step: usize) {
        let dying: Vec<usize> = self
            .owned
            .keys()
            .copied()
            .filter(|&r| self.last_read[r] == step)
            .collect();
        for r in dying {
            if let Some((buf, bytes)) = self.owned.remove(&r) {
                self.dev.free(buf);
                self.live -= bytes;
            }
        }
    }

    fn free_all(&mut self) {
        for (_, (buf, _)) in self.owned.drain() {
            self.dev.free(buf);
        }
        self.live = 0;
    }

    fn step(&mut self, step: &Step) -> Result<(), RunError> {
        match step {
            Step::Alias { node, of } => {
                let src = self.operand(*of, Layout::Ir)?;
                let shape = self.shape_of(*node)?;
                if shape.iter().product::<usize>() != src.shape.iter().product::<usize>() {
                    return Err(
                        self.node_err(*node, format!("reshapes {:?} to {shape:?}", src.shape))
                    );
                }
                self.vals[*node] = Some(Val { shape, ..src });
            }
            Step::Launch {
                node,
                instance,
                inputs,
                output,
            } => {
                let inst = &self.program.instances[*instance];
                let mut bound = Vec::new();
                for (name, &n) in inputs {
                    bound.push((name.clone(), self.operand(n, Layout::Ir)?));
                }
                let out = if let Op::CacheAppend { name, .. } = &self.graph.nodes[*node].op {
                    let shape = self.shape_of(*node)?;
                    let c = &self.kv.caches[name];
                    let len = shape.get(1).copied().unwrap_or(0);
                    if len > self.kv.capacity {
                        return Err(RunError::ContextOverflow {
                            needed: len,
                            capacity: self.kv.capacity,
                        });
                    }
                    self.appended.push((name.clone(), len));
                    let v = Val {
                        buf: c.buf,
                        shape,
                        kv: true,
                    };
                    self.vals[*node] = Some(v);
                    None
                } else {
                    let shape = self.shape_of(*node)?;
                    let v = self.alloc_for(*node, &shape)?;
                    self.vals[*node] = Some(v.clone());
                    if shape.contains(&0) {
                        // Nothing to compute (no video in the prompt: zero kept rows).
                        return Ok(());
                    }
                    Some((output.clone(), v))
                };
                self.launch(inst, bound, out)?;
            }
            Step::Matmul {
                node,
                gemm,
                gemv,
                inputs,
                round_b,
            } => {
                let shape = self.shape_of(*node)?;
                let sizes: Sizes = self.env.iter().map(|(k, v)| (k.clone(), *v)).collect();
                let resolved = gemm.resolve(&sizes).map_err(|e| self.node_err(*node, e))?;
                let weight_stored = self.stored.contains_key(&inputs[1]);
                let out = self.alloc_for(*node, &shape)?;
                self.vals[*node] = Some(out.clone());
                match gemv {
                    Some(g) if resolved.n == 1 && weight_stored => {
                        let inst = &self.program.instances[*g];
                        let w_ty = inst.input_ty(1).ok_or_else(|| {
                            self.node_err(*node, "the GEMV reads no weight of a device type")
                        })?;
                        let mut bound = Vec::new();
                        for (pos, name) in inst.inputs.iter().enumerate() {
                            let n = *inputs.get(pos).ok_or_else(|| {
                                self.node_err(*node, format!("GEMV input `{name}` has no operand"))
                            })?;
                            bound.push((
                                name.clone(),
                                self.operand(
                                    n,
                                    if pos == 1 {
                                        Layout::Nk(w_ty)
                                    } else {
                                        Layout::Ir
                                    },
                                )?,
                            ));
                        }
                        self.launch(inst, bound, Some(("out".into(), out)))?;
                    }
                    _ => {
                        let get =
                            |run: &mut Self, pos: usize, layout| -> Result<DevBuf, RunError> {
                                let n = *inputs.get(pos).ok_or_else(|| {
                                    run.node_err(*node, format!("operand {pos} is missing"))
                                })?;
                                Ok(run.operand(n, layout)?.buf)
                            };
                        let a_layout = if weight_stored {
                            Layout::Nk(gemm_weight_ty(gemm))
                        } else {
                            Layout::Ir
                        };
                        let ops = &gemm.operands;
                        let a = get(self, ops.a, if ops.a == 1 { a_layout } else { Layout::Ir })?;
                        let c = ops.c.map(|c| get(self, c, Layout::Ir)).transpose()?;
                        let bias = ops.bias.map(|b| get(self, b, Layout::Ir)).transpose()?;
                        let n = *inputs.get(ops.b).ok_or_else(|| {
                            self.node_err(*node, format!("operand {} is missing", ops.b))
                        })?;
                        let x = self.operand(n, Layout::Ir)?;
                        // The activations rounded to bf16 in a buffer of this call's, or as they are.
                        let rounded = match round_b {
                            Some(r) => Some(self.round(
                                *node,
                                &self.program.instances[*r],
                                &x,
                                resolved.k,
                            )?),
                            None => None,
                        };
                        let bufs = GemmBuffers {
                            a,
                            b: rounded.unwrap_or(x.buf),
                            c,
                            bias,
                            d: out.buf,
                        };
                        let r = self.dev.gemm(gemm, &sizes, bufs);
                        if let Some(b) = rounded {
                            self.dev.free(b);
                        }
                        r?;
                    }
                }
            }
            Step::Attention {
                node,
                prefill,
                decode,
                inputs,
            } => {
                let mut bound = Vec::new();
                for (name, &n) in inputs {
                    bound.push((name.clone(), self.operand(n, Layout::Ir)?));
                }
                let q_rows = bound
                    .iter()
                    .find(|(n, _)| n == "q")
                    .and_then(|(_, v)| v.shape.get(1).copied());
                let keys = bound
                    .iter()
                    .find(|(n, _)| n == "k")
                    .and_then(|(_, v)| v.shape.get(1).copied())
                    .unwrap_or(0);
                let shape = self.shape_of(*node)?;
                let out = self.alloc_for(*node, &shape)?;
                self.vals[*node] = Some(out.clone());
                match decode {
                    Some(d) if q_rows == Some(1) => {
                        let kv_len = self.dev.alloc(Ty::I64, 1)?;
                        self.dev.write(kv_len, 0, &(keys as i64).to_le_bytes())?;
                        bound.push((
                            "kv_len".into(),
                            Val {
                                buf: kv_len,
                                shape: vec![1],
                                kv: false,
                            },
                        ));
                        let inst = &self.program.instances[*d];
                        let r = self.launch(inst, bound, Some(("out".into(), out)));
                        self.dev.free(kv_len);
                        r?;
                    }
                    _ => {
                        let inst = &self.program.instances[*prefill];
                        self.launch(inst, bound, Some(("out".into(), out)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `x` (f32, `[.., K]`) cast to bf16 by instance `inst` (`x` `[rows, K]` → `out`) into a new
    /// buffer, which the caller frees.
    fn round(&mut self, node: usize, inst: &Instance, x: &Val, k: i64) -> Result<DevBuf, RunError> {
        let numel: usize = x.shape.iter().product();
        let k = usize::try_from(k)
            .ok()
            .filter(|&k| k > 0 && numel.is_multiple_of(k))
            .ok_or_else(|| {
                self.node_err(
                    node,
                    format!("K = {k} does not divide the activations {:?}", x.shape),
                )
            })?;
        let shape = vec![numel / k, k];
        let buf = self.dev.alloc(Ty::Bf16, numel.max(1))?;
        if numel == 0 {
            return Ok(buf);
        }
        let x = Val {
            buf: x.buf,
            shape: shape.clone(),
            kv: false,
        };
        match self.launch(
            inst,
            vec![("x".into(), x)],
            Some((
                "out".into(),
                Val {
                    buf,
                    shape,
                    kv: false,
                },
            )),
        ) {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.dev.free(buf);
                Err(e)
            }
        }
    }

    /// Launches an instance's kernels: buffers by parameter name (inputs, the output, scratch),
    /// scalars from the symbols its reference graph binds on the actual shapes, then the engine
    /// graph's symbols of the same name, then the engine's own (`kv_capacity`, `max_chunks`).
    fn launch(
        &mut self,
        inst: &Instance,
        inputs: Vec<(String, Val)>,
        out: Option<(String, Val)>,
    ) -> Result<(), RunError> {
        let bad = |m: String| RunError::Launch {
            instance: inst.name.clone(),
            message: m,
        };
        let ranks: HashMap<&str, usize> = inst
            .reference
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Input { name } | Op::CacheRead { name } => Some((name.as_str(), n.ty.rank())),
                _ => None,
            })
            .collect();
        let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (name, v) in &inputs {
            let rank = ranks.get(name.as_str()).copied().unwrap_or(v.shape.len());
            let shape = with_rank(&v.shape, rank).ok_or_else(|| {
                bad(format!(
                    "`{name}` is {:?}, the instance reads rank {rank}",
                    v.shape
                ))
            })?;
            shapes.insert(name.clone(), shape);
        }
        if let Some((name, v)) = &out {
            shapes.insert(name.clone(), v.shape.clone());
        }
        let mut sizes = bind_symbols(&inst.reference, &shapes).map_err(bad)?;
        for s in &inst.reference.symbols {
            if !sizes.contains_key(&s.name) {
                if let Some(&v) = self.env.get(&s.name) {
                    sizes.insert(s.name.clone(), v);
                }
            }
        }
        // Keys are read with the cache's row stride when they are the cache, else contiguous.
        let capacity = match inputs.iter().find(|(n, _)| n == "k") {
            Some((_, k)) if !k.kv => k.shape.get(1).copied().unwrap_or(0) as i64,
            _ => self.kv.capacity as i64,
        };
        let chunks = (self.kv.capacity.div_ceil(128)).clamp(1, MAX_DECODE_CHUNKS) as i64;
        sizes.entry("kv_capacity".into()).or_insert(capacity);
        sizes.entry("max_chunks".into()).or_insert(chunks);
        // A value the kernels address with the cache's row stride must be the cache itself.
        if let Some((_, v)) = inputs
            .iter()
            .find(|(n, _)| n == crate::templates::cache::CACHE)
        {
            if !v.kv {
                return Err(bad(
                    "appends to a value that is not a KV cache of the sequence".into(),
                ));
            }
        }

        let mut buffers: HashMap<String, DevBuf> =
            inputs.iter().map(|(n, v)| (n.clone(), v.buf)).collect();
        if let Some((name, v)) = &out {
            buffers.insert(name.clone(), v.buf);
        }
        let mut scratch = Vec::new();
        for s in &inst.scratch {
            let buf = self.dev.alloc(s.elem, s.len_at(&sizes).map_err(bad)?)?;
            scratch.push(buf);
            buffers.insert(s.name.clone(), buf);
        }
        let result = (|| {
            for k in &inst.kernels {
                let mut args = Vec::with_capacity(k.params.len());
                for p in &k.params {
                    args.push(match &p.kind {
                        ParamKind::Buffer { .. } => {
                            DevArg::Buffer(*buffers.get(&p.name).ok_or_else(|| {
                                bad(format!(
                                    "kernel `{}`: buffer `{}` is bound by nothing",
                                    k.name, p.name
                                ))
                            })?)
                        }
                        ParamKind::Scalar(ty) => {
                            let v = *sizes.get(&p.name).ok_or_else(|| {
                                bad(format!(
                                    "kernel `{}`: scalar `{}` is bound by nothing",
                                    k.name, p.name
                                ))
                            })?;
                            DevArg::Scalar(scalar_lit(v, *ty).ok_or_else(|| {
                                bad(format!("scalar `{}` = {v} does not fit {ty:?}", p.name))
                            })?)
                        }
                    });
                }
                self.dev
                    .launch(k, &args)
                    .map_err(|e| bad(format!("kernel `{}`: {e}", k.name)))?;
            }
            Ok(())
        })();
        for b in scratch {
            self.dev.free(b);
        }
        result
    }

    fn outputs(&mut self) -> Result<HashMap<String, Tensor>, RunError> {
        let mut out = HashMap::new();
        for (name, id) in &self.graph.outputs {
            let node = id.index();
            let v = self.operand(node, Layout::Ir)?;
            let dtype = self.graph.nodes[node].ty.dtype;
            let numel: usize = v.shape.iter().product();
            let bytes = if numel == 0 {
                Vec::new()
            } else {
                self.dev.read(v.buf, 0, numel)?
            };
            let t = Tensor::from_bytes(dtype, &v.shape, &bytes).map_err(|m| RunError::Output {
                name: name.clone(),
                message: m,
            })?;
            out.insert(name.clone(), t);
        }
        Ok(out)
    }
}

/// The selection reads an operand through reshapes that only add or drop leading unit axes
/// (`[1, n, d]` for a `[n, d]` table): the same buffer at the instance's rank.
fn with_rank(shape: &[usize], rank: usize) -> Option<Vec<usize>> {
    let mut s = shape.to_vec();
    while s.len() > rank && s.first() == Some(&1) {
        s.remove(0);
    }
    while s.len() < rank {
        s.insert(0, 1);
    }
    (s.len() == rank).then_some(s)
}

fn scalar_lit(v: i64, ty: Ty) -> Option<Lit> {
    Some(match ty {
        Ty::I64 => Lit::I64(v),
        Ty::I32 => Lit::I32(i32::try_from(v).ok()?),
        Ty::U32 => Lit::U32(u32::try_from(v).ok()?),
        _ => return None,
    })
}

fn scalar_bytes(value: Scalar, ty: Ty) -> Vec<u8> {
    let f = match value {
        Scalar::Float(f) => f,
        Scalar::Int(i) => i as f64,
        Scalar::Bool(b) => b as i64 as f64,
    };
    let i = match value {
        Scalar::Float(f) => f as i64,
        Scalar::Int(i) => i,
        Scalar::Bool(b) => b as i64,
    };
    match ty {
        Ty::F32 => (f as f32).to_le_bytes().to_vec(),
        Ty::Bf16 => crate::emu::f32_to_bf16_bits(f as f32)
            .to_le_bytes()
            .to_vec(),
        Ty::I32 => (i as i32).to_le_bytes().to_vec(),
        Ty::U32 => (i as u32).to_le_bytes().to_vec(),
        Ty::I64 => i.to_le_bytes().to_vec(),
        Ty::Bool => vec![(i != 0) as u8],
    }
}
