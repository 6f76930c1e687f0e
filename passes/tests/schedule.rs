//! The scheduler against whole-graph optimization: same ops, same values, one saturation per
//! distinct layer; and its layers, found from the graph's structure, against the weight names.

use std::path::{Path, PathBuf};
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_ir::{Graph, Op};
use vl3c_passes::layers::{weight_anchors, Anchor};
use vl3c_passes::schedule::{plan, plan_with, Level};
use vl3c_passes::{cost::Target, optimize, optimize_graph, Budget};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").exists())
        .collect();
    assert!(
        !dirs.is_empty(),
        "no fixture configs under {}",
        root.display()
    );
    dirs.sort();
    dirs
}

/// The fixtures, the real 2B / 7B configurations, and a one-layer model.
fn all_configs() -> Vec<(String, ModelConfig)> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs");
    let dirs = fixtures()
        .into_iter()
        .chain(["videollama3-2b", "videollama3-7b"].map(|c| examples.join(c)));
    let mut configs: Vec<_> = dirs
        .map(|d| {
            (
                d.file_name().unwrap().to_string_lossy().to_string(),
                ModelConfig::from_dir(&d).unwrap(),
            )
        })
        .collect();
    let mut one = configs[0].1.clone();
    (one.vision.num_hidden_layers, one.text.num_hidden_layers) = (1, 1);
    configs.push((format!("{} with one layer", configs[0].0), one));
    configs
}

/// The transformer layers a graph has.
fn layer_count(cfg: &ModelConfig, g: &Graph) -> usize {
    match g.name.as_str() {
        "vision_m1" | "vision_m2" => cfg.vision.num_hidden_layers,
        "prefill" | "decode" => cfg.text.num_hidden_layers,
        _ => 0,
    }
}

/// The oracle: the scheduler's former name-based anchoring, where a weight's family is its name
/// up to `layers.` and the number after it is the layer.
fn anchors_from_names(g: &Graph) -> Vec<Option<Anchor>> {
    fn layer_of(name: &str) -> Option<(&str, usize)> {
        let mut from = 0;
        while let Some(pos) = name[from..].find("layers.") {
            let start = from + pos + "layers.".len();
            let digits = name[start..].bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && name[start + digits..].starts_with('.') {
                return Some((&name[..start], name[start..start + digits].parse().ok()?));
            }
            from = start;
        }
        None
    }
    let mut families: Vec<&str> = Vec::new();
    let mut anchor = |name| match layer_of(name) {
        Some((family, index)) => {
            let family = families
                .iter()
                .position(|f| *f == family)
                .unwrap_or_else(|| {
                    families.push(family);
                    families.len() - 1
                });
            Anchor::Layer { family, index }
        }
        None => Anchor::Outer,
    };
    g.nodes
        .iter()
        .map(|n| {
            if let Op::Weight { name } = &n.op {
                Some(anchor(name))
            } else {
                None
            }
        })
        .collect()
}

/// The graph with every weight renamed `w{node}`: nothing left for a name parser to find.
fn opaque_names(g: &Graph) -> Graph {
    let mut g = g.clone();
    for (k, node) in g.nodes.iter_mut().enumerate() {
        if let Op::Weight { name } = &mut node.op {
            *name = format!("w{k}");
        }
    }
    g
}

#[test]
fn structural_layers_match_weight_names() {
    for (config, cfg) in all_configs() {
        for g in ModelGraphs::from_config(&cfg).unwrap().all() {
            let name = format!("{config}/{}", g.name);
            let (found, named) = (weight_anchors(g), anchors_from_names(g));
            for (i, node) in g.nodes.iter().enumerate() {
                assert_eq!(
                    found[i],
                    named[i],
                    "{name}: node {i} {}",
                    node.op.signature()
                );
            }
            let (p, oracle) = (plan(g), plan_with(g, &named));
            assert_eq!(p.level, oracle.level, "{name}: levels");
            assert_eq!(p.inline, oracle.inline, "{name}: inlined prelude values");
            assert_eq!(p.exported, oracle.exported, "{name}: window outputs");
            assert_eq!(
                p.windows.iter().map(|w| &w.0).collect::<Vec<_>>(),
                oracle.windows.iter().map(|w| &w.0).collect::<Vec<_>>()
            );
            assert!(p.monotone, "{name}");
            let layer_windows = p
                .windows
                .iter()
                .filter(|(l, _)| matches!(l, Level::Layer(0, _)))
                .count();
            assert_eq!(
                layer_windows,
                layer_count(&cfg, g),
                "{name}: one window per layer"
            );
            assert!(
                p.windows
                    .iter()
                    .all(|(l, _)| !matches!(l, Level::Layer(1.., _))),
                "{name}: one family"
            );
        }
    }
}

