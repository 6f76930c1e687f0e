use crate::infer::infer_type;
use crate::{Bounds, DType, Dim, Op};
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        TensorType {
            dtype,
            shape: shape.iter().map(Dim::simplify).collect(),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape with every dim evaluated.
    pub fn concrete_shape(
        &self,
        env: &HashMap<String, i64>,
    ) -> Result<Vec<usize>, crate::DimEvalError> {
        self.shape
            .iter()
            .map(|d| {
                let v = d.eval(env)?;
                usize::try_from(v)
                    .map_err(|_| crate::DimEvalError::Overflow(format!("{d} = {v} is negative")))
            })
            .collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub ty: TensorType,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolDecl {
    pub name: String,
    pub bounds: Bounds,
}

/// A dataflow graph in SSA form: every node's operands precede it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub symbols: Vec<SymbolDecl>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, NodeId)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrError {
    pub node: Option<NodeId>,
    pub op: String,
    pub message: String,
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "{n} ({}): {}", self.op, self.message),
            None => write!(f, "{}: {}", self.op, self.message),
        }
    }
}

impl std::error::Error for IrError {}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn declare_symbol(&mut self, name: &str, min: i64, max: i64) -> Dim {
        match self.symbols.iter_mut().find(|s| s.name == name) {
            Some(s) => s.bounds = Bounds { min, max },
            None => self.symbols.push(SymbolDecl {
                name: name.to_string(),
                bounds: Bounds { min, max },
            }),
        }
        Dim::sym(name)
    }

    pub fn symbol_bounds(&self, name: &str) -> Option<Bounds> {
        self.symbols
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.bounds)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.nodes[id.index()].ty
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Adds a node whose type is inferred from its operands.
    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, IrError> {
        let id = NodeId(self.nodes.len() as u32);
        let err = |message: String| IrError {
            node: Some(id),
            op: op.mnemonic().to_string(),
            message,
        };
        if op.is_source() {
            return Err(err(
                "source ops carry a declared type: use `add_source`".into()
            ));
        }
        if let Some(bad) = inputs.iter().find(|i| i.index() >= self.nodes.len()) {
            return Err(err(format!(
                "operand {bad} is not defined before this node"
            )));
        }
        let operand_types: Vec<&TensorType> = inputs.iter().map(|i| self.ty(*i)).collect();
        let ty = infer_type(&op, &operand_types).map_err(err)?;
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            ty,
        });
        Ok(id)
    }

    /// Adds an input, weight or cache read with its declared type.
    pub fn add_source(&mut self, op: Op, ty: TensorType) -> Result<NodeId, IrError> {
        let id = NodeId(self.nodes.len() as u32);
        if !op.is_source() {
            return Err(IrError {
                node: Some(id),
                op: op.mnemonic().into(),
                message: "not a source op".into(),
            });
        }
        let ty = TensorType::new(ty.dtype, ty.shape);
        self.nodes.push(Node {
            op,
            inputs: Vec::new(),
            ty,
        });
        Ok(id)
    }

    pub fn set_output(&mut self, name: impl Into<String>, id: NodeId) {
        self.outputs.push((name.into(), id));
    }

    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    pub fn inputs(&self) -> impl Iterator<Item = (NodeId, &str, &TensorType)> {
        self.node_ids().filter_map(|id| match &self.node(id).op {
            Op::Input { name } => Some((id, name.as_str(), self.ty(id))),
            _ => None,
        })
    }

    pub fn weights(&self) -> impl Iterator<Item = (NodeId, &str, &TensorType)> {
        self.node_ids().filter_map(|id| match &self.node(id).op {
            Op::Weight { name } => Some((id, name.as_str(), self.ty(id))),
            _ => None,
        })
    }

    /// How many nodes of each mnemonic the graph holds.
    pub fn op_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *counts.entry(n.op.mnemonic()).or_insert(0) += 1;
        }
        counts
    }

    /// For each node, the index of the last node that reads it (outputs live to the end).
    pub fn last_uses(&self) -> Vec<usize> {
        let mut last: Vec<usize> = (0..self.nodes.len()).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                last[inp.index()] = i;
            }
        }
        for (_, o) in &self.outputs {
            last[o.index()] = usize::MAX;
        }
        last
    }
}
