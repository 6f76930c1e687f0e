//! A CUDA plan checked before anything runs: `cuda/plan.json` is untrusted data (only the cubins
//! and PTX are native code, see ARCHITECTURE.md), and on a GPU nothing catches a launch that
//! reads past a buffer, as the emulator does. So every index the executor takes from the plan
//! (a node, an instance, a tensor, an operand position) is checked here against the engine's
//! graphs, the kernels' declared parameters and `weights.bin`, and an edited plan is a load error
//! naming the entry, never a panic in `exec.rs` or a wild device access.

use super::program::{Instance, Program};
use super::RunError;
use crate::check::ty_of;
use crate::kir::ParamKind;
use crate::lower::{Step, PLAN_FILE};
use std::collections::BTreeSet;
use vl3c_ir::{Graph, Op};

fn plan_err(message: String) -> RunError {
    RunError::File {
        path: PLAN_FILE.into(),
        message,
    }
}

/// The buffers an instance's kernels may name: the reference's inputs (and caches), its
/// outputs, its scratch, and the one the executor adds (`kv_len`, split-KV decode).
fn bindable(inst: &Instance) -> BTreeSet<&str> {
    let mut names = reference_inputs(inst);
    names.extend(inst.reference.outputs.iter().map(|(n, _)| n.as_str()));
    names.extend(inst.scratch.iter().map(|s| s.name.as_str()));
    names.insert("kv_len");
    names
}

