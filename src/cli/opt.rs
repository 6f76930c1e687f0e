use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::{Checkpoint, ModelConfig};
use vl3c_passes::cost::Target;
use vl3c_passes::{optimize_graph, Budget, Stats};

const GRAPHS: [&str; 5] = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (with --config-only, just a directory holding config.json).
    #[arg(long)]
    model: PathBuf,
    /// Read only config.json: weights are assumed stored in the config's dtype.
    #[arg(long)]
    config_only: bool,
    /// Cost model the extraction minimizes: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Optimize only this graph: vision_m1, vision_m2, projector, prefill or decode.
    #[arg(long)]
    graph: Option<String>,
    /// Print each graph's IR text before optimization.
    #[arg(long)]
    print_before: bool,
    /// Print each optimized graph's IR text.
    #[arg(long)]
    print_after: bool,
    /// Write the optimized graphs as Graphviz to FILE: one `digraph` per graph, all in this one
    /// file (`dot -Tsvg -O FILE` renders each to its own SVG).
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The graphs of a model directory: from config.json alone, or with the checkpoint's weight dtypes.
pub fn lower(dir: &Path, config_only: bool) -> Result<ModelGraphs> {
    Ok(if config_only {
        ModelGraphs::from_config(&ModelConfig::from_dir(dir)?)?
    } else {
        let ckpt = Checkpoint::open(dir)?;
        let declared = ckpt.config().declared_dtype;
        ModelGraphs::lower(ckpt.config(), &|name| {
            ckpt.weight_dtype(name).unwrap_or(declared)
        })?
    })
}

pub fn target(name: &str) -> Result<Target> {
    Target::by_name(name)
        .with_context(|| format!("unknown --target `{name}` (expected cpu, cuda or tensorrt)"))
}

/// One optimized graph and what it took.
pub struct Optimized {
    pub name: &'static str,
    pub stats: Stats,
    pub seconds: f64,
}

/// Optimizes the named graphs in place with the scheduler; a progress bar appears on stderr
/// once the work has taken more than a second (and stderr is a terminal).
pub fn optimize_model(
    graphs: &mut ModelGraphs,
    names: &[&'static str],
    target: &Target,
) -> Result<Vec<Optimized>> {
    let start = Instant::now();
    let bar = ProgressBar::with_draw_target(Some(names.len() as u64), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "optimizing {msg:>9} [{bar:30}] {pos}/{len} graphs, {elapsed}",
        )
        .unwrap(),
    );
    let mut shown = false;
    let mut out = Vec::new();
    for &name in names {
        if !shown && start.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_message(name);
        let t = Instant::now();
        let g = graphs.get_mut(name).expect("a graph of ModelGraphs");
        let (opt, stats) = optimize_graph(g, target, &Budget::default())?;
        *g = opt;
        out.push(Optimized {
            name,
            stats,
            seconds: t.elapsed().as_secs_f64(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn counts(graphs: &ModelGraphs, names: &[&str]) -> BTreeMap<String, usize> {
    let mut total = BTreeMap::new();
    for g in graphs
        .all()
        .into_iter()
        .filter(|g| names.contains(&g.name.as_str()))
    {
        for (op, n) in g.op_counts() {
            *total.entry(op.to_string()).or_default() += n;
        }
    }
    total
}

pub fn run(args: Args) -> Result<()> {
    let target = target(&args.target)?;
    let names: Vec<&'static str> = match &args.graph {
        Some(g) => vec![*GRAPHS.iter().find(|n| **n == g.as_str()).with_context(|| {
            format!(
                "unknown --graph `{g}` (expected one of {})",
                GRAPHS.join(", ")
            )
        })?],
        None => GRAPHS.to_vec(),
    };
    let start = Instant::now();
    let before = lower(&args.model, args.config_only)?;
    let lowered = start.elapsed().as_secs_f64();
    if args.print_before {
        for g in before
            .all()
            .into_iter()
            .filter(|g| names.contains(&g.name.as_str()))
        {
            print!("{g}");
        }
    }
    let mut after = before.clone();
    let results = optimize_model(&mut after, &names, &target)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.print_after {
        for g in after
            .all()
            .into_iter()
            .filter(|g| names.contains(&g.name.as_str()))
        {
            print!("{g}");
        }
    }
    if let Some(path) = &args.dot {
        let text: String = after
            .all()
            .into_iter()
            .filter(|g| names.contains(&g.name.as_str()))
            .map(vl3c_ir::to_dot)
            .collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let (ops_before, ops_after) = (counts(&before, &names), counts(&after, &names));
    let fused_attention = ops_after.get("attention").copied().unwrap_or(0);
    let sum = |f: fn(&Stats) -> f64| results.iter().map(|r| f(&r.stats)).sum::<f64>();
    let phases = json!({
        "lower": lowered,
        "build": sum(|s| s.build_seconds),
        "saturate": sum(|s| s.saturate_seconds),
        "extract": sum(|s| s.extract_seconds),
        "stitch": sum(|s| s.stitch_seconds),
    });
    let (eclasses, enodes) = (
        results.iter().map(|r| r.stats.eclasses).sum::<usize>(),
        results.iter().map(|r| r.stats.enodes).sum::<usize>(),
    );
    if args.json {
        let graphs: BTreeMap<&str, serde_json::Value> = results
            .iter()
            .map(|r| {
                let s = &r.stats;
                let b: usize = before.all().iter().find(|g| g.name == r.name).map_or(0, |g| g.nodes.len());
                let a: usize = after.all().iter().find(|g| g.name == r.name).map_or(0, |g| g.nodes.len());
                (r.name, json!({"nodes_before": b, "nodes_after": a, "eclasses": s.eclasses, "enodes": s.enodes,
                    "windows": s.windows, "windows_optimized": s.windows_optimized, "seconds": r.seconds}))
            })
            .collect();
        let summary = json!({
            "ops_before": ops_before,
            "ops_after": ops_after,
            "fused_attention": fused_attention,
            "eclasses": eclasses,
            "enodes": enodes,
            "seconds": seconds,
            "target": target.name,
            "phases": phases,
            "graphs": graphs,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    if args.print_before || args.print_after {
        println!();
    }
    println!("target {}, lowering {lowered:.3}s", target.name);
    for r in &results {
        let s = &r.stats;
        let b = before
            .all()
            .iter()
            .find(|g| g.name == r.name)
            .map_or(0, |g| g.nodes.len());
        let g = after
            .all()
            .into_iter()
            .find(|g| g.name == r.name)
            .expect("optimized graph exists");
        let att = g.op_counts().get("attention").copied().unwrap_or(0);
        println!(
            "  {:<10}{b:>7} → {:>6} nodes, {att} fused attention, {} windows ({} saturated), e-graph {} classes / {} nodes, \
             build {:.3}s saturate {:.3}s extract {:.3}s stitch {:.3}s",
            r.name,
            g.nodes.len(),
            s.windows,
            s.windows_optimized,
            s.eclasses,
            s.enodes,
            s.build_seconds,
            s.saturate_seconds,
            s.extract_seconds,
            s.stitch_seconds
        );
    }
    println!("total {seconds:.3}s, {fused_attention} fused attention, e-graphs {eclasses} classes / {enodes} nodes");
    if let Some(path) = &args.dot {
        println!("wrote {}", path.display());
    }
    if names.is_empty() {
        bail!("no graph selected");
    }
    Ok(())
}
