//! Graphviz rendering of a graph, for eyeballing what a frontend or pass produced.

use crate::text::{attrs, quote};
use crate::{Graph, Op};
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One DOT node per IR node (labelled `%id mnemonic`, its names/attributes and its type), an edge
/// from each operand to its user, and a house-shaped node per graph output.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    out.push_str("  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for id in g.node_ids() {
        let node = g.node(id);
        let mut label = format!("{id} {}", node.op.mnemonic());
        match &node.op {
            Op::Input { name } | Op::Weight { name } | Op::CacheRead { name } => {
                let _ = write!(label, " {}", quote(name));
            }
            Op::Constant { value, .. } => {
                let _ = write!(label, " {value:?}");
            }
            op => {
                for (k, v) in attrs(op) {
                    let _ = write!(label, "\n{k} = {v}");
                }
            }
        }
        let _ = write!(label, "\n{}", node.ty);
        let style = match node.op {
            Op::Input { .. } => ", shape=invhouse, style=filled, fillcolor=\"#cce5ff\"",
            Op::Weight { .. } => ", style=filled, fillcolor=\"#e0e0e0\"",
            Op::CacheRead { .. } | Op::CacheAppend { .. } => {
                ", style=filled, fillcolor=\"#fff2b3\""
            }
            Op::Constant { .. } => ", shape=ellipse",
            _ => "",
        };
        let _ = writeln!(out, "  n{} [label=\"{}\"{style}];", id.0, escape(&label));
        for operand in &node.inputs {
            let _ = writeln!(out, "  n{} -> n{};", operand.0, id.0);
        }
    }
    for (i, (name, id)) in g.outputs.iter().enumerate() {
        let label = escape(&format!("output {}", quote(name)));
        let _ = writeln!(
            out,
            "  out{i} [label=\"{label}\", shape=house, style=filled, fillcolor=\"#c8f0c8\"];"
        );
        let _ = writeln!(out, "  n{} -> out{i};", id.0);
    }
    out.push_str("}\n");
    out
}
