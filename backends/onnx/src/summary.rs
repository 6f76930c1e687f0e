//! A text summary of an exported ONNX file (inputs and outputs with shapes and types, op counts,
//! initializers), for snapshot tests and `vl3c export`'s report.

use crate::proto::{data_type, ModelProto, ValueInfoProto};
use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Write;

fn type_name(t: i32) -> &'static str {
    match t {
        data_type::FLOAT => "f32",
        data_type::FLOAT16 => "f16",
        data_type::BFLOAT16 => "bf16",
        data_type::INT32 => "i32",
        data_type::INT64 => "i64",
        data_type::BOOL => "bool",
        _ => "?",
    }
}

fn value(v: &ValueInfoProto) -> String {
    let Some(t) = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) else {
        return format!("{} (not a tensor)", v.name);
    };
    let dims: Vec<String> = t
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| match (&d.dim_value, &d.dim_param) {
            (Some(c), _) => c.to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => "?".into(),
        })
        .collect();
    format!("{} {}[{}]", v.name, type_name(t.elem_type), dims.join(", "))
}

pub fn summarize(bytes: &[u8]) -> Result<String, prost::DecodeError> {
    let m = ModelProto::decode(bytes)?;
    let g = m.graph.unwrap_or_default();
    let mut s = String::new();
    let opsets: Vec<String> = m
        .opset_import
        .iter()
        .map(|o| format!("{}{}", o.domain, o.version))
        .collect();
    let _ = writeln!(
        s,
        "graph {} (ir {}, opset {})",
        g.name,
        m.ir_version,
        opsets.join(",")
    );
    for (what, list) in [("input", &g.input), ("output", &g.output)] {
        for v in list {
            let _ = writeln!(s, "  {what} {}", value(v));
        }
    }
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.node {
        *ops.entry(&n.op_type).or_default() += 1;
    }
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "  {} nodes: {}", g.node.len(), ops.join(", "));
    let external = g
        .initializer
        .iter()
        .filter(|t| !t.external_data.is_empty())
        .count();
    let mut by_type: BTreeMap<&str, i64> = BTreeMap::new();
    for t in &g.initializer {
        *by_type.entry(type_name(t.data_type)).or_default() += t.dims.iter().product::<i64>();
    }
    let by_type: Vec<String> = by_type.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        s,
        "  {} initializers ({external} external), elements by type: {}",
        g.initializer.len(),
        by_type.join(", ")
    );
    Ok(s)
}
