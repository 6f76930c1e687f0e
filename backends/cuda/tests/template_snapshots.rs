//! Pins, for one representative instance of every kernel template family, the CUDA C++ the
//! printer emits and ptxas' resource report for sm_90, so a change to a template, the printer or
//! the pinned NVRTC shows up as a reviewable diff. One snapshot file per family
//! (`snapshots/template_snapshots__<op>.snap`); a meta-test keeps that set equal to the families
//! `cases()` has. NVRTC must be installed (`tools/cuda/install-nvrtc.sh`) unless
//! `VL3C_SKIP_NVRTC=1`. Regenerate with `INSTA_UPDATE=always cargo test -p vl3c-cuda --test
//! template_snapshots` and review the diff.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use vl3c_cuda::nvrtc::{Compiled, Nvrtc, Sm};
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::{cases, Template};

/// The snapshot name prefix insta derives from this file's name.
const SNAPSHOT_PREFIX: &str = "template_snapshots__";

/// Names of the 2B config's own sizes (hidden 1536, 12 query heads, MLP 8960): an instance at
/// these is what the 2B model actually runs, so its source is the most telling one to review.
fn is_2b_sized(name: &str) -> bool {
    ["1536", "q_heads=12,", "8960"]
        .iter()
        .any(|marker| name.contains(marker))
}

/// How much an instance is preferred as its family's representative: bf16 first (the dtype the
/// checkpoints run in), then 2B sizes.
fn preference(name: &str) -> u8 {
    u8::from(name.contains("bf16")) * 2 + u8::from(is_2b_sized(name))
}

/// One instance per op family, by family name: the most preferred, the first in `cases()` order
/// among equals, so the choice only moves when the case list does.
fn representatives() -> BTreeMap<&'static str, Arc<dyn Template>> {
    let mut chosen: BTreeMap<&'static str, Arc<dyn Template>> = BTreeMap::new();
    for case in cases() {
        let template = case.template;
        match chosen.get(template.op()) {
            Some(current) if preference(&current.name()) >= preference(&template.name()) => {}
            _ => {
                chosen.insert(template.op(), template);
            }
        }
    }
    chosen
}

/// One line per kernel, sorted by name so the snapshot does not depend on ptxas' order.
fn report_table(compiled: &Compiled) -> String {
    let mut reports = compiled.reports.clone();
    reports.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    let width = reports
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(0)
        .max("kernel".len());
    let mut table = format!(
        "{:<width$}  regs  barriers  stack  spill_st  spill_ld   smem  cmem\n",
        "kernel"
    );
    for r in reports {
        table.push_str(&format!(
            "{:<width$}  {:>4}  {:>8}  {:>5}  {:>8}  {:>8}  {:>5}  {:>4}\n",
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

/// The snapshot text of one family: which instance, ptxas' report, then the source.
fn snapshot_text(nvrtc: &Nvrtc, template: &dyn Template) -> String {
    let source = print_module(&template.kernels());
    let compiled = nvrtc
        .compile(&source, &format!("{}.cu", template.op()), Sm::Sm90)
        .unwrap_or_else(|e| panic!("{}: {e}\n--- source ---\n{source}", template.name()));
    format!(
        "instance: {}\n\n--- ptxas {} ---\n{}\n--- source ---\n{source}",
        template.name(),
        Sm::Sm90.name(),
        report_table(&compiled)
    )
}

#[test]
fn every_template_family_matches_its_snapshot() {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let families: Vec<(&'static str, Arc<dyn Template>)> = representatives().into_iter().collect();
    // NVRTC compiles independent programs concurrently; one compile per family.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let texts = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((op, template)) = families.get(i) else {
                    break;
                };
                let text = snapshot_text(&nvrtc, template.as_ref());
                texts.lock().unwrap().insert(*op, text);
            });
        }
    });
    // Asserted on this thread, in family order, so insta sees one test and a stable sequence.
    for (op, text) in texts.into_inner().unwrap() {
        insta::with_settings!({ omit_expression => true }, {
            insta::assert_snapshot!(op, text);
        });
    }
}

/// The families that have a snapshot file, from the file names.
fn snapshot_families() -> BTreeSet<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            let op = name.strip_prefix(SNAPSHOT_PREFIX)?.strip_suffix(".snap")?;
            Some(op.to_string())
        })
        .collect()
}

/// A new template family cannot go unsnapshotted, and a removed one leaves no stale file. Runs
/// without NVRTC: it only compares names.
#[test]
fn every_template_family_has_a_snapshot_file() {
    let families: BTreeSet<String> = cases()
        .iter()
        .map(|c| c.template.op().to_string())
        .collect();
    let files = snapshot_families();
    let missing: Vec<&String> = families.difference(&files).collect();
    let stale: Vec<&String> = files.difference(&families).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "families without a snapshot (run with INSTA_UPDATE=always): {missing:?}; \
         snapshots of no family (delete them): {stale:?}"
    );
}

#[test]
fn representatives_prefer_2b_sized_bf16_instances() {
    let chosen = representatives();
    assert_eq!(
        chosen["rms_norm"].name(),
        "rms_norm(dtype=bf16,hidden=1536,residual=false)"
    );
    assert_eq!(
        chosen["attention_decode"].name(),
        "attention_decode(dtype=bf16,q_heads=12,kv_heads=2,head_dim=128)"
    );
}
