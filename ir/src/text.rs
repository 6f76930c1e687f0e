//! The text form of graphs, parsed back by `parse.rs`:
//!
//! ```text
//! graph vision_m1 {
//!   sym n in [1, 1024]
//!   %0 = input "pixel_values" : f32[4*n, 588]
//!   %1 = weight "proj.weight" : f32[588, 32]
//!   %2 = matmul %0, %1 : f32[4*n, 32]
//!   %3 = reduce_mean %2 {axes = [1], keep_dims = true} : f32[4*n, 1]
//!   output "features" = %3
//! }
//! ```
//!
//! Dtype-carrying attributes (`const`, `iota`, `cast`) take their dtype from the result type.

use crate::{Dim, Graph, Op, Scalar};
use std::fmt::{self, Write};

/// `s` quoted, with `"`, `\` and control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Shortest representation that reads back to the same bits (`inf`, `-inf`, `nan` spelled out).
pub(crate) fn fmt_float(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{x:?}")
}

fn fmt_scalar(v: &Scalar) -> String {
    match v {
        Scalar::Float(x) => fmt_float(*x),
        Scalar::Int(i) => i.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

fn fmt_list<T: fmt::Display>(xs: &[T]) -> String {
    format!(
        "[{}]",
        xs.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `(key, value)` pairs of an op's attributes as written in braces; empty for ops without any.
pub(crate) fn attrs(op: &Op) -> Vec<(&'static str, String)> {
    let dim = |d: &Dim| d.to_string();
    match op {
        Op::Iota { len, start, .. } => vec![("len", dim(len)), ("start", dim(start))],
        Op::Reduce {
            axes, keep_dims, ..
        } => vec![
            ("axes", fmt_list(axes)),
            ("keep_dims", keep_dims.to_string()),
        ],
        Op::Reshape { shape } | Op::Broadcast { shape } => vec![("shape", fmt_list(shape))],
        Op::Transpose { perm } => vec![("perm", fmt_list(perm))],
        Op::Concat { axis } | Op::Gather { axis } => vec![("axis", axis.to_string())],
        Op::Slice { axis, start, end } => vec![
            ("axis", axis.to_string()),
            ("start", dim(start)),
            ("end", dim(end)),
        ],
        Op::MaskedSelect { len } | Op::VisionPositionIds { len } | Op::SegmentIds { len } => {
            vec![("len", dim(len))]
        }
        Op::CacheAppend { name, axis } => vec![("name", quote(name)), ("axis", axis.to_string())],
        Op::LayerNorm { eps } | Op::RmsNorm { eps } => vec![("eps", fmt_float(*eps))],
        Op::FusedMatMul { bias, residual } => vec![
            ("bias", bias.to_string()),
            ("residual", residual.to_string()),
        ],
        Op::Attention {
            scale,
            mask,
            rope_q,
            rope_k,
        } => vec![
            ("scale", fmt_float(*scale)),
            ("mask", mask.to_string()),
            ("rope_q", rope_q.to_string()),
            ("rope_k", rope_k.to_string()),
        ],
        Op::SpatialMerge { merge } => vec![("merge", merge.to_string())],
        Op::DiffFramePrune {
            threshold,
            merge,
            len,
        } => {
            vec![
                ("threshold", fmt_float(*threshold)),
                ("merge", merge.to_string()),
                ("len", dim(len)),
            ]
        }
        _ => Vec::new(),
    }
}

/// The part of a node line between the mnemonic and the type: names, literal, operands, attributes.
pub(crate) fn node_body(g: &Graph, id: crate::NodeId) -> String {
    let node = g.node(id);
    let mut out = String::new();
    match &node.op {
        Op::Input { name } | Op::Weight { name } | Op::CacheRead { name } => {
            out.push(' ');
            out.push_str(&quote(name));
        }
        Op::Constant { value, .. } => {
            out.push(' ');
            out.push_str(&fmt_scalar(value));
        }
        _ => {}
    }
    for (i, operand) in node.inputs.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        let _ = write!(out, "{operand}");
    }
    let attrs = attrs(&node.op);
    if !attrs.is_empty() {
        let body: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let _ = write!(out, " {{{}}}", body.join(", "));
    }
    out
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if is_ident(&self.name) {
            self.name.clone()
        } else {
            quote(&self.name)
        };
        writeln!(f, "graph {name} {{")?;
        for s in &self.symbols {
            writeln!(
                f,
                "  sym {} in [{}, {}]",
                s.name, s.bounds.min, s.bounds.max
            )?;
        }
        for id in self.node_ids() {
            let node = self.node(id);
            writeln!(
                f,
                "  {id} = {}{} : {}",
                node.op.mnemonic(),
                node_body(self, id),
                node.ty
            )?;
        }
        for (name, id) in &self.outputs {
            writeln!(f, "  output {} = {id}", quote(name))?;
        }
        f.write_str("}\n")
    }
}

impl Op {
    /// The op as the text form writes it without operands or type: mnemonic, literal or name,
    /// and attributes, e.g. `reduce_max {axes = [2], keep_dims = true}`.
    pub fn signature(&self) -> String {
        let mut out = self.mnemonic().to_string();
        match self {
            Op::Input { name } | Op::Weight { name } | Op::CacheRead { name } => {
                out.push(' ');
                out.push_str(&quote(name));
            }
            Op::Constant { value, dtype } => {
                let _ = write!(out, " {}:{dtype}", fmt_scalar(value));
            }
            Op::Iota { dtype, .. } | Op::Cast { to: dtype } => {
                let _ = write!(out, ":{dtype}");
            }
            _ => {}
        }
        let attrs = attrs(self);
        if !attrs.is_empty() {
            let list: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let _ = write!(out, " {{{}}}", list.join(", "));
        }
        out
    }
}
