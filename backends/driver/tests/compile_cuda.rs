//! `vl3c compile --target cuda` on every fixture checkpoint and on the real 2B/7B configs, for
//! sm_80 and sm_90: every runtime node gets exactly one step, every kernel compiles without a
//! spill, an attention stack frame or shared memory over the limit, and the engine holds what
//! a loader will need.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vl3c_cuda::lower::runtime_nodes;
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::{CudaTarget, CUDA_DIR};
use vl3c_driver::{compile, ModelSource};
use vl3c_frontends::Checkpoint;
use vl3c_ir::Op;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> Vec<PathBuf> {
    let dir = root().join("tests/fixtures/models");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    out.sort();
    assert!(
        out.len() >= 5,
        "expected the fixture checkpoints under {}",
        dir.display()
    );
    out
}

fn check_engine(model: &Path, config_only: bool) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut target = CudaTarget::new(Sm::ALL.to_vec());
    let checkpoint = (!config_only)
        .then(|| Checkpoint::open(model).unwrap_or_else(|e| panic!("{}: {e}", model.display())));
    let source = match &checkpoint {
        Some(c) => ModelSource::checkpoint(model, c),
        None => {
            ModelSource::config_only(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()))
        }
    };
    compile(&source, &mut target, out.path(), &mut |_, _, _| {})
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let report = &target.report;
    assert!(
        report.problems.is_empty(),
        "{}: {:#?}",
        model.display(),
        report.problems
    );
    for sm in Sm::ALL {
        for file in [
            format!("{}.cubin", sm.name()),
            format!("{}.ptx", sm.virtual_name()),
            format!("ptxas_{}.json", sm.name()),
        ] {
            let path = out.path().join(CUDA_DIR).join(&file);
            assert!(
                std::fs::metadata(&path)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false),
                "{} missing",
                path.display()
            );
        }
        let reports = &report.reports[sm.name()];
        assert_eq!(
            reports.len(),
            report.kernels,
            "{}: one ptxas report per kernel on {}",
            model.display(),
            sm.name()
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["target"], "cuda");

    // Every instance says how to launch it: buffers and scalars bind to its reference graph.
    let kernels: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join(CUDA_DIR).join("kernels.kir.json")).unwrap(),
    )
    .unwrap();
    for inst in plan_instances(out.path()) {
        check_instance_binds(&inst, &kernels, model);
    }

    // Every node that runs at inference time, and only those, has exactly one step.
    let graphs =
        vl3c_ir::parse_graphs(&std::fs::read_to_string(out.path().join("graphs.vir")).unwrap())
            .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join(CUDA_DIR).join("plan.json")).unwrap(),
    )
    .unwrap();
    let plans = plan["graphs"].as_array().unwrap();
    assert_eq!(plans.len(), graphs.len());
    assert_eq!(plan["weights"], !config_only, "{}", model.display());
    let weights_bin = std::fs::read(out.path().join(CUDA_DIR).join("weights.bin")).ok();
    assert_eq!(
        weights_bin.is_some(),
        !config_only,
        "{}: cuda/weights.bin present iff weights were read",
        model.display()
    );
    for (g, p) in graphs.iter().zip(plans) {
        assert_eq!(p["graph"], g.name.as_str());
        let live = runtime_nodes(g);
        let want: BTreeSet<usize> = (0..g.nodes.len())
            .filter(|&i| {
                live[i]
                    && !matches!(
                        g.nodes[i].op,
                        Op::Input { .. }
                            | Op::Weight { .. }
                            | Op::CacheRead { .. }
                            | Op::Fold
                            | Op::Constant { .. }
                    )
            })
            .collect();
        let steps: Vec<usize> = p["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node"].as_u64().unwrap() as usize)
            .collect();
        let have: BTreeSet<usize> = steps.iter().copied().collect();
        assert_eq!(
            steps.len(),
            have.len(),
            "{} {}: a node has two steps",
            model.display(),
            g.name
        );
        assert_eq!(
            have,
            want,
            "{} {}: steps do not cover the runtime nodes",
            model.display(),
            g.name
        );

        // Every weight and fold a step reads is stored, as the IR types it.
        let stored = p["stored"].as_object().unwrap();
        let sources: BTreeSet<usize> = (0..g.nodes.len())
            .filter(|&i| live[i] && matches!(g.nodes[i].op, Op::Weight { .. } | Op::Fold))
            .collect();
        let keys: BTreeSet<usize> = stored.keys().map(|k| k.parse().unwrap()).collect();
        if config_only {
            assert!(
                keys.is_empty(),
                "{} {}: stored tensors without weights",
                model.display(),
                g.name
            );
            continue;
        }
        assert_eq!(
            keys,
            sources,
            "{} {}: stored sources",
            model.display(),
            g.name
        );
        let bin = weights_bin.as_ref().unwrap();
        let ckpt = checkpoint.as_ref().unwrap();
        for (node, tensor) in stored {
            let n = &g.nodes[node.parse::<usize>().unwrap()];
            let e = &plan["tensors"][tensor.as_str().unwrap()];
            let shape: Vec<i64> =
                n.ty.shape
                    .iter()
                    .map(|d| d.as_const().expect("stored nodes have constant shapes"))
                    .collect();
            let stored_shape: Vec<i64> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(
                (stored_shape, e["dtype"].as_str().unwrap()),
                (shape, n.ty.dtype.to_string().as_str()),
                "{} {} %{node}",
                model.display(),
                g.name
            );
            let (off, len) = (
                e["offset"].as_u64().unwrap() as usize,
                e["bytes"].as_u64().unwrap() as usize,
            );
            assert!(
                off % 64 == 0 && off + len <= bin.len(),
                "{} {} %{node}: {off}+{len} in {}",
                model.display(),
                g.name,
                bin.len()
            );
            if let Op::Weight { name } = &n.op {
                assert_eq!(
                    &bin[off..off + len],
                    ckpt.tensor(name).unwrap().bytes,
                    "{} {}: weight `{name}` stored as read",
                    model.display(),
                    g.name
                );
            }
        }
    }
}

