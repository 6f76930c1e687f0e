//! Compiles the printed sample kernels with NVRTC for every supported architecture and pins
//! ptxas' resource report. NVRTC must be installed (`tools/cuda/install-nvrtc.sh`); without it
//! these tests fail, unless `VL3C_SKIP_NVRTC=1` says to skip them.

mod common;

mod print_samples;

use vl3c_cuda::nvrtc::{Compiled, Nvrtc, Sm};
use vl3c_cuda::print::print_module;

fn compile_samples(nvrtc: &Nvrtc, sm: Sm) -> Compiled {
    let source = print_module(&print_samples::all());
    nvrtc
        .compile(&source, "samples.cu", sm)
        .unwrap_or_else(|e| panic!("{e}\n--- source ---\n{source}"))
}

/// One line per kernel, sorted by name so the snapshot does not depend on ptxas' order.
fn report_table(compiled: &Compiled) -> String {
    let mut reports = compiled.reports.clone();
    reports.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    let mut table =
        String::from("kernel          regs  barriers  stack  spill_st  spill_ld  smem  cmem\n");
    for r in reports {
        table.push_str(&format!(
            "{:<15} {:>4}  {:>8}  {:>5}  {:>8}  {:>8}  {:>4}  {:>4}\n",
            r.kernel,
            r.registers,
            r.barriers,
            r.stack_bytes,
            r.spill_stores,
            r.spill_loads,
            r.shared_bytes,
            r.constant_bytes
        ));
    }
    table
}

fn check(sm: Sm) {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let compiled = compile_samples(&nvrtc, sm);
    assert!(
        compiled.cubin.starts_with(b"\x7fELF"),
        "the {sm} cubin is not an ELF file"
    );
    assert!(
        compiled.ptx.contains(&format!(".target {}", sm.name())),
        "the PTX is not for {}",
        sm.virtual_name()
    );
    assert!(
        !compiled.log.contains("warning"),
        "NVRTC warned about printed code:\n{}",
        compiled.log
    );
    let names: Vec<&str> = compiled.reports.iter().map(|r| r.kernel.as_str()).collect();
    for kernel in print_samples::all() {
        assert!(
            names.contains(&kernel.name.as_str()),
            "no ptxas report for {} in:\n{}",
            kernel.name,
            compiled.log
        );
    }
    for r in &compiled.reports {
        assert_eq!(
            (r.spill_stores, r.spill_loads),
            (0, 0),
            "{} spills on {sm}",
            r.kernel
        );
        assert!(
            r.shared_bytes <= sm.max_shared_bytes_per_block(),
            "{} uses too much shared memory",
            r.kernel
        );
    }
    insta::assert_snapshot!(format!("ptxas_{}", sm.name()), report_table(&compiled));
}

#[test]
fn samples_compile_for_sm_80() {
    check(Sm::Sm80);
}

#[test]
fn samples_compile_for_sm_90() {
    check(Sm::Sm90);
}

#[test]
fn nvrtc_is_the_pinned_release() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    // The reports above are pinned for this release; the GPU machine's driver takes its PTX.
    assert_eq!(
        nvrtc.version(),
        (13, 0),
        "NVRTC at {}",
        nvrtc.library_path().display()
    );
}

#[test]
fn compile_errors_carry_the_log() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let error = nvrtc
        .compile(
            "extern \"C\" __global__ void broken() { undeclared = 1; }",
            "broken.cu",
            Sm::Sm90,
        )
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("broken.cu") && text.contains("undeclared"),
        "{text}"
    );
}