#[test]
fn renamed_weights_are_scheduled_alike() {
    for (config, cfg) in all_configs() {
        for g in ModelGraphs::from_config(&cfg).unwrap().all() {
            let name = format!("{config}/{}", g.name);
            let renamed = opaque_names(g);
            let (p, q) = (plan(g), plan(&renamed));
            assert_eq!(p.level, q.level, "{name}: levels");
            assert_eq!(p.inline, q.inline, "{name}: inlined prelude values");
            assert_eq!(p.exported, q.exported, "{name}: window outputs");
        }
    }
}

#[test]
fn large_configs_memoize_every_layer() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs");
    for dir in ["videollama3-2b", "videollama3-7b"].map(|c| examples.join(c)) {
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        for g in ModelGraphs::from_config(&cfg).unwrap().all() {
            for g in [g.clone(), opaque_names(g)] {
                let (_, stats) = optimize_graph(&g, &Target::CPU, &Budget::default()).unwrap();
                let name = format!("{}/{}", dir.file_name().unwrap().to_string_lossy(), g.name);
                assert_eq!(
                    stats.windows - stats.windows_optimized,
                    layer_count(&cfg, &g).max(1) - 1,
                    "{name}: memo hits ({stats:?})"
                );
                assert!(
                    stats.windows_optimized <= 3,
                    "{name}: prelude, one layer, epilogue ({stats:?})"
                );
            }
        }
    }
}

#[test]
fn scheduled_matches_whole_graph_and_memoizes_layers() {
    for dir in fixtures() {
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        let graphs = ModelGraphs::from_config(&cfg).unwrap();
        for g in graphs.all() {
            let (whole, _) = optimize(g, &Target::CPU, &Budget::default()).unwrap();
            let (sched, stats) = optimize_graph(g, &Target::CPU, &Budget::default()).unwrap();
            sched.verify().unwrap();
            let name = format!("{}/{}", dir.file_name().unwrap().to_string_lossy(), g.name);
            assert_eq!(
                sched.op_counts(),
                whole.op_counts(),
                "{name}: scheduled and whole-graph ops differ"
            );
            assert_eq!(
                stats.windows - stats.windows_optimized,
                layer_count(&cfg, g).max(1) - 1,
                "{name}: memo hits ({stats:?})"
            );
        }
    }
}

#[test]
fn scheduled_graphs_reproduce_transformers() {
    use vl3c_runtime::model::Model;
    use vl3c_runtime::tensor_file::read_tensors;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/image_tied_f32");
    let inputs = read_tensors(&dir.join("inputs.safetensors")).unwrap();
    let expected = read_tensors(&dir.join("expected.safetensors")).unwrap();
    let mut model = Model::open(&dir).unwrap();
    let g = model.graphs().clone();
    let opt = |g: &vl3c_ir::Graph| {
        optimize_graph(g, &Target::CPU, &Budget::default())
            .unwrap()
            .0
    };
    model.set_graphs(ModelGraphs {
        vision_m1: opt(&g.vision_m1),
        vision_m2: opt(&g.vision_m2),
        projector: opt(&g.projector),
        prefill: opt(&g.prefill),
        decode: opt(&g.decode),
    });
    let result = model.forward(&inputs, 3).unwrap();
    let (a, b) = (result.logits.to_f32_vec(), expected["logits"].to_f32_vec());
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-4, "max |Δlogits| {max}");
}
