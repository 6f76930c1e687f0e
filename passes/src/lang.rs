//! The e-graph language: IR ops over e-class children.
//!
//! Attributes that depend on rank are normalized so that one pattern matches every rank: an
//! axis equal to the operand's last axis is stored as [`LAST`], and a slice of the lower or
//! upper half of the last axis as [`half`]/[`end`] markers. [`resolve`] turns them back into
//! concrete attributes from the operand types.

use egg::{Id, Language};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use vl3c_ir::{Dim, Op, ReduceOp, TensorType};

/// The last axis of the first operand.
pub const LAST: usize = usize::MAX;

/// Half of the first operand's last dim.
pub fn half() -> Dim {
    Dim::sym("__half")
}

/// The first operand's last dim.
pub fn end() -> Dim {
    Dim::sym("__end")
}

/// An op keyed by its signature; sources also carry their declared type.
#[derive(Clone, Debug)]
pub struct Key {
    sig: String,
    pub op: Op,
    pub ty: Option<TensorType>,
}

impl Key {
    pub fn new(op: Op, ty: Option<TensorType>) -> Key {
        let sig = match &ty {
            Some(t) => format!("{} : {t}", op.signature()),
            None => op.signature(),
        };
        Key { sig, op, ty }
    }

    pub fn sig(&self) -> &str {
        &self.sig
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.sig == other.sig
    }
}
impl Eq for Key {}
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sig.hash(state)
    }
}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sig.cmp(&other.sig)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    pub key: Key,
    pub children: Vec<Id>,
}

impl ENode {
    pub fn new(op: Op, children: Vec<Id>) -> ENode {
        ENode {
            key: Key::new(op, None),
            children,
        }
    }

    pub fn op(&self) -> &Op {
        &self.key.op
    }
}

impl Language for ENode {
    type Discriminant = String;

    fn discriminant(&self) -> String {
        self.key.sig.clone()
    }

    fn matches(&self, other: &Self) -> bool {
        self.key == other.key && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl std::fmt::Display for ENode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key.sig)
    }
}

/// The rank-free form of an op given its operand types.
pub fn normalize(op: &Op, ins: &[&TensorType]) -> Op {
    let Some(first) = ins.first() else {
        return op.clone();
    };
    let last = first.rank().wrapping_sub(1);
    match op {
        Op::Reduce {
            op: r,
            axes,
            keep_dims,
        } if axes.as_slice() == [last] => Op::Reduce {
            op: *r,
            axes: vec![LAST],
            keep_dims: *keep_dims,
        },
        Op::Concat { axis } if *axis == last => Op::Concat { axis: LAST },
        Op::Slice {
            axis,
            start,
            end: stop,
        } if *axis == last => {
            let d = first.shape[last].as_const();
            let h = d.filter(|d| d % 2 == 0).map(|d| d / 2);
            match (start.as_const(), stop.as_const(), h) {
                (Some(0), Some(e), Some(h)) if e == h => Op::Slice {
                    axis: LAST,
                    start: Dim::Const(0),
                    end: half(),
                },
                (Some(s), Some(e), Some(h)) if s == h && Some(e) == d => Op::Slice {
                    axis: LAST,
                    start: half(),
                    end: end(),
                },
                _ => Op::Slice {
                    axis: LAST,
                    start: start.clone(),
                    end: stop.clone(),
                },
            }
        }
        _ => op.clone(),
    }
}

/// The concrete op for operands of these types: undoes [`normalize`].
pub fn resolve(op: &Op, ins: &[&TensorType]) -> Op {
    let Some(first) = ins.first() else {
        return op.clone();
    };
    let last = first.rank().wrapping_sub(1);
    let subst = |d: &Dim| -> Dim {
        let e = first.shape.get(last).cloned().unwrap_or(Dim::Const(0));
        if *d == half() {
            e.floor_div(2i64)
        } else if *d == end() {
            e
        } else {
            d.clone()
        }
    };
    match op {
        Op::Reduce {
            op: r,
            axes,
            keep_dims,
        } if axes.as_slice() == [LAST] => Op::Reduce {
            op: *r,
            axes: vec![last],
            keep_dims: *keep_dims,
        },
        Op::Concat { axis: LAST } => Op::Concat { axis: last },
        Op::Slice {
            axis: LAST,
            start,
            end: stop,
        } => Op::Slice {
            axis: last,
            start: subst(start),
            end: subst(stop),
        },
        _ => op.clone(),
    }
}

/// Parses the op names used in rule patterns: IR mnemonics of attribute-free ops, plus
/// `reduce_{sum,max,mean}:last` (last axis, keep dims), `concat:last`, `slice:lo`/`slice:hi`
/// (halves of the last axis), `transpose:1,0,2`, `fused_matmul[:b][r]`, `spatial_merge:M`.
pub fn op_from_pattern(name: &str) -> Option<Op> {
    use vl3c_ir::{Activation, BinaryOp, UnaryOp};
    if let Some(u) = UnaryOp::from_mnemonic(name) {
        return Some(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::from_mnemonic(name) {
        return Some(Op::Binary(b));
    }
    if let Some(a) = Activation::from_mnemonic(name) {
        return Some(Op::Activation(a));
    }
    let (base, arg) = name.split_once(':').unwrap_or((name, ""));
    Some(match (base, arg) {
        ("matmul", "") => Op::MatMul,
        ("select", "") => Op::Select,
        ("masked_scatter", "") => Op::MaskedScatter,
        ("softmax", "") => Op::Softmax,
        ("swiglu", "") => Op::SwiGlu,
        ("rope", "") => Op::Rope,
        ("fold", "") => Op::Fold,
        ("reduce_sum" | "reduce_max" | "reduce_mean", "last") => Op::Reduce {
            op: ReduceOp::from_mnemonic(base)?,
            axes: vec![LAST],
            keep_dims: true,
        },
        ("concat", "last") => Op::Concat { axis: LAST },
        ("slice", "lo") => Op::Slice {
            axis: LAST,
            start: Dim::Const(0),
            end: half(),
        },
        ("slice", "hi") => Op::Slice {
            axis: LAST,
            start: half(),
            end: end(),
        },
        ("transpose", perm) => Op::Transpose {
            perm: perm
                .split(',')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?,
        },
        ("fused_matmul", flags) if flags.chars().all(|c| c == 'b' || c == 'r') => Op::FusedMatMul {
            bias: flags.contains('b'),
            residual: flags.contains('r'),
        },
        ("spatial_merge", m) => Op::SpatialMerge {
            merge: m.parse().ok()?,
        },
        _ => return None,
    })
}

impl egg::FromOp for ENode {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let op =
            op_from_pattern(op).ok_or_else(|| format!("`{op}` is not an op usable in patterns"))?;
        Ok(ENode::new(op, children))
    }
}
