use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_passes::{cost::Target, optimize, Budget};

#[test]
fn softmax_found_in_every_graph() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/image_tied_f32");
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let graphs = ModelGraphs::from_config(&cfg).unwrap();
    for g in graphs.all() {
        let (opt, stats) = optimize(g, &Target::CPU, &Budget::default()).unwrap();
        eprintln!("{}: {:?}\n{:?}", g.name, stats, opt.op_counts());
        let before = g.op_counts().get("reduce_max").copied().unwrap_or(0);
        assert_eq!(opt.op_counts().get("softmax").copied().unwrap_or(0), before);
    }
}
