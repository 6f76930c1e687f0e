//! `vl3c inspect --engine ENGINE`: what an engine holds, and with `--plan` what runs each node of
//! each graph, read from the engine's files alone (the manifest is checked; nothing is loaded
//! onto a device and nothing is recompiled).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use vl3c_engine::{Manifest, MANIFEST};
use vl3c_frontends::limits::{read_bounded, read_bounded_to_string, MAX_ENGINE_FILE_BYTES};
use vl3c_ir::{parse_graphs, Graph};

fn read_json(dir: &Path, name: &str, manifest: &Manifest) -> Result<Value> {
    let path = dir.join(name);
    let bytes = read_bounded(&path, MAX_ENGINE_FILE_BYTES, name)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    manifest.check_file(dir, name, &bytes)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: is malformed", path.display()))
}

pub fn run(dir: &Path, plan: bool, json: bool) -> Result<()> {
    let path = dir.join(MANIFEST);
    let what = "an engine manifest (JSON)";
    let text = vl3c_frontends::limits::read_bounded_to_string(
        &path,
        vl3c_frontends::limits::MAX_INDEX_BYTES,
        what,
    )
    .with_context(|| format!("{}: cannot read (not an engine directory?)", path.display()))?;
    // The files the manifest lists are regular and no longer than it says before one is read.
    super::limits::check_engine_dir(dir)?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{}: is malformed", path.display()))?;
    let plan_file = match manifest.target.as_str() {
        "cpu" => "plan.json",
        "cuda" => "cuda/plan.json",
        other => bail!(
            "{}: target `{other}` is not one this vl3c knows",
            path.display()
        ),
    };
    if !plan {
        if json {
            println!("{text}");
            return Ok(());
        }
        println!("engine      {}", dir.display());
        println!(
            "target      {} (format {}, vl3c {})",
            manifest.target, manifest.format_version, manifest.vl3c_version
        );
        if !manifest.cpu_features.is_empty() {
            println!("needs       {}", manifest.cpu_features.join(" "));
        }
        println!("files");
        for (name, f) in &manifest.files {
            println!("  {name:<34}{:>12.1} KiB", f.bytes as f64 / 1024.0);
        }
        println!("plan        vl3c inspect --engine {} --plan", dir.display());
        return Ok(());
    }
    let value = read_json(dir, plan_file, &manifest)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let graphs_text =
        read_bounded_to_string(&dir.join("graphs.vir"), MAX_ENGINE_FILE_BYTES, "graphs.vir")
            .with_context(|| format!("{}: cannot read graphs.vir", dir.display()))?;
    manifest.check_file(dir, "graphs.vir", graphs_text.as_bytes())?;
    let graphs: HashMap<String, Graph> = parse_graphs(&graphs_text)
        .map_err(|e| anyhow::anyhow!("graphs.vir: {e}"))?
        .into_iter()
        .map(|g| (g.name.clone(), g))
        .collect();
    match manifest.target.as_str() {
        "cpu" => print_cpu(&value, &graphs),
        _ => print_cuda(&value, &graphs),
    }
    Ok(())
}

/// `%12 rms_norm` for node 12 of `graph`.
fn node(graphs: &HashMap<String, Graph>, graph: &str, id: &Value) -> String {
    let i = id.as_u64().unwrap_or(u64::MAX) as usize;
    let op = graphs
        .get(graph)
        .and_then(|g| g.nodes.get(i))
        .map_or("?", |n| n.op.mnemonic());
    format!("%{i} {op}")
}

/// The fields of `v` but `skip`, as `key=value`.
fn fields(v: &Value, skip: &[&str]) -> String {
    let Some(o) = v.as_object() else {
        return compact(v);
    };
    o.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", compact(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value as one short token: strings unquoted, extents (`{"Const": 32}`, `{"Sym": "n"}`) as
/// their number or symbol, objects as `{k=v …}`.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.len() == 1 && (o.contains_key("Const") || o.contains_key("Sym")) => {
            compact(o.values().next().expect("one entry"))
        }
        Value::Object(_) => format!("{{{}}}", fields(v, &[])),
        Value::Array(a) => format!("[{}]", a.iter().map(compact).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn print_cpu(plan: &Value, graphs: &HashMap<String, Graph>) {
    let kernels = plan["kernels"].as_array().cloned().unwrap_or_default();
    println!("kernels.o: {} kernels", kernels.len());
    for (i, k) in kernels.iter().enumerate() {
        println!("  k{i} {}", fields(k, &[]));
    }
    let Some(gs) = plan["graphs"].as_object() else {
        return;
    };
    for (name, gp) in gs {
        let claims = gp["claims"].as_array().cloned().unwrap_or_default();
        println!("graph {name}: {} claimed nodes, {} raw weights (the rest runs on the reference executor's code)", claims.len(), gp["weights"].as_array().map_or(0, |w| w.len()));
        for c in &claims {
            println!(
                "  {:<28} {:<16} {}",
                node(graphs, name, &c["node"]),
                c["kind"].as_str().unwrap_or("?"),
                fields(c, &["node", "kind"])
            );
        }
    }
}

fn print_cuda(plan: &Value, graphs: &HashMap<String, Graph>) {
    let instances = plan["instances"].as_array().cloned().unwrap_or_default();
    let inst = |i: &Value| {
        i.as_u64()
            .and_then(|i| instances.get(i as usize))
            .and_then(|x| x["name"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "{} template instances; weights stored: {}",
        instances.len(),
        plan["weights"]
    );
    for g in plan["graphs"].as_array().cloned().unwrap_or_default() {
        let name = g["graph"].as_str().unwrap_or("?");
        let steps = g["steps"].as_array().cloned().unwrap_or_default();
        println!(
            "graph {name}: {} steps, {} stored tensors",
            steps.len(),
            g["stored"].as_object().map_or(0, |s| s.len())
        );
        for s in &steps {
            let what = match s["kind"].as_str().unwrap_or("?") {
                "launch" => format!(
                    "launch {} {} → {}",
                    inst(&s["instance"]),
                    fields(&s["inputs"], &[]),
                    compact(&s["output"])
                ),
                "alias" => format!("alias of %{}", s["of"]),
                "matmul" => {
                    let gemv = if s["gemv"].is_null() {
                        String::new()
                    } else {
                        format!(" (one row: gemv {})", inst(&s["gemv"]))
                    };
                    format!(
                        "cuBLASLt {} inputs={}{gemv}",
                        fields(&s["gemm"], &["a", "b", "c", "d", "operands"]),
                        compact(&s["inputs"])
                    )
                }
                "attention" => {
                    let decode = if s["decode"].is_null() {
                        String::new()
                    } else {
                        format!(", decode {}", inst(&s["decode"]))
                    };
                    format!(
                        "attention prefill {}{decode} {}",
                        inst(&s["prefill"]),
                        fields(&s["inputs"], &[])
                    )
                }
                other => other.to_string(),
            };
            println!("  {:<28} {what}", node(graphs, name, &s["node"]));
        }
    }
}
