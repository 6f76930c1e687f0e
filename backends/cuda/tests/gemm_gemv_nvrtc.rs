//! Every GEMV instance of the test-kernels cases, printed and compiled by NVRTC for sm_90: the
//! printed text must compile without warnings, load the weight 16 bytes at a time, and not spill.
//! NVRTC must be installed (`tools/cuda/install-nvrtc.sh`) unless `VL3C_SKIP_NVRTC=1`.

mod common;

use std::collections::BTreeMap;
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::gemv;

#[test]
fn gemv_kernels_compile_without_spills() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let mut kernels = BTreeMap::new();
    for case in gemv::cases() {
        for k in case.template.kernels() {
            kernels.insert(k.name.clone(), k);
        }
    }
    let kernels: Vec<_> = kernels.into_values().collect();
    let source = print_module(&kernels);
    let compiled = nvrtc
        .compile(&source, "gemv.cu", Sm::Sm90)
        .unwrap_or_else(|e| panic!("{e}\n--- source ---\n{source}"));
    assert!(
        !compiled.log.contains("warning"),
        "NVRTC warned:\n{}",
        compiled.log
    );
    assert_eq!(compiled.reports.len(), kernels.len(), "{}", compiled.log);
    // The weight streams through 128-bit loads: 8 bf16 or 4 f32 per lane.
    for load in ["ld.global.nc.v4.u32", "ld.global.nc.v4.f32"] {
        assert!(compiled.ptx.contains(load), "no {load} in the PTX");
    }
    for r in &compiled.reports {
        assert_eq!(
            (r.spill_stores, r.spill_loads, r.stack_bytes),
            (0, 0, 0),
            "{r:?}"
        );
        eprintln!("{} {} registers", r.kernel, r.registers);
    }
}
