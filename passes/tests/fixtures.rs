//! Every fixture checkpoint's graphs, optimized: exactly one fused attention per attention layer
//! (vision graphs: one per encoder layer; prefill/decode: one per decoder layer), no softmax or
//! max-reduction left, and the norms and activations found. Supersedes the old smoke test.

use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_passes::{cost::Target, optimize, Budget};

fn count(g: &vl3c_ir::Graph, op: &str) -> usize {
    g.op_counts().get(op).copied().unwrap_or(0)
}

#[test]
fn one_attention_per_layer_in_every_fixture() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    for dir in dirs {
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        let graphs = ModelGraphs::from_config(&cfg).unwrap();
        let fixture = dir.file_name().unwrap().to_string_lossy().to_string();
        for g in graphs.all() {
            let (opt, stats) = optimize(g, &Target::CPU, &Budget::default()).unwrap();
            let layers = match g.name.as_str() {
                "vision_m1" | "vision_m2" => cfg.vision.num_hidden_layers,
                "prefill" | "decode" => cfg.text.num_hidden_layers,
                _ => 0,
            };
            let counts = opt.op_counts();
            eprintln!(
                "{fixture}/{}: {} iterations ({}), {:.2}s: {counts:?}",
                g.name, stats.iterations, stats.stop_reason, stats.saturate_seconds
            );
            assert_eq!(count(&opt, "attention"), layers, "{fixture}/{}", g.name);
            for gone in ["softmax", "reduce_max", "exp", "rsqrt", "tanh", "erf"] {
                assert_eq!(count(&opt, gone), 0, "{fixture}/{}: {gone} left", g.name);
            }
            let merges = if g.name == "vision_m2" { 1 } else { 0 };
            assert_eq!(
                count(&opt, "spatial_merge"),
                merges,
                "{fixture}/{}: the 2×2 merge is one op",
                g.name
            );
            let norms = count(&opt, "layer_norm") + count(&opt, "rms_norm");
            let expected_norms = if layers > 0 { 2 * layers + 1 } else { 0 };
            assert_eq!(norms, expected_norms, "{fixture}/{}", g.name);
        }
    }
}
