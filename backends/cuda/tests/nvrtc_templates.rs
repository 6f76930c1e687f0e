//! Every template instance `vl3c test-kernels` runs prints, compiles with NVRTC for every
//! supported architecture, and stays within the shared-memory limit. Spills are listed loudly but
//! do not fail: precise `sinf`/`cosf` call a slow-path subroutine whose ABI spills a few bytes, and
//! a block of 896 threads caps registers at 72; whether that is acceptable is each template's call.
//! NVRTC must be installed (`tools/cuda/install-nvrtc.sh`) unless `VL3C_SKIP_NVRTC=1`.

mod common;

use std::collections::BTreeSet;
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::cases;

#[test]
fn every_template_instance_compiles() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    // Sizes are launch arguments: one compile per instance covers all its cases.
    let mut seen = BTreeSet::new();
    let jobs: Vec<(String, &'static str, String, Sm)> = cases()
        .into_iter()
        .filter(|case| seen.insert(case.template.name()))
        .flat_map(|case| {
            let source = print_module(&case.template.kernels());
            Sm::ALL.map(|sm| (case.template.name(), case.template.op(), source.clone(), sm))
        })
        .collect();
    // NVRTC compiles independent programs concurrently; these are hundreds of compiles.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, op, source, sm)) = jobs.get(i) else {
                    break;
                };
                let (mut failed, mut spilled) = (Vec::new(), Vec::new());
                match nvrtc.compile(source, &format!("{op}.cu"), *sm) {
                    Err(error) => failed.push(format!("{name}: {error}")),
                    Ok(compiled) => {
                        for r in &compiled.reports {
                            if r.spill_stores + r.spill_loads > 0 {
                                spilled
                                    .push(format!("{name} on {sm}: {} spills ({r:?})", r.kernel));
                            }
                            if r.shared_bytes > sm.max_shared_bytes_per_block() {
                                failed.push(format!(
                                    "{name} on {sm}: {} has {} B of static shared memory",
                                    r.kernel, r.shared_bytes
                                ));
                            }
                        }
                    }
                }
                let mut results = results.lock().unwrap();
                results.0.extend(failed);
                results.1.extend(spilled);
            });
        }
    });
    let (failures, spills) = results.into_inner().unwrap();
    if !spills.is_empty() {
        // Straight to the file descriptor: the test harness captures `eprintln!` of passing tests.
        let text = format!("\n*** register spills ***\n{}\n", spills.join("\n"));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
