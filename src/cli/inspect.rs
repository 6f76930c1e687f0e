use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::{expected_weights, Checkpoint, Part};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["model", "engine"])))]
pub struct Args {
    /// Checkpoint directory: its architecture, parameters, dtypes and IR op counts.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Engine directory written by `vl3c compile`: its target and files.
    #[arg(long)]
    engine: Option<PathBuf>,
    /// With --engine: what runs each node of each graph (CPU: the claims and kernels; CUDA: the
    /// steps, template instances, cuBLASLt calls and stored tensors).
    #[arg(long, requires = "engine")]
    plan: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.plan && args.engine.is_none() {
        anyhow::bail!("--plan shows an engine's plan: give --engine DIR");
    }
    let model = match (&args.model, &args.engine) {
        (_, Some(engine)) => return crate::cli::inspect_engine::run(engine, args.plan, args.json),
        (Some(model), None) => model.clone(),
        (None, None) => anyhow::bail!("give --model DIR or --engine DIR"),
    };
    let ckpt = Checkpoint::open(&model)?;
    let cfg = ckpt.config();
    let declared = cfg.declared_dtype;
    let graphs = ModelGraphs::lower(cfg, &|name| ckpt.weight_dtype(name).unwrap_or(declared))?;

    let mut params: BTreeMap<&str, u64> = BTreeMap::new();
    for w in expected_weights(cfg) {
        let part = match w.part {
            Part::Vision => "vision",
            Part::Projector => "projector",
            Part::Llm => "llm",
        };
        *params.entry(part).or_default() += w.shape.iter().product::<usize>() as u64;
    }
    let total: u64 = params.values().sum();
    let dtypes: BTreeMap<String, usize> = ckpt
        .dtypes()
        .into_iter()
        .map(|(d, n)| (d.to_string(), n))
        .collect();
    let ops: BTreeMap<&str, BTreeMap<&str, usize>> = graphs
        .all()
        .iter()
        .map(|g| (g.name.as_str(), g.op_counts()))
        .collect();
    let (t, v) = (&cfg.text, &cfg.vision);

    if args.json {
        let summary = json!({
            "layout": format!("{:?}", cfg.layout).to_lowercase(),
            "text": {"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size, "layers": t.num_hidden_layers,
                     "heads": t.num_attention_heads, "kv_heads": t.num_key_value_heads, "head_dim": t.head_dim,
                     "vocab_size": t.vocab_size, "rope_theta": t.rope_theta},
            "vision": {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size, "layers": v.num_hidden_layers,
                       "heads": v.num_attention_heads, "head_dim": v.head_dim, "patch_size": v.patch_size},
            "image_token_id": cfg.image_token_id,
            "video_token_id": cfg.video_token_id,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "parameters": {"total": total, "by_part": params},
            "dtypes": dtypes,
            "checkpoint_bytes": ckpt.total_bytes(),
            "ops": ops,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("checkpoint  {}", model.display());
    println!(
        "layout      {:?} ({} file(s), {:.1} MiB)",
        cfg.layout,
        ckpt.files().len(),
        ckpt.total_bytes() as f64 / (1 << 20) as f64
    );
    println!(
        "llm         {} layers, hidden {}, intermediate {}, {} heads / {} kv heads × {}, vocab {}, rope θ {}, lm_head {}",
        t.num_hidden_layers,
        t.hidden_size,
        t.intermediate_size,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim,
        t.vocab_size,
        t.rope_theta,
        if cfg.tie_word_embeddings { "tied" } else { "untied" }
    );
    println!(
        "vision      {} layers, hidden {}, intermediate {}, {} heads × {}, patch {}",
        v.num_hidden_layers,
        v.hidden_size,
        v.intermediate_size,
        v.num_attention_heads,
        v.head_dim,
        v.patch_size
    );
    let video = cfg
        .video_token_id
        .map_or("none".to_string(), |id| id.to_string());
    println!("tokens      image {}, video {video}", cfg.image_token_id);
    println!("parameters  {} total", group_digits(total));
    for (part, n) in &params {
        println!(
            "  {part:<10}{:>16}  ({:.1}%)",
            group_digits(*n),
            100.0 * *n as f64 / total.max(1) as f64
        );
    }
    println!(
        "dtypes      {}",
        dtypes
            .iter()
            .map(|(d, n)| format!("{d}: {n} tensors"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("IR ops");
    for (graph, counts) in &ops {
        let total: usize = counts.values().sum();
        let list: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!("  {graph:<10}{total:>6} nodes: {}", list.join(", "));
    }
    Ok(())
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
