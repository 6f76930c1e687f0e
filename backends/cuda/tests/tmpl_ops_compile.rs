//! Every kernel of the op templates (norms, activations, softmax, rope, pruning, compaction,
//! embedding) printed into one module and compiled by NVRTC. Needs NVRTC, as `tests/nvrtc.rs`
//! does (`VL3C_SKIP_NVRTC=1` skips).

mod common;

use std::collections::BTreeMap;
use vl3c_cuda::kir::Kernel;
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::cases;

const OPS: &[&str] = &[
    "rms_norm",
    "layer_norm",
    "gelu_tanh",
    "gelu_erf",
    "silu",
    "swiglu",
    "softmax",
    "rope",
    "rope_cache",
    "spatial_merge",
    "diff_frame_prune",
    "masked_select",
    "embedding",
    "masked_scatter",
];

/// The distinct kernels of these ops' cases, by name; one name never means two kernels.
fn kernels() -> Vec<Kernel> {
    let mut by_name: BTreeMap<String, Kernel> = BTreeMap::new();
    for case in cases()
        .into_iter()
        .filter(|c| OPS.contains(&c.template.op()))
    {
        for k in case.template.kernels() {
            match by_name.get(&k.name) {
                Some(seen) => assert_eq!(seen, &k, "two different kernels are named {}", k.name),
                None => {
                    by_name.insert(k.name.clone(), k);
                }
            }
        }
    }
    by_name.into_values().collect()
}

/// One module, as an engine loads them: the names must be distinct and NVRTC must not warn
/// (an unused register or a narrowing it flags is a template bug). `nvrtc_templates.rs` compiles
/// each instance for every architecture and checks spills and shared memory.
#[test]
fn op_kernels_share_one_module_without_warnings() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let kernels = kernels();
    let source = print_module(&kernels);
    let compiled = nvrtc
        .compile(&source, "tmpl_ops.cu", Sm::Sm90)
        .unwrap_or_else(|e| panic!("{e}\n--- source ---\n{source}"));
    assert!(
        !compiled.log.contains("warning"),
        "NVRTC warned:\n{}",
        compiled.log
    );
    for k in &kernels {
        assert!(
            compiled.reports.iter().any(|r| r.kernel == k.name),
            "no ptxas report for {}",
            k.name
        );
    }
}
