//! Each exported graph's summary (inputs and outputs with shapes and types, op counts,
//! initializers): a change to the export shows here first. `INSTA_UPDATE=always` re-blesses.

use crate::common::{export, fixture};
use vl3c_onnx::summary::summarize;
use vl3c_onnx::MatmulPrecision;

fn summaries(name: &str, precision: MatmulPrecision) -> String {
    let dir = tempfile::tempdir().unwrap();
    let target = export(&fixture(name), dir.path(), precision);
    let mut s = String::new();
    for g in target.exported() {
        let bytes = std::fs::read(dir.path().join(&g.file)).unwrap();
        s += &format!("{}\n", g.file);
        s += &summarize(&bytes).expect("the exported file decodes");
        let symbols: Vec<String> = g
            .symbols
            .iter()
            .map(|(k, b)| format!("{k} in [{}, {}]", b.min, b.max))
            .collect();
        s += &format!("  symbols: {}\n\n", symbols.join(", "));
    }
    s
}

#[test]
fn video_pruned_f32() {
    insta::assert_snapshot!(summaries("video_pruned_f32", MatmulPrecision::F32));
}

#[test]
fn images_untied_gqa4_bf16_matmuls() {
    insta::assert_snapshot!(summaries("images_untied_gqa4", MatmulPrecision::Bf16));
}
