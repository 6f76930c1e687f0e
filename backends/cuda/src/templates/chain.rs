//! `ElementwiseChain`: one kernel for a small IR subgraph of the primitive glue ops — a fused
//! run of elementwise nodes over broadcast inputs, and the data movement between them (reshape,
//! transpose, broadcast, slice, concat, gather, iota, constants, the vision ids). Each thread
//! computes one element of the outputs from its flat index, walking the subgraph backwards: an
//! elementwise node reads its operands at the same position, a layout node maps the position to
//! its operand's, and an input node loads. A one-node subgraph is the single-op template.
//!
//! Symbolic dims become I64 scalar parameters named like their symbols; constant dims are baked
//! in. Every input node is a buffer parameter named like the input; every output a buffer named
//! like the output. All outputs have one shape (a rope table's cos and sin share their angles).
//! A cache append is not a glue op here: it writes into the cache in place (`CacheAppend`).
//! Reshape moves no data: inside a chain it is an index remap; as a one-op template it is a copy
//! kernel, for when the engine cannot alias the buffer (it should, whenever it can).

use super::elementwise::{self, mem_ty, reg_ty};
use super::layout::{self, Index, Symbols};
use super::{Template, NMSE_F32};
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};
use std::collections::HashMap;
use vl3c_ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// Threads per block of the one-element-per-thread kernels.
pub(crate) const BLOCK: u32 = 256;

/// A fused subgraph of primitive ops and its kernel.
#[derive(Clone, Debug)]
pub struct ElementwiseChain {
    graph: Graph,
    family: &'static str,
    label: String,
}

/// Operand names of the one-op templates, by position: what the kernel's buffers are called.
fn operand_names(op: &Op, count: usize) -> Vec<String> {
    let fixed: &[&str] = match op {
        Op::Select => &["cond", "a", "b"],
        Op::Gather { .. } => &["data", "indices"],
        Op::VisionPositionIds { .. } => &["grid_thw", "merge_sizes"],
        Op::SegmentIds { .. } => &["grid_thw"],
        Op::Binary(_) => &["x", "y"],
        _ if count == 1 => &["x"],
        _ => &[],
    };
    if fixed.len() == count {
        fixed.iter().map(|s| s.to_string()).collect()
    } else {
        (0..count).map(|i| format!("in{i}")).collect()
    }
}

