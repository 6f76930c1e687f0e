//! IR nodes → ONNX nodes (opset 17). Fused ops become the primitive chains they stand for,
//! except LayerNormalization, which onnxruntime and TensorRT run fused. Symbolic dims become
//! int64 tensors read from the shapes of values that carry them, so one graph serves every
//! size the IR's bounds allow. Fold nodes become initializers holding their compile-time value.

use crate::builder::{attr_float, attr_int, attr_ints, GraphBuilder};
use crate::MatmulPrecision;
mod attention;
mod vision;

use std::collections::{HashMap, HashSet};
use vl3c_engine::{Emit, EngineError};
use vl3c_ir::{Activation, BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar, UnaryOp};
use vl3c_reference::{Tensor, TensorData};

/// A lowered value: its ONNX name and element type (weights are stored in f32 whatever the
/// checkpoint's dtype, so a value's type can be wider than its IR node's).
#[derive(Clone, Debug)]
pub struct Val {
    pub name: String,
    pub dtype: DType,
}

pub struct Lowerer<'a, 'e, 'd> {
    g: &'a Graph,
    pub b: GraphBuilder<'d>,
    emit: &'a Emit<'e>,
    precision: MatmulPrecision,
    values: HashMap<NodeId, Val>,
    /// Symbol → `[1]` i64 value holding it.
    syms: HashMap<String, String>,
    /// Symbol → (node, axis, k): axis `axis` of `node`'s value is k·symbol.
    sym_sources: HashMap<String, (NodeId, usize, i64)>,
    /// Any symbolic dim → a (node, axis) that has it: `past_len + seq_len` is read off the
    /// cache rather than added up.
    dim_sources: HashMap<Dim, (NodeId, usize)>,
    dims: HashMap<Dim, String>,
    /// Folds every use of which is a matmul's right operand: stored at the matmul precision.
    matmul_folds: HashSet<NodeId>,
    fold_keys: HashMap<NodeId, String>,
    /// bool `[keys]`: which cached and new positions may be attended (the decoder's
    /// attention_mask).
    pub key_mask: Option<String>,
    /// The cache states the graph appended to: (state name, the whole cache after the append).
    pub appended: Vec<(String, Val)>,
}

fn err(g: &Graph, id: NodeId, m: impl std::fmt::Display) -> EngineError {
    EngineError::Incompatible(format!(
        "onnx export: {} {id} ({}): {m}",
        g.name,
        g.nodes[id.index()].op.mnemonic()
    ))
}

