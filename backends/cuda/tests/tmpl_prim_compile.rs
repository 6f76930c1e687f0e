//! The primitive glue templates' kernels, for every case: they build, their reference graphs
//! verify, and the printed CUDA compiles with NVRTC without warnings or spills (NVRTC
//! must be installed, `tools/cuda/install-nvrtc.sh`, unless `VL3C_SKIP_NVRTC=1`).

use std::collections::BTreeSet;
use vl3c_cuda::kir::Kernel;
use vl3c_cuda::nvrtc::{Nvrtc, Sm};
use vl3c_cuda::print::print_module;
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

/// One kernel per distinct name: cases of one instance at other sizes share their kernels.
fn prim_kernels() -> Vec<Kernel> {
    let mut seen = BTreeSet::new();
    let mut kernels = Vec::new();
    for case in cases().into_iter().filter(|c| FAMILIES.contains(&c.template.op())) {
        vl3c_ir::verify(&case.template.reference()).unwrap_or_else(|e| panic!("{}: reference graph: {e:?}", case.label()));
        for k in case.template.kernels() {
            if seen.insert(k.name.clone()) {
                kernels.push(k);
            }
        }
    }
    kernels
}

#[test]
fn every_family_has_cases() {
    let ops: BTreeSet<&str> = cases().iter().map(|c| c.template.op()).collect();
    for family in FAMILIES {
        assert!(ops.contains(family), "no case for {family}");
    }
}

#[test]
fn kernels_compile_with_nvrtc() {
    let kernels = prim_kernels();
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) if std::env::var("VL3C_SKIP_NVRTC").is_ok_and(|v| v == "1") => return eprintln!("skipped: {e}"),
        Err(e) => panic!("{e}"),
    };
    let source = print_module(&kernels);
    let compiled = nvrtc.compile(&source, "tmpl_prim.cu", Sm::Sm90).unwrap_or_else(|e| panic!("{e}\n--- source ---\n{source}"));
    assert!(!compiled.log.contains("warning"), "NVRTC warned:\n{}", compiled.log);
    assert_eq!(compiled.reports.len(), kernels.len(), "one ptxas report per kernel:\n{}", compiled.log);
    for r in &compiled.reports {
        assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{} spills:\n{}", r.kernel, compiled.log);
        // sinf/cosf keep a 28-byte table on the stack for their slow argument reduction.
        assert!(r.stack_bytes <= 32, "{} uses {} bytes of stack:\n{}", r.kernel, r.stack_bytes, compiled.log);
    }
}
