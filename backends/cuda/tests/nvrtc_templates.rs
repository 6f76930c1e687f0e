//! Every template instance `vl3c test-kernels` runs prints, compiles with NVRTC for every
//! supported architecture, and neither spills registers nor exceeds the shared-memory limit.
//! NVRTC must be installed (`tools/cuda/install-nvrtc.sh`) unless `VL3C_SKIP_NVRTC=1`.

use std::collections::BTreeSet;
use vl3c_cuda::nvrtc::{Nvrtc, Sm};
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::cases;

#[test]
fn every_template_instance_compiles_without_spills() {
    let nvrtc = match Nvrtc::load() {
        Ok(nvrtc) => nvrtc,
        Err(error) if std::env::var("VL3C_SKIP_NVRTC").is_ok_and(|v| v == "1") => {
            // Straight to the file descriptor: the test harness captures `eprintln!` of passing tests.
            let line = format!("\n*** skipped: {error} ***\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
        Err(error) => panic!("{error}"),
    };
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for case in cases() {
        // Sizes are launch arguments: one compile per instance covers all its cases.
        if !seen.insert(case.template.name()) {
            continue;
        }
        let kernels = case.template.kernels();
        let source = print_module(&kernels);
        for sm in Sm::ALL {
            match nvrtc.compile(&source, &format!("{}.cu", case.template.op()), sm) {
                Err(error) => failures.push(format!("{}: {error}", case.template.name())),
                Ok(compiled) => {
                    for r in &compiled.reports {
                        if r.spill_stores + r.spill_loads > 0 {
                            failures.push(format!(
                                "{} on {sm}: {} spills ({r:?})",
                                case.template.name(),
                                r.kernel
                            ));
                        }
                        if r.shared_bytes > sm.max_shared_bytes_per_block() {
                            failures.push(format!(
                                "{} on {sm}: {} has {} B of static shared memory",
                                case.template.name(),
                                r.kernel,
                                r.shared_bytes
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