fn reference_inputs(inst: &Instance) -> BTreeSet<&str> {
    inst.reference
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Input { name } | Op::CacheRead { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks each instance's kernels against its reference graph: every buffer parameter is one
/// the executor binds, of the element type the reference gives that buffer.
pub(super) fn check_instances(instances: &[Instance]) -> Result<(), RunError> {
    for inst in instances {
        let names = bindable(inst);
        for k in &inst.kernels {
            for p in &k.params {
                let ParamKind::Buffer { elem, .. } = &p.kind else {
                    continue;
                };
                let bad = |m: String| {
                    plan_err(format!(
                        "instance `{}`, kernel `{}`, parameter `{}`: {m}",
                        inst.name, k.name, p.name
                    ))
                };
                if !names.contains(p.name.as_str()) {
                    return Err(bad("is no input, output or scratch of the instance".into()));
                }
                let declared = inst
                    .reference
                    .nodes
                    .iter()
                    .find(|n| matches!(&n.op, Op::Input { name } | Op::CacheRead { name } if *name == p.name))
                    .map(|n| n.ty.dtype)
                    .or_else(|| {
                        let (_, id) = inst.reference.outputs.iter().find(|(n, _)| *n == p.name)?;
                        Some(inst.reference.ty(*id).dtype)
                    });
                if let Some(d) = declared {
                    if ty_of(d) != Some(*elem) {
                        return Err(bad(format!(
                            "is a {elem:?} buffer, but the reference's `{}` is {d}",
                            p.name
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

impl Program {
    /// Checks the plan against the engine's graphs (the ones the caller will run): a plan for
    /// every graph and only those, every node a step or a stored tensor names inside its graph,
    /// every step's operands what its instance reads, and every stored tensor of the dtype and
    /// shape its node has. Run once after [`Program::load`], before any graph runs.
    pub fn check_graphs(&self, graphs: &[&Graph]) -> Result<(), RunError> {
        for (name, gf) in &self.graphs {
            let g = graphs.iter().find(|g| g.name == *name).ok_or_else(|| {
                plan_err(format!(
                    "has steps for graph `{name}`, which graphs.vir does not have"
                ))
            })?;
            let len = g.nodes.len();
            let at =
                |node: usize, m: String| plan_err(format!("graph `{name}`, node %{node}: {m}"));
            let node_in = |node: usize, what: &str, n: usize| {
                if n < len {
                    Ok(())
                } else {
                    Err(at(
                        node,
                        format!("{what} %{n} is not a node of the graph ({len} nodes)"),
                    ))
                }
            };
            for s in &gf.plan.steps {
                let node = s.node();
                node_in(node, "the step's node", node)?;
                match s {
                    Step::Alias { of, .. } => node_in(node, "the alias of", *of)?,
                    Step::Launch {
                        instance,
                        inputs,
                        output,
                        ..
                    } => {
                        let inst = &self.instances[*instance];
                        self.check_inputs(name, node, inst, inputs, false)?;
                        for &n in inputs.values() {
                            node_in(node, "input", n)?;
                        }
                        // A cache append writes the cache it reads, not an output.
                        let writes =
                            inst.reference.outputs.iter().any(|(o, _)| o == output)
                                || inst.reference.nodes.iter().any(
                                    |n| matches!(&n.op, Op::CacheRead { name } if name == output),
                                );
                        if !writes {
                            return Err(at(
                                node,
                                format!(
                                    "output `{output}` is not an output of instance `{}`",
                                    inst.name
                                ),
                            ));
                        }
                    }
                    Step::Matmul {
                        gemm, gemv, inputs, ..
                    } => {
                        for &n in inputs {
                            node_in(node, "operand", n)?;
                        }
                        let ops = &gemm.operands;
                        let most = [Some(ops.a), Some(ops.b), ops.c, ops.bias, Some(1)]
                            .into_iter()
                            .flatten()
                            .max()
                            .unwrap_or(0);
                        if most >= inputs.len() {
                            return Err(at(
                                node,
                                format!("the matmul reads operand {most} of {}", inputs.len()),
                            ));
                        }
                        if let Some(i) = gemv {
                            let want = self.instances[*i].inputs.len();
                            if want > inputs.len() {
                                return Err(at(node, format!("GEMV instance `{}` reads {want} operands, the step gives {}", self.instances[*i].name, inputs.len())));
                            }
                        }
                    }
                    Step::Attention {
                        prefill,
                        decode,
                        inputs,
                        ..
                    } => {
                        for &n in inputs.values() {
                            node_in(node, "input", n)?;
                        }
                        self.check_inputs(name, node, &self.instances[*prefill], inputs, false)?;
                        if let Some(d) = decode {
                            self.check_inputs(name, node, &self.instances[*d], inputs, true)?;
                        }
                    }
                }
            }
            for (&node, tensor) in &gf.stored {
                node_in(node, "stored value of", node)?;
                let (dtype, shape) = self.tensors.get(tensor).ok_or_else(|| {
                    at(
                        node,
                        format!("stored tensor `{tensor}` is not in the index"),
                    )
                })?;
                let ty = &g.nodes[node].ty;
                let consts: Option<Vec<usize>> = ty
                    .shape
                    .iter()
                    .map(|d| d.as_const().map(|c| c as usize))
                    .collect();
                if *dtype != ty.dtype || consts.as_ref() != Some(shape) {
                    return Err(at(
                        node,
                        format!("stored tensor `{tensor}` is {dtype}{shape:?}, the node is {ty}"),
                    ));
                }
            }
        }
        for g in graphs {
            if !self.graphs.contains_key(&g.name) {
                return Err(plan_err(format!("has no steps for graph `{}`", g.name)));
            }
        }
        Ok(())
    }

    /// A step binds exactly the reference's inputs by name (`with_kv_len`: the split-KV decode
    /// instance, whose `kv_len` the executor adds).
    fn check_inputs(
        &self,
        graph: &str,
        node: usize,
        inst: &Instance,
        inputs: &std::collections::BTreeMap<String, usize>,
        with_kv_len: bool,
    ) -> Result<(), RunError> {
        let want = reference_inputs(inst);
        let mut given: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
        if with_kv_len && want.contains("kv_len") {
            given.insert("kv_len");
        }
        if want != given {
            return Err(plan_err(format!(
                "graph `{graph}`, node %{node}: binds {given:?}, but instance `{}` reads {want:?}",
                inst.name
            )));
        }
        Ok(())
    }
}
