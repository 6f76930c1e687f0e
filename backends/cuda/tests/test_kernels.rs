//! `vl3c test-kernels --backend emu` as a test: every template case on the emulator against the
//! reference executor, with the emulator's memory, race and barrier checks on.

use vl3c_cuda::check::{run_all, Backend, Filter};
use vl3c_cuda::templates::cases;

#[test]
fn every_kernel_case_matches_the_reference_on_the_emulator() {
    let all = cases();
    assert!(!all.is_empty(), "the case registry is empty");
    let summary = run_all(&all, &Filter::default(), Backend::Emu);
    for r in &summary.reports {
        println!("{}", r.line());
    }
    println!("{}", summary.closing_line());
    let failed: Vec<String> = summary
        .reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.line())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        summary.reports.len(),
        failed.join("\n")
    );
}

#[test]
fn every_op_family_has_cases_at_odd_lengths() {
    let all = cases();
    let families: std::collections::BTreeSet<&str> = all.iter().map(|c| c.template.op()).collect();
    for f in families {
        let odd = all
            .iter()
            .filter(|c| c.template.op() == f)
            .any(|c| c.sizes.values().any(|&v| v == 1 || v == 7 || v == 129));
        let fixed = all
            .iter()
            .filter(|c| c.template.op() == f)
            .all(|c| c.sizes.is_empty());
        assert!(
            odd || fixed,
            "op family `{f}` has no case at length 1, 7 or 129"
        );
    }
}