/// True when the chain kernel can compute the op.
fn supported(op: &Op) -> bool {
    matches!(
        op,
        Op::Input { .. }
            | Op::Constant { .. }
            | Op::Iota { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Gather { .. }
            | Op::VisionPositionIds { .. }
            | Op::SegmentIds { .. }
            | Op::Fold
    )
}

/// The op with its attributes, as the IR text writes them.
fn describe(op: &Op) -> String {
    let dims = |d: &[Dim]| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let attrs = match op {
        Op::Constant { value, .. } => format!("value={value:?}"),
        Op::Iota { len, start, .. } => format!("len={len},start={start}"),
        Op::Reshape { shape } | Op::Broadcast { shape } => format!("shape=[{}]", dims(shape)),
        Op::Transpose { perm } => format!("perm={perm:?}").replace(' ', ""),
        Op::Concat { axis } | Op::Gather { axis } => format!("axis={axis}"),
        Op::Slice { axis, start, end } => format!("axis={axis},start={start},end={end}"),
        Op::Cast { to } => format!("to={to}"),
        Op::VisionPositionIds { len } | Op::SegmentIds { len } => format!("len={len}"),
        _ => String::new(),
    };
    format!(
        "{}{}{}",
        op.mnemonic(),
        if attrs.is_empty() { "" } else { ":" },
        attrs
    )
}

fn type_text(t: &TensorType) -> String {
    t.to_string().replace(' ', "")
}

impl ElementwiseChain {
    /// A chain over `graph`: its input nodes are the kernel's input buffers, its outputs the
    /// output buffers. Fails on an op the kernel cannot compute, outputs of different shapes,
    /// or a name that is both an input and an output. Symbols the graph does not declare are
    /// declared (non-negative), so the reference executor can bind them.
    pub fn new(graph: Graph) -> Result<ElementwiseChain, String> {
        let label = Self::chain_label(&graph);
        Self::checked(graph, "elementwise_chain", label)
    }

    /// The one-op template: `op` over inputs of the given types (named `x`, `y`, `cond`, `data`,
    /// `indices`, … by position), writing `out`.
    pub fn single(op: Op, operands: &[TensorType]) -> Result<ElementwiseChain, String> {
        let family = op.mnemonic();
        let mut graph = Graph::new(family);
        let names = operand_names(&op, operands.len());
        let mut ids = Vec::new();
        for (name, ty) in names.iter().zip(operands) {
            ids.push(
                graph
                    .add_source(Op::Input { name: name.clone() }, ty.clone())
                    .map_err(|e| e.to_string())?,
            );
        }
        let label = format!(
            "{}({})",
            describe(&op),
            names
                .iter()
                .zip(operands)
                .map(|(n, t)| format!("{n}={}", type_text(t)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let out = graph.add(op, &ids).map_err(|e| e.to_string())?;
        graph.set_output("out", out);
        Self::checked(graph, family, label)
    }

    fn checked(
        mut graph: Graph,
        family: &'static str,
        label: String,
    ) -> Result<ElementwiseChain, String> {
        for s in layout::symbols_of(Self::dims(&graph)) {
            if graph.symbol_bounds(&s).is_none() {
                graph.declare_symbol(&s, 0, i64::MAX / 4);
            }
        }
        let (first_name, first) = graph.outputs.first().ok_or("the subgraph has no outputs")?;
        let shape = &graph.ty(*first).shape;
        for (name, id) in &graph.outputs {
            if &graph.ty(*id).shape != shape {
                return Err(format!("outputs `{first_name}` and `{name}` differ in shape: every output of a chain has one shape"));
            }
        }
        for id in graph.node_ids() {
            let node = graph.node(id);
            if !supported(&node.op) {
                return Err(format!(
                    "{id} ({}) is not a glue op an elementwise chain computes",
                    node.op.mnemonic()
                ));
            }
            mem_ty(node.ty.dtype)?;
            if let Op::Input { name } = &node.op {
                if graph.output(name).is_some() {
                    return Err(format!("`{name}` names both an input and an output"));
                }
            }
        }
        Ok(ElementwiseChain {
            graph,
            family,
            label,
        })
    }

    fn chain_label(graph: &Graph) -> String {
        fn expr(g: &Graph, id: NodeId, depth: usize) -> String {
            let node = g.node(id);
            match &node.op {
                Op::Input { name } => name.clone(),
                _ if depth > 6 => "…".into(),
                op => {
                    let args: Vec<String> =
                        node.inputs.iter().map(|i| expr(g, *i, depth + 1)).collect();
                    format!("{}({})", describe(op), args.join(","))
                }
            }
        }
        let outs: Vec<String> = graph
            .outputs
            .iter()
            .map(|(n, id)| format!("{n}={}", expr(graph, *id, 0)))
            .collect();
        let ty = graph
            .outputs
            .first()
            .map(|(_, id)| type_text(graph.ty(*id)))
            .unwrap_or_default();
        format!("elementwise_chain({};{ty})", outs.join(";"))
    }

    /// Every dim the kernel evaluates: the node shapes and the dims in attributes.
    fn dims(g: &Graph) -> Vec<&Dim> {
        let mut dims: Vec<&Dim> = g.nodes.iter().flat_map(|n| n.ty.shape.iter()).collect();
        for n in &g.nodes {
            match &n.op {
                Op::Iota { len, start, .. } => dims.extend([len, start]),
                Op::Slice { start, end, .. } => dims.extend([start, end]),
                _ => {}
            }
        }
        dims
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn kernel(&self) -> Kernel {
        let g = &self.graph;
        let mut b = KernelBuilder::new(kernel_name(self.family, &self.label), [BLOCK, 1, 1]);
        let mut inputs = HashMap::new();
        // An input nothing reads is no kernel parameter.
        let read = |id: NodeId| {
            g.nodes.iter().any(|n| n.inputs.contains(&id))
                || g.outputs.iter().any(|(_, o)| *o == id)
        };
        for (id, name, ty) in g.inputs().filter(|(id, _, _)| read(*id)) {
            inputs.insert(
                id,
                b.buffer(
                    name,
                    mem_ty(ty.dtype).expect("checked in new"),
                    Access::Read,
                ),
            );
        }
        let outputs: Vec<(Buf, NodeId)> = g
            .outputs
            .iter()
            .map(|(name, id)| {
                (
                    b.buffer(
                        name,
                        mem_ty(g.ty(*id).dtype).expect("checked in new"),
                        Access::Write,
                    ),
                    *id,
                )
            })
            .collect();
        let syms = layout::declare_symbols(&mut b, &layout::symbols_of(Self::dims(g)));
        let out_shape = layout::dims(&g.ty(outputs[0].1).shape, &syms);
        let total = layout::numel(&out_shape);
        let gid = global_index(&mut b, &total);
        let mut emitter = Emitter {
            graph: g,
            syms,
            inputs,
            memo: vec![Vec::new()],
        };
        b.if_(layout::lt(gid.clone(), total), |b| {
            for (buf, id) in &outputs {
                let v = emitter.value(b, *id, Index::flat(gid.clone()));
                b.store(
                    *buf,
                    gid.clone(),
                    elementwise::to_memory(v, g.ty(*id).dtype),
                );
            }
        });
        b.finish()
    }
}

/// A CUDA function name for a template instance: the family and a hash of its label, so two
/// instances in one module never collide.
pub(crate) fn kernel_name(family: &str, label: &str) -> String {
    let hash = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("vl3_{family}_{:08x}", hash as u32)
}

/// Sets a one-thread-per-element grid over `total` elements and returns the thread's element.
pub(crate) fn global_index(b: &mut KernelBuilder, total: &Expr) -> Expr {
    let blocks = layout::div(
        layout::add(total.clone(), Expr::i64(BLOCK as i64 - 1)),
        Expr::i64(BLOCK as i64),
    );
    b.grid(blocks.max(Expr::i64(1)), Expr::u32(1), Expr::u32(1));
    let gid = layout::add(
        layout::mul(b.block_idx(0).cast(Ty::I64), Expr::i64(BLOCK as i64)),
        b.thread_idx(0).cast(Ty::I64),
    );
    b.let_("gid", gid)
}

/// Walks a subgraph backwards from an output element, emitting the statements that compute it.
pub(crate) struct Emitter<'g> {
    pub graph: &'g Graph,
    pub syms: Symbols,
    inputs: HashMap<NodeId, Buf>,
    /// Values already in registers, by node and position; one layer per open conditional
    /// block, since a register declared inside one is out of scope after it.
    memo: Vec<Vec<(NodeId, Index, Expr)>>,
}

impl Emitter<'_> {
    pub fn shape(&self, id: NodeId) -> Vec<Expr> {
        layout::dims(&self.graph.ty(id).shape, &self.syms)
    }

    pub fn dim(&self, d: &Dim) -> Expr {
        layout::dim(d, &self.syms)
    }

    /// Runs `body` as the contents of a nested block (a branch or a loop body).
    pub fn scoped<R>(&mut self, body: impl FnOnce(&mut Self) -> R) -> R {
        self.memo.push(Vec::new());
        let r = body(self);
        self.memo.pop();
        r
    }

    /// The value of node `id` at position `idx` (in the node's own shape), in its register type.
    pub fn value(&mut self, b: &mut KernelBuilder, id: NodeId, idx: Index) -> Expr {
        let found = self
            .memo
            .iter()
            .flatten()
            .find(|(n, i, _)| *n == id && i.key() == idx.key())
            .map(|(_, _, v)| v.clone());
        if let Some(v) = found {
            return v;
        }
        let v = self.compute(b, id, idx.clone());
        let v = if matches!(v, Expr::Lit(_) | Expr::Var(_)) {
            v
        } else {
            b.let_(&format!("v{}", id.0), v)
        };
        self.memo
            .last_mut()
            .expect("a memo layer")
            .push((id, idx, v.clone()));
        v
    }

    /// The value of operand `k` of `id` read for the element `idx` of `id` under broadcasting.
    fn operand(&mut self, b: &mut KernelBuilder, id: NodeId, k: usize, idx: &mut Index) -> Expr {
        let g = self.graph;
        let node = g.node(id);
        let src = node.inputs[k];
        let (from, to) = (&g.ty(src).shape, &node.ty.shape);
        if layout::same_shape(from, to) {
            return self.value(b, src, idx.clone());
        }
        let multi = idx.get_multi(&self.shape(id));
        self.value(
            b,
            src,
            Index::multi(layout::broadcast_index(from, to, &multi)),
        )
    }

    fn compute(&mut self, b: &mut KernelBuilder, id: NodeId, mut idx: Index) -> Expr {
        let g = self.graph;
        let node = g.node(id);
        let dtype = node.ty.dtype;
        let operand_dtype = |k: usize| g.ty(node.inputs[k]).dtype;
        match &node.op {
            Op::Input { .. } => {
                let flat = idx.get_flat(b, &self.shape(id));
                elementwise::from_memory(b.load(self.inputs[&id], flat), dtype)
            }
            Op::Constant { value, dtype } => elementwise::constant(*value, *dtype),
            Op::Iota { start, .. } => {
                let i = idx.get_flat(b, &self.shape(id));
                elementwise::cast(layout::add(self.dim(start), i), DType::I64, dtype)
            }
            Op::Unary(u) => {
                let x = self.operand(b, id, 0, &mut idx);
                elementwise::unary(*u, x, dtype)
            }
            Op::Binary(op) => {
                let from = operand_dtype(0);
                let x = self.operand(b, id, 0, &mut idx);
                let y = self.operand(b, id, 1, &mut idx);
                elementwise::binary(*op, x, y, from)
            }
            Op::Select => {
                let c = self.operand(b, id, 0, &mut idx);
                let x = self.operand(b, id, 1, &mut idx);
                let y = self.operand(b, id, 2, &mut idx);
                Expr::select(c, x, y)
            }
            Op::Cast { to } => {
                let from = operand_dtype(0);
                let x = self.operand(b, id, 0, &mut idx);
                elementwise::cast(x, from, *to)
            }
            Op::Broadcast { .. } => self.operand(b, id, 0, &mut idx),
            Op::Fold => self.value(b, node.inputs[0], idx),
            Op::Reshape { .. } => {
                let flat = idx.get_flat(b, &self.shape(id));
                self.value(b, node.inputs[0], Index::flat(flat))
            }
            Op::Transpose { perm } => {
                let multi = idx.get_multi(&self.shape(id));
                let mut src = vec![Expr::i64(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = multi[i].clone();
                }
                self.value(b, node.inputs[0], Index::multi(src))
            }
            Op::Slice { axis, start, .. } => {
                let mut multi = idx.get_multi(&self.shape(id));
                multi[*axis] = layout::add(multi[*axis].clone(), self.dim(start));
                self.value(b, node.inputs[0], Index::multi(multi))
            }
            Op::Concat { axis } => self.concat(b, id, *axis, &mut idx),
            Op::Gather { axis } => super::index::gather(self, b, id, *axis, &mut idx),
            Op::VisionPositionIds { .. } => super::index::vision_position_id(self, b, id, &mut idx),
            Op::SegmentIds { .. } => super::index::segment_id(self, b, id, &mut idx),
            op => panic!("{} passed the chain's op check", op.mnemonic()),
        }
    }

    /// Each operand covers a range of the axis; the element reads the one whose range holds it.
    fn concat(&mut self, b: &mut KernelBuilder, id: NodeId, axis: usize, idx: &mut Index) -> Expr {
        let g = self.graph;
        let node = g.node(id);
        let multi = idx.get_multi(&self.shape(id));
        let at = multi[axis].clone();
        let result = b.var(
            &format!("cat{}", id.0),
            elementwise::zero(reg_ty(node.ty.dtype)),
        );
        let mut offset = Expr::i64(0);
        let count = node.inputs.len();
        for (k, &src) in node.inputs.iter().enumerate() {
            let end = layout::add(offset.clone(), self.dim(&g.ty(src).shape[axis]));
            let below_end = layout::lt(at.clone(), end.clone());
            let at_or_after_start = at.clone().ge(offset.clone());
            // The ranges tile the axis, so the first operand needs no lower bound and the last
            // no upper one.
            let cond = match (k == 0, k + 1 == count) {
                (true, true) => Expr::bool(true),
                (true, false) => below_end,
                (false, true) => at_or_after_start,
                (false, false) => at_or_after_start.and(below_end),
            };
            let mut src_multi = multi.clone();
            src_multi[axis] = layout::sub(at.clone(), offset.clone());
            b.if_(cond, |b| {
                self.scoped(|em| {
                    let v = em.value(b, src, Index::multi(src_multi));
                    b.assign(result, v);
                })
            });
            offset = end;
        }
        Expr::Var(result)
    }
}

impl Template for ElementwiseChain {
    fn op(&self) -> &'static str {
        self.family
    }

    fn name(&self) -> String {
        self.label.clone()
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![self.kernel()]
    }

    fn reference(&self) -> Graph {
        self.graph.clone()
    }

    fn int_input(&self, name: &str, sizes: &super::Sizes) -> Option<Vec<i64>> {
        super::index::int_input(&self.graph, name, sizes)
    }

    /// f32 math, as the reference; only transcendentals differ (CUDA's f32 functions against
    /// the reference's f64 ones, an ulp or two).
    fn nmse_limit(&self) -> f64 {
        NMSE_F32
    }
}

/// Shorthand for the cases: a one-op chain over `operands`, panicking on a type error (the
/// cases are code).
pub(crate) fn single(op: Op, operands: &[TensorType]) -> ElementwiseChain {
    ElementwiseChain::single(op, operands)
        .unwrap_or_else(|e| panic!("a case's op does not type-check: {e}"))
}
