//! A loader binds an instance's symbols from its input buffers' shapes: on every test-kernels
//! case, binding from the case's input shapes gives back the case's sizes, and bad shapes are
//! refused with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

const VALUE_ONLY: [&str; 2] = ["elementwise_chain:past_len", "iota:past_len"];
use vl3c_cuda::lower::bind_symbols;
use vl3c_cuda::templates::cases;
use vl3c_ir::{Graph, Op};

fn input_shapes(g: &Graph, sizes: &HashMap<String, i64>) -> BTreeMap<String, Vec<usize>> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Input { name } | Op::CacheRead { name } => {
                Some((name.clone(), n.ty.concrete_shape(sizes).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn output_shapes(g: &Graph, sizes: &HashMap<String, i64>) -> BTreeMap<String, Vec<usize>> {
    g.outputs
        .iter()
        .map(|(name, id)| (name.clone(), g.ty(*id).concrete_shape(sizes).unwrap()))
        .collect()
}

#[test]
fn every_case_binds_back_to_its_sizes() {
    let all = cases();
    assert!(all.len() > 300, "{} cases", all.len());
    let mut value_only = BTreeSet::new();
    for case in &all {
        let g = case.template.reference();
        let sizes: HashMap<String, i64> = case.sizes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut shapes = input_shapes(&g, &sizes);
        // From the inputs alone: what is bound is right.
        let bound = bind_symbols(&g, &shapes).unwrap_or_else(|e| panic!("{}: {e}", case.label()));
        for (sym, v) in &bound {
            assert_eq!(Some(v), case.sizes.get(sym), "{}: `{sym}`", case.label());
        }
        // With the outputs too: every symbol of the instance is bound. (A cache is one buffer,
        // read and appended: the shape given is the read one.)
        for (name, shape) in output_shapes(&g, &sizes) {
            shapes.entry(name).or_insert(shape);
        }
        let bound = bind_symbols(&g, &shapes).unwrap_or_else(|e| panic!("{}: {e}", case.label()));
        for decl in &g.symbols {
            match bound.get(&decl.name) {
                Some(v) => assert_eq!(
                    Some(v),
                    case.sizes.get(&decl.name),
                    "{}: `{}`",
                    case.label(),
                    decl.name
                ),
                None => {
                    value_only.insert(format!("{}:{}", case.template.op(), decl.name));
                }
            }
        }
    }
    // Symbols no buffer's shape carries: values the kernels take (an iota's start), which the
    // engine's graph binds under the same name.
    let expected: BTreeSet<String> = VALUE_ONLY.iter().map(|s| s.to_string()).collect();
    assert_eq!(value_only, expected);
}

#[test]
fn bad_shapes_are_refused_with_the_reason() {
    let case = cases()
        .into_iter()
        .find(|c| c.template.op() == "rms_norm")
        .unwrap();
    let g = case.template.reference();
    let sizes: HashMap<String, i64> = case.sizes.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let good = input_shapes(&g, &sizes);

    let mut wrong_width = good.clone();
    wrong_width.get_mut("x").unwrap()[1] += 1;
    let e = bind_symbols(&g, &wrong_width).unwrap_err();
    assert!(e.contains("`x`") && e.contains("the buffer has"), "{e}");

    let mut missing = good.clone();
    missing.remove("w");
    assert_eq!(
        bind_symbols(&g, &missing).unwrap_err(),
        "input `w` has no buffer"
    );

    let mut too_many_rows = good;
    too_many_rows.get_mut("x").unwrap()[0] = 1 << 40;
    let e = bind_symbols(&g, &too_many_rows).unwrap_err();
    assert!(e.contains("is outside"), "{e}");
}
