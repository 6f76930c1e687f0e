//! The scheduler against whole-graph optimization: same ops, same values, one saturation per
//! distinct layer.

use std::path::{Path, PathBuf};
use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_passes::{cost::Target, optimize, optimize_graph, Budget};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("config.json").exists()).collect();
    assert!(!dirs.is_empty(), "no fixture configs under {}", root.display());
    dirs.sort();
    dirs
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
            assert_eq!(sched.op_counts(), whole.op_counts(), "{name}: scheduled and whole-graph ops differ");
            let layers = match g.name.as_str() {
                "vision_m1" | "vision_m2" => cfg.vision.num_hidden_layers,
                "prefill" | "decode" => cfg.text.num_hidden_layers,
                _ => 1,
            };
            assert_eq!(stats.windows - stats.windows_optimized, layers - 1, "{name}: memo hits ({stats:?})");
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
    let opt = |g: &vl3c_ir::Graph| optimize_graph(g, &Target::CPU, &Budget::default()).unwrap().0;
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
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max <= 1e-4, "max |Δlogits| {max}");
}