impl<'a, 'e, 'd> Lowerer<'a, 'e, 'd> {
    pub fn new(
        g: &'a Graph,
        b: GraphBuilder<'d>,
        emit: &'a Emit<'e>,
        precision: MatmulPrecision,
    ) -> Lowerer<'a, 'e, 'd> {
        let mut users: HashMap<NodeId, Vec<(NodeId, usize)>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for (slot, &inp) in n.inputs.iter().enumerate() {
                users.entry(inp).or_default().push((NodeId(i as u32), slot));
            }
        }
        let matmul_folds = (0..g.nodes.len())
            .map(|i| NodeId(i as u32))
            .filter(|&id| {
                g.nodes[id.index()].op == Op::Fold
                    && users.get(&id).is_some_and(|u| {
                        u.iter().all(|&(user, slot)| {
                            slot == 1
                                && matches!(
                                    g.nodes[user.index()].op,
                                    Op::MatMul | Op::FusedMatMul { .. }
                                )
                        })
                    })
            })
            .collect();
        Lowerer {
            g,
            b,
            emit,
            precision,
            values: HashMap::new(),
            syms: HashMap::new(),
            sym_sources: HashMap::new(),
            dim_sources: HashMap::new(),
            dims: HashMap::new(),
            matmul_folds,
            fold_keys: HashMap::new(),
            key_mask: None,
            appended: Vec::new(),
        }
    }

    /// Makes `val` the value of `id` (a graph input, or a node the split replaces), whose
    /// shape must be `id`'s IR shape.
    pub fn bind(&mut self, id: NodeId, val: Val) {
        self.register_symbols(id);
        self.values.insert(id, val);
    }

    pub fn into_builder(self) -> GraphBuilder<'d> {
        self.b
    }

    pub fn value(&self, id: NodeId) -> Option<&Val> {
        self.values.get(&id)
    }

    /// Lowers every node `outputs` need that is not bound yet, in graph order.
    pub fn lower(&mut self, outputs: &[NodeId]) -> Result<(), EngineError> {
        let g = self.g;
        let mut needed = vec![false; g.nodes.len()];
        for o in outputs {
            needed[o.index()] = true;
        }
        for i in (0..g.nodes.len()).rev() {
            let id = NodeId(i as u32);
            if needed[i] && !self.values.contains_key(&id) && g.nodes[i].op != Op::Fold {
                for inp in &g.nodes[i].inputs {
                    needed[inp.index()] = true;
                }
            }
        }
        for (i, need) in needed.into_iter().enumerate() {
            let id = NodeId(i as u32);
            if need && !self.values.contains_key(&id) {
                let v = self.node(id)?;
                self.bind(id, v);
            }
        }
        Ok(())
    }

    fn register_symbols(&mut self, id: NodeId) {
        for (axis, d) in self.g.nodes[id.index()].ty.shape.iter().enumerate() {
            if d.as_const().is_none() {
                self.dim_sources.entry(d.clone()).or_insert((id, axis));
            }
            let (sym, k) = match d {
                Dim::Sym(s) => (s, 1),
                Dim::Mul(a, b) => match (a.as_ref(), b.as_ref()) {
                    (Dim::Const(k), Dim::Sym(s)) | (Dim::Sym(s), Dim::Const(k)) => (s, *k),
                    _ => continue,
                },
                _ => continue,
            };
            self.sym_sources.entry(sym.clone()).or_insert((id, axis, k));
        }
    }

    /// `d` as an i64 `[1]` tensor.
    pub fn dim(&mut self, d: &Dim) -> Result<String, EngineError> {
        if let Some(v) = self.dims.get(d) {
            return Ok(v.clone());
        }
        if let Some(&(id, axis)) = self.dim_sources.get(d) {
            let v = self.axis_len(id, axis);
            self.dims.insert(d.clone(), v.clone());
            return Ok(v);
        }
        Ok(match d {
            Dim::Const(c) => self.b.ints(&[*c]),
            Dim::Sym(s) => self.sym(s)?,
            Dim::Add(x, y) | Dim::Mul(x, y) | Dim::FloorDiv(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                let op = match d {
                    Dim::Add(..) => "Add",
                    Dim::Mul(..) => "Mul",
                    // Dims are never negative, where truncation and floor agree.
                    _ => "Div",
                };
                self.b.op(op, &[&x, &y], vec![])
            }
        })
    }

    fn sym(&mut self, s: &str) -> Result<String, EngineError> {
        if let Some(v) = self.syms.get(s) {
            return Ok(v.clone());
        }
        let &(id, axis, k) = self.sym_sources.get(s).ok_or_else(|| {
            EngineError::Incompatible(format!(
                "onnx export: {}: no value carries symbol `{s}`",
                self.g.name
            ))
        })?;
        let mut v = self.axis_len(id, axis);
        if k != 1 {
            let k = self.b.ints(&[k]);
            v = self.b.op("Div", &[&v, &k], vec![]);
        }
        self.syms.insert(s.to_string(), v.clone());
        Ok(v)
    }

    /// The length of axis `axis` of `id`'s value, as `[1]`.
    fn axis_len(&mut self, id: NodeId, axis: usize) -> String {
        let src = self.values[&id].name.clone();
        let axis = axis as i64;
        self.b.op(
            "Shape",
            &[&src],
            vec![attr_int("start", axis), attr_int("end", axis + 1)],
        )
    }

    /// A 1-D shape tensor for `dims`, runs of constants in one constant.
    pub fn shape(&mut self, dims: &[Dim]) -> Result<String, EngineError> {
        if let Some(c) = dims.iter().map(Dim::as_const).collect::<Option<Vec<_>>>() {
            return Ok(self.b.ints(&c));
        }
        let mut parts = Vec::new();
        let mut run = Vec::new();
        for d in dims {
            match d.as_const() {
                Some(c) => run.push(c),
                None => {
                    if !run.is_empty() {
                        parts.push(self.b.ints(&std::mem::take(&mut run)));
                    }
                    parts.push(self.dim(d)?);
                }
            }
        }
        if !run.is_empty() {
            parts.push(self.b.ints(&run));
        }
        Ok(self.concat(&parts, 0))
    }

    fn concat(&mut self, parts: &[String], axis: i64) -> String {
        if parts.len() == 1 {
            return parts[0].clone();
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.b.op("Concat", &refs, vec![attr_int("axis", axis)])
    }

    fn squeeze_scalar(&mut self, v: &str) -> String {
        let axes = self.b.ints(&[0]);
        self.b.op("Squeeze", &[v, &axes], vec![])
    }

    pub fn unsqueeze(&mut self, v: &str, axes: &[i64]) -> String {
        let axes = self.b.ints(axes);
        self.b.op("Unsqueeze", &[v, &axes], vec![])
    }

    pub fn squeeze(&mut self, v: &str, axes: &[i64]) -> String {
        let axes = self.b.ints(axes);
        self.b.op("Squeeze", &[v, &axes], vec![])
    }

    pub fn cast(&mut self, v: &str, to: DType) -> String {
        self.b.op(
            "Cast",
            &[v],
            vec![attr_int("to", crate::builder::onnx_type(to) as i64)],
        )
    }

    /// `[start, end)` of i64, from `[1]` tensors.
    fn range(&mut self, start: &str, end: &str) -> String {
        let (s, e) = (self.squeeze_scalar(start), self.squeeze_scalar(end));
        let one = self.b.scalar(DType::I64, 1.0);
        self.b.op("Range", &[&s, &e, &one], vec![])
    }

    /// `(a / b, a % b)`; ONNX's integer `Div` truncates, so `a` and `b` must be non-negative.
    fn divmod(&mut self, a: &str, b: &str) -> (String, String) {
        let q = self.b.op("Div", &[a, b], vec![]);
        (q, self.b.op("Mod", &[a, b], vec![]))
    }

    fn slice(&mut self, v: &str, axis: i64, start: &str, end: &str) -> String {
        let axes = self.b.ints(&[axis]);
        self.b.op("Slice", &[v, start, end, &axes], vec![])
    }

    fn slice_const(&mut self, v: &str, axis: i64, start: i64, end: i64) -> String {
        let (s, e) = (self.b.ints(&[start]), self.b.ints(&[end]));
        self.slice(v, axis, &s, &e)
    }

    /// A reduction in opset 17's spelling: ReduceSum takes its axes as an input, ReduceMax and
    /// ReduceMean as an attribute.
    fn reduce(&mut self, op: ReduceOp, x: &str, axes: &[i64], keep_dims: bool) -> String {
        let keep = attr_int("keepdims", keep_dims as i64);
        match op {
            ReduceOp::Sum => {
                let a = self.b.ints(axes);
                self.b.op("ReduceSum", &[x, &a], vec![keep])
            }
            ReduceOp::Max => self
                .b
                .op("ReduceMax", &[x], vec![attr_ints("axes", axes), keep]),
            ReduceOp::Mean => self
                .b
                .op("ReduceMean", &[x], vec![attr_ints("axes", axes), keep]),
        }
    }

    fn f32_const(&mut self, x: f64) -> String {
        self.b.scalar(DType::F32, x)
    }

    fn node(&mut self, id: NodeId) -> Result<Val, EngineError> {
        let g = self.g;
        let node = &g.nodes[id.index()];
        match &node.op {
            Op::Weight { name } => return self.weight(id, name),
            Op::Fold => return self.fold(id),
            _ => {}
        }
        let ins: Vec<Val> = node.inputs.iter().map(|i| self.values[i].clone()).collect();
        let n = |i: usize| ins[i].name.as_str();
        let same = |name: String| Val {
            name,
            dtype: ins[0].dtype,
        };
        let ty = &node.ty;
        let out = match &node.op {
            Op::Input { name } => {
                return Err(err(
                    g,
                    id,
                    format!("input `{name}` is not an input of this part"),
                ))
            }
            Op::CacheRead { name } => {
                return Err(err(
                    g,
                    id,
                    format!("cache `{name}` is not an input of this part"),
                ))
            }
            Op::Weight { .. } | Op::Fold => unreachable!("returned above"),
            Op::Constant { value, dtype } => {
                let x = match *value {
                    Scalar::Float(f) => f,
                    Scalar::Int(i) => i as f64,
                    Scalar::Bool(b) => b as i64 as f64,
                };
                Val {
                    name: self.b.scalar(*dtype, x),
                    dtype: *dtype,
                }
            }
            Op::Iota { len, start, dtype } => {
                let end = len.clone() + start.clone();
                let v = match (start.as_const(), end.as_const()) {
                    (Some(s), Some(e)) => self.b.ints(&(s..e).collect::<Vec<_>>()),
                    _ => {
                        let (s, e) = (self.dim(start)?, self.dim(&end)?);
                        self.range(&s, &e)
                    }
                };
                let v = if *dtype == DType::I64 {
                    v
                } else {
                    self.cast(&v, *dtype)
                };
                Val {
                    name: v,
                    dtype: *dtype,
                }
            }
            Op::MatMul => same(self.matmul(&node.inputs, &ins)),
            Op::FusedMatMul { bias, residual } => {
                let mut v = self.matmul(&node.inputs, &ins);
                if *bias {
                    v = self.b.op("Add", &[&v, n(2)], vec![]);
                }
                if *residual {
                    v = self.b.op("Add", &[&v, n(2 + *bias as usize)], vec![]);
                }
                same(v)
            }
            Op::Unary(u) => same(self.unary(*u, n(0))),
            Op::Binary(op) => {
                let name = match op {
                    BinaryOp::Ne => {
                        let eq = self.b.op("Equal", &[n(0), n(1)], vec![]);
                        self.b.op("Not", &[&eq], vec![])
                    }
                    _ => {
                        let onnx = match op {
                            BinaryOp::Add => "Add",
                            BinaryOp::Sub => "Sub",
                            BinaryOp::Mul => "Mul",
                            BinaryOp::Div => "Div",
                            BinaryOp::Pow => "Pow",
                            BinaryOp::Max => "Max",
                            BinaryOp::Min => "Min",
                            BinaryOp::Eq => "Equal",
                            BinaryOp::Lt => "Less",
                            BinaryOp::Le => "LessOrEqual",
                            BinaryOp::Gt => "Greater",
                            BinaryOp::Ge => "GreaterOrEqual",
                            BinaryOp::And => "And",
                            BinaryOp::Or => "Or",
                            BinaryOp::Ne => unreachable!("handled above"),
                        };
                        self.b.op(onnx, &[n(0), n(1)], vec![])
                    }
                };
                let dtype = if op.is_comparison() || op.is_logical() {
                    DType::Bool
                } else {
                    ins[0].dtype
                };
                Val { name, dtype }
            }
            Op::Select => Val {
                name: self.b.op("Where", &[n(0), n(1), n(2)], vec![]),
                dtype: ins[1].dtype,
            },
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => {
                let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                same(self.reduce(*op, n(0), &axes, *keep_dims))
            }
            Op::Reshape { shape } => {
                let s = self.shape(shape)?;
                same(self.b.op("Reshape", &[n(0), &s], vec![]))
            }
            Op::Transpose { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                same(
                    self.b
                        .op("Transpose", &[n(0)], vec![attr_ints("perm", &perm)]),
                )
            }
            Op::Broadcast { shape } => {
                let s = self.shape(shape)?;
                same(self.b.op("Expand", &[n(0), &s], vec![]))
            }
            Op::Concat { axis } => {
                let parts: Vec<String> = ins.iter().map(|v| v.name.clone()).collect();
                same(self.concat(&parts, *axis as i64))
            }
            Op::Slice { axis, start, end } => {
                let (s, e) = (self.dim(start)?, self.dim(end)?);
                same(self.slice(n(0), *axis as i64, &s, &e))
            }
            Op::Gather { axis } => same(self.b.op(
                "Gather",
                &[n(0), n(1)],
                vec![attr_int("axis", *axis as i64)],
            )),
            Op::Cast { to } => {
                if ins[0].dtype == *to {
                    return Ok(ins[0].clone());
                }
                Val {
                    name: self.cast(n(0), *to),
                    dtype: *to,
                }
            }
            Op::MaskedSelect { .. } => same(self.b.op(
                "Compress",
                &[n(0), n(1)],
                vec![attr_int("axis", 0)],
            )),
            Op::MaskedScatter => same(self.masked_scatter(n(0), n(1), n(2), ty.rank())),
            Op::VisionPositionIds { len } => Val {
                name: self.vision_position_ids(n(0), n(1), len)?,
                dtype: DType::I64,
            },
            Op::SegmentIds { len } => {
                let per_frame = self.frame_patches(n(0));
                let (zero, end) = (self.b.ints(&[0]), self.dim(len)?);
                let idx = self.range(&zero, &end);
                Val {
                    name: self.b.op("Div", &[&idx, &per_frame], vec![]),
                    dtype: DType::I64,
                }
            }
            Op::CacheAppend { name, axis } => {
                let v = same(self.b.op(
                    "Concat",
                    &[n(0), n(1)],
                    vec![attr_int("axis", *axis as i64)],
                ));
                self.appended.push((name.clone(), v.clone()));
                v
            }
            Op::Softmax => same(self.b.op("Softmax", &[n(0)], vec![attr_int("axis", -1)])),
            Op::LayerNorm { eps } => same(self.b.op(
                "LayerNormalization",
                &[n(0), n(1), n(2)],
                vec![attr_int("axis", -1), attr_float("epsilon", *eps as f32)],
            )),
            Op::RmsNorm { eps } => {
                let sq = self.b.op("Mul", &[n(0), n(0)], vec![]);
                let ms = self.reduce(ReduceOp::Mean, &sq, &[-1], true);
                let e = self.f32_const(*eps);
                let r = self.b.op("Add", &[&ms, &e], vec![]);
                let r = self.unary(UnaryOp::Rsqrt, &r);
                let x = self.b.op("Mul", &[n(0), &r], vec![]);
                same(self.b.op("Mul", &[&x, n(1)], vec![]))
            }
            Op::Activation(a) => same(self.activation(*a, n(0))),
            Op::SwiGlu => {
                let s = self.activation(Activation::Silu, n(0));
                same(self.b.op("Mul", &[&s, n(1)], vec![]))
            }
            Op::Rope => same(self.rope(n(0), n(1), n(2), ty)?),
            Op::Attention {
                scale,
                mask,
                rope_q,
                rope_k,
            } => same(self.attention(id, &ins, *scale, *mask, *rope_q, *rope_k)?),
            Op::SpatialMerge { merge } => {
                let mut dims = vec![ty.shape[0].clone(), Dim::Const((merge * merge) as i64)];
                dims.extend(ty.shape[1..].iter().cloned());
                let s = self.shape(&dims)?;
                let r = self.b.op("Reshape", &[n(0), &s], vec![]);
                same(self.reduce(ReduceOp::Mean, &r, &[1], false))
            }
            Op::DiffFramePrune {
                threshold, merge, ..
            } => {
                let row = g.nodes[node.inputs[0].index()].ty.shape[1]
                    .as_const()
                    .ok_or_else(|| err(g, id, "the patch length must be a constant"))?;
                Val {
                    name: self.diff_frame_prune(n(0), n(1), *threshold, *merge as i64, row),
                    dtype: DType::Bool,
                }
            }
        };
        Ok(out)
    }

    fn weight(&mut self, id: NodeId, name: &str) -> Result<Val, EngineError> {
        let shape: Vec<usize> = self.g.nodes[id.index()]
            .ty
            .shape
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| err(self.g, id, "a weight's shape must be constant"))?;
        let dtype = self.g.nodes[id.index()].ty.dtype;
        let stored = if dtype.is_float() { DType::F32 } else { dtype };
        let emit = self.emit;
        let v = self.b.initializer(
            &format!("weight {name} {stored}"),
            name,
            stored,
            &shape,
            || {
                let w = emit.weight(name)?;
                let t = Tensor::from_bytes(w.dtype, &w.shape, w.bytes)
                    .map_err(|e| EngineError::Incompatible(format!("weight `{name}`: {e}")))?;
                Ok(if stored == DType::F32 {
                    bytemuck::cast_slice(&t.to_f32_vec()).to_vec()
                } else {
                    t.to_bytes()
                })
            },
        )?;
        Ok(Val {
            name: v,
            dtype: stored,
        })
    }

    /// The fold's inputs as text: equal in two graphs exactly when the values are, so the
    /// vision graphs of both merge sizes share their weights in the data file.
    fn fold_key(&mut self, id: NodeId) -> String {
        if let Some(k) = self.fold_keys.get(&id) {
            return k.clone();
        }
        let node = &self.g.nodes[id.index()];
        let inputs: Vec<String> = node.inputs.iter().map(|&i| self.fold_key(i)).collect();
        let k = format!("{:?}:{}({})", node.op, node.ty, inputs.join(","));
        self.fold_keys.insert(id, k.clone());
        k
    }

    fn fold(&mut self, id: NodeId) -> Result<Val, EngineError> {
        let g = self.g;
        let ty = &g.nodes[id.index()].ty;
        let shape: Vec<usize> = ty
            .shape
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| err(g, id, "a folded value's shape must be constant"))?;
        let stored = if self.matmul_folds.contains(&id) && ty.dtype.is_float() {
            self.precision.dtype()
        } else if ty.dtype.is_float() {
            DType::F32
        } else {
            ty.dtype
        };
        let key = format!("{} {stored}", self.fold_key(id));
        let name = format!("{}.fold{}", g.name, id.0);
        let emit = self.emit;
        let v = self.b.initializer(&key, &name, stored, &shape, || {
            let t = emit.fold(g, id.index())?;
            Ok(if stored.is_float() {
                Tensor {
                    shape: t.shape.clone(),
                    data: TensorData::from_f32(stored, t.to_f32_vec()),
                }
                .to_bytes()
            } else {
                t.to_bytes()
            })
        })?;
        Ok(Val {
            name: v,
            dtype: stored,
        })
    }

    /// `a × b`; a half-precision weight makes it a half-precision matmul with f32 in and out.
    fn matmul(&mut self, ids: &[NodeId], ins: &[Val]) -> String {
        let (a, b) = (&ins[0], &ins[1]);
        if b.dtype != a.dtype && self.matmul_folds.contains(&ids[1]) {
            let a16 = self.cast(&a.name, b.dtype);
            let p = self.b.op("MatMul", &[&a16, &b.name], vec![]);
            return self.cast(&p, a.dtype);
        }
        self.b.op("MatMul", &[&a.name, &b.name], vec![])
    }

    fn unary(&mut self, u: UnaryOp, x: &str) -> String {
        let op = match u {
            UnaryOp::Neg => "Neg",
            UnaryOp::Exp => "Exp",
            UnaryOp::Log => "Log",
            UnaryOp::Sqrt => "Sqrt",
            UnaryOp::Rsqrt => {
                let s = self.b.op("Sqrt", &[x], vec![]);
                return self.b.op("Reciprocal", &[&s], vec![]);
            }
            UnaryOp::Recip => "Reciprocal",
            UnaryOp::Tanh => "Tanh",
            UnaryOp::Erf => "Erf",
            UnaryOp::Abs => "Abs",
            UnaryOp::Sin => "Sin",
            UnaryOp::Cos => "Cos",
        };
        self.b.op(op, &[x], vec![])
    }

    fn activation(&mut self, a: Activation, x: &str) -> String {
        match a {
            Activation::Silu => {
                let s = self.b.op("Sigmoid", &[x], vec![]);
                self.b.op("Mul", &[x, &s], vec![])
            }
            Activation::GeluErf => {
                let (r2, half, one) = (
                    self.f32_const(std::f64::consts::SQRT_2),
                    self.f32_const(0.5),
                    self.f32_const(1.0),
                );
                let e = self.b.op("Div", &[x, &r2], vec![]);
                let e = self.b.op("Erf", &[&e], vec![]);
                let e = self.b.op("Add", &[&e, &one], vec![]);
                let h = self.b.op("Mul", &[x, &half], vec![]);
                self.b.op("Mul", &[&h, &e], vec![])
            }
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let (c, k, half, one) = (
                    self.f32_const(c),
                    self.f32_const(0.044715),
                    self.f32_const(0.5),
                    self.f32_const(1.0),
                );
                let x2 = self.b.op("Mul", &[x, x], vec![]);
                let x3 = self.b.op("Mul", &[&x2, x], vec![]);
                let t = self.b.op("Mul", &[&x3, &k], vec![]);
                let t = self.b.op("Add", &[x, &t], vec![]);
                let t = self.b.op("Mul", &[&t, &c], vec![]);
                let t = self.b.op("Tanh", &[&t], vec![]);
                let t = self.b.op("Add", &[&t, &one], vec![]);
                let h = self.b.op("Mul", &[x, &half], vec![]);
                self.b.op("Mul", &[&h, &t], vec![])
            }
        }
    }

    /// `base` with its `mask` rows replaced by `src`'s rows in order: row i takes src row
    /// `cumsum(mask)[i] - 1`. `src` gets one extra row so the gather has something to read
    /// when it is empty (the rows read then are the ones `Where` discards).
    fn masked_scatter(&mut self, base: &str, mask: &str, src: &str, rank: usize) -> String {
        // i32 counts: row counts are far below 2³¹, and tract evaluates an i64 CumSum as a
        // symbolic dim.
        let m = self.cast(mask, DType::I32);
        let zero = self.b.scalar(DType::I32, 0.0);
        let c = self.b.op("CumSum", &[&m, &zero], vec![]);
        let one = self.b.scalar(DType::I32, 1.0);
        let idx = self.b.op("Sub", &[&c, &one], vec![]);
        let idx = self.b.op("Max", &[&idx, &zero], vec![]);
        let first = self.slice_const(base, 0, 0, 1);
        let padded = self.concat(&[src.to_string(), first], 0);
        let rows = self
            .b
            .op("Gather", &[&padded, &idx], vec![attr_int("axis", 0)]);
        let axes: Vec<i64> = (1..rank as i64).collect();
        let mask = if axes.is_empty() {
            mask.to_string()
        } else {
            self.unsqueeze(mask, &axes)
        };
        self.b.op("Where", &[&mask, &rows, base], vec![])
    }
}
