//! The primitive glue templates' cases: every glue family has some, every reference graph
//! verifies, and every kernel builds with one scalar parameter per symbol it reads. (NVRTC
//! compiles them in `nvrtc_templates`; `test_kernels` runs them against the reference.)

use std::collections::BTreeSet;
use vl3c_cuda::kir::ParamKind;
use vl3c_cuda::templates::cases;

const FAMILIES: &[&str] = &[
    "transpose",
    "reshape",
    "slice",
    "concat",
    "cache_append",
    "broadcast",
    "gather",
    "vision_position_ids",
    "segment_ids",
    "masked_select",
    "masked_scatter",
    "cast",
    "iota",
    "const",
    "select",
    "reduce_sum",
    "reduce_max",
    "reduce_mean",
    "elementwise_chain",
    "neg",
    "exp",
    "recip",
    "tanh",
    "erf",
    "abs",
    "sin",
    "cos",
    "mul",
    "div",
    "add",
    "sub",
    "max",
    "min",
    "lt",
    "ge",
    "eq",
    "ne",
    "le",
    "and",
    "or",
];

#[test]
fn every_glue_family_has_cases() {
    let ops: BTreeSet<&str> = cases().iter().map(|c| c.template.op()).collect();
    for family in FAMILIES {
        assert!(ops.contains(family), "no case for {family}");
    }
}

#[test]
fn references_verify_and_every_scalar_is_a_case_size() {
    for case in cases()
        .into_iter()
        .filter(|c| FAMILIES.contains(&c.template.op()))
    {
        let label = case.label();
        vl3c_ir::verify(&case.template.reference())
            .unwrap_or_else(|e| panic!("{label}: reference graph: {e:?}"));
        for k in case.template.kernels() {
            for p in &k.params {
                if let ParamKind::Scalar(_) = p.kind {
                    assert!(
                        case.sizes.contains_key(&p.name),
                        "{label}: kernel {} reads `{}`, which the case does not size",
                        k.name,
                        p.name
                    );
                }
            }
        }
    }
}
