//! The optimized text IR of one layer window of each kind, on the image_tied_f32 config. These
//! change whenever a rule does; re-bless with
//! `INSTA_UPDATE=always cargo test -p vl3c-passes --test snapshots` and review the diff.

use vl3c_frontends::lower::ModelGraphs;
use vl3c_frontends::ModelConfig;
use vl3c_passes::schedule::optimized_layer_window;
use vl3c_passes::{cost::Target, Budget};

fn layer0(graph: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models/image_tied_f32");
    let graphs = ModelGraphs::from_config(&ModelConfig::from_dir(&dir).unwrap()).unwrap();
    let g = graphs.all().into_iter().find(|g| g.name == graph).unwrap();
    optimized_layer_window(g, 0, &Target::CPU, &Budget::default())
        .unwrap()
        .expect("layer 0 exists")
        .to_string()
}

#[test]
fn vision_layer() {
    insta::assert_snapshot!(layer0("vision_m1"));
}

#[test]
fn prefill_layer() {
    insta::assert_snapshot!(layer0("prefill"));
}

#[test]
fn decode_layer() {
    insta::assert_snapshot!(layer0("decode"));
}
