//! The op templates' kernels and reference graphs agree on names, as the harness and the engine
//! bind them: every reference graph verifies, every buffer parameter is a graph input, a graph
//! output or declared scratch, every scalar parameter and graph symbol has a value in each case,
//! and every graph output is written by some kernel.

use vl3c_cuda::kir::{Access, ParamKind};
use vl3c_cuda::templates::{cases, Case};
use vl3c_ir::Op;

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

fn op_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| OPS.contains(&c.template.op()))
        .collect()
}

#[test]
fn every_op_family_has_cases() {
    let cases = op_cases();
    for op in OPS {
        assert!(
            cases.iter().any(|c| c.template.op() == *op),
            "no case of {op}"
        );
    }
}

#[test]
fn kernels_and_reference_graphs_bind_by_name() {
    for case in op_cases() {
        let t = &case.template;
        let label = case.label();
        let g = t.reference();
        vl3c_ir::verify(&g).unwrap_or_else(|e| panic!("{label}: reference graph: {e}"));
        for s in &g.symbols {
            assert!(
                case.sizes.contains_key(&s.name),
                "{label}: symbol {} has no size",
                s.name
            );
        }
        let sources: Vec<&str> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Input { name } | Op::CacheRead { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let scratch: Vec<String> = t.scratch().into_iter().map(|s| s.name).collect();
        let mut written = Vec::new();
        for k in t.kernels() {
            for p in &k.params {
                match &p.kind {
                    ParamKind::Scalar(_) => assert!(
                        case.sizes.contains_key(&p.name),
                        "{label}: {} has no value for {}",
                        k.name,
                        p.name
                    ),
                    ParamKind::Buffer { access, .. } => {
                        let is_output = g.output(&p.name).is_some();
                        assert!(
                            sources.contains(&p.name.as_str()) || is_output || scratch.contains(&p.name),
                            "{label}: {} reads or writes {}, which is neither input, output nor scratch",
                            k.name,
                            p.name
                        );
                        if *access != Access::Read {
                            written.push(p.name.clone());
                        }
                    }
                }
            }
        }
        for (name, _) in &g.outputs {
            assert!(
                written.contains(name),
                "{label}: no kernel writes output {name}"
            );
        }
    }
}