fn plan_instances(engine: &Path) -> Vec<serde_json::Value> {
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(engine.join(CUDA_DIR).join("plan.json")).unwrap())
            .unwrap();
    plan["instances"].as_array().unwrap().clone()
}

/// Scalars a kernel takes that the instance's reference graph does not determine: the loader
/// provides them from the engine's own state (the KV cache's capacity, the split-KV chunk count
/// it launches with). Any other unbound scalar fails the test.
const ENGINE_SCALARS: [&str; 2] = ["kv_capacity", "max_chunks"];

fn check_instance_binds(inst: &serde_json::Value, kernels: &serde_json::Value, model: &Path) {
    let name = inst["name"].as_str().unwrap();
    let reference = vl3c_ir::Graph::parse(inst["reference"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{} {name}: reference does not parse: {e}", model.display()));
    let symbols: BTreeSet<&str> = reference.symbols.iter().map(|s| s.name.as_str()).collect();
    let mut buffers: BTreeSet<String> = reference
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Input { name } | Op::CacheRead { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    buffers.extend(reference.outputs.iter().map(|(o, _)| o.clone()));
    for s in inst["scratch"].as_array().unwrap() {
        let len = vl3c_ir::Dim::parse(s["len"].as_str().unwrap()).unwrap();
        let mut used = Vec::new();
        len.symbols(&mut used);
        for sym in used {
            assert!(
                symbols.contains(sym.as_str()) || ENGINE_SCALARS.contains(&sym.as_str()),
                "{} {name}: scratch length uses `{sym}`",
                model.display()
            );
        }
        buffers.insert(s["name"].as_str().unwrap().to_string());
    }
    for k in inst["kernels"].as_array().unwrap() {
        let k = kernels
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == *k)
            .unwrap_or_else(|| panic!("{name}: kernel {k} missing"));
        for p in k["params"].as_array().unwrap() {
            let pname = p["name"].as_str().unwrap();
            if p["kind"].get("Buffer").is_some() {
                assert!(
                    buffers.contains(pname),
                    "{} {name}: buffer `{pname}` is no input, output or scratch",
                    model.display()
                );
            } else {
                assert!(
                    symbols.contains(pname) || ENGINE_SCALARS.contains(&pname),
                    "{} {name}: scalar `{pname}` is bound by nothing",
                    model.display()
                );
            }
        }
    }
}

#[test]
fn every_fixture_compiles_for_cuda() {
    for model in fixtures() {
        check_engine(&model, false);
    }
}

#[test]
fn the_real_2b_and_7b_configs_compile_for_cuda() {
    for name in ["videollama3-2b", "videollama3-7b"] {
        check_engine(&root().join("examples/configs").join(name), true);
    }
}

#[test]
fn a_missing_config_is_one_line() {
    let out = tempfile::tempdir().unwrap();
    let source = ModelSource::config_only(Path::new("/nonexistent/model"));
    let text = match source {
        Ok(s) => compile(
            &s,
            &mut CudaTarget::new(vec![Sm::Sm90]),
            out.path(),
            &mut |_, _, _| {},
        )
        .expect_err("an error")
        .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        text.contains("/nonexistent/model") && !text.contains('\n'),
        "{text}"
    );
}
