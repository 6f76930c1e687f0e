//! The optimizer: equality saturation over vl3c IR with `egg`.
//!
//! A graph becomes an e-graph ([`convert`]), rewrite rules from the tables in [`rules`] grow it
//! with equivalent forms (fused attention, norms, activations, epilogues, layout
//! simplifications), and extraction ([`extract`]) picks the cheapest form under a per-target
//! roofline [`cost`] model. The result is an ordinary IR graph that passes the verifier.
//!
//! [`optimize`] saturates one graph as a whole; [`optimize_graph`] (the default) partitions it
//! into per-layer windows, optimizes each distinct window once and stitches ([`schedule`]).

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod layers;
pub mod rules;
pub mod schedule;

pub use schedule::optimize_graph;

use analysis::TensorAnalysis;
use cost::Target;
use std::time::{Duration, Instant};
use vl3c_ir::{Graph, IrError};

/// Saturation limits; the first one reached stops the run.
#[derive(Clone, Debug)]
pub struct Budget {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            iterations: 30,
            nodes: 200_000,
            time: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub eclasses: usize,
    pub enodes: usize,
    pub iterations: usize,
    pub stop_reason: String,
    pub build_seconds: f64,
    pub saturate_seconds: f64,
    pub extract_seconds: f64,
    /// Scheduler only: reassembling the optimized windows into one graph.
    pub stitch_seconds: f64,
    /// Scheduler only: windows with something to optimize, and how many of them missed the
    /// memo (were saturated); whole-graph [`optimize`] reports 0 and 0.
    pub windows: usize,
    pub windows_optimized: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OptError {
    #[error("graph `{graph}`: extraction failed: {message}")]
    Extract { graph: String, message: String },
    #[error("graph `{graph}`: the optimized graph is invalid: {source}")]
    Invalid { graph: String, source: IrError },
}

pub fn optimize(g: &Graph, target: &Target, budget: &Budget) -> Result<(Graph, Stats), OptError> {
    optimize_with(g, target, budget, rules::all())
}

/// [`optimize`] with only `rules` (filetests run one rule, or a rule and its prerequisites).
pub fn optimize_with(
    g: &Graph,
    target: &Target,
    budget: &Budget,
    rules: Vec<rules::Rule>,
) -> Result<(Graph, Stats), OptError> {
    let t0 = Instant::now();
    let (egraph, roots, _) = convert::to_egraph(g);
    let build_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let runner = egg::Runner::<lang::ENode, TensorAnalysis, ()>::new(TensorAnalysis)
        .with_egraph(egraph)
        .with_iter_limit(budget.iterations)
        .with_node_limit(budget.nodes)
        .with_time_limit(budget.time)
        .run(&rules);
    let saturate_seconds = t1.elapsed().as_secs_f64();
    let egraph = runner.egraph;
    let roots = convert::Roots {
        outputs: roots
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), egraph.find(*id)))
            .collect(),
        effects: roots.effects.iter().map(|id| egraph.find(*id)).collect(),
    };

    let t2 = Instant::now();
    let cost =
        |node: &lang::ENode,
         out: &vl3c_ir::TensorType,
         ins: &[&vl3c_ir::TensorType],
         weight_only: bool| { cost::op_cost(target, node.op(), out, ins, weight_only) };
    let choice =
        extract::extract(&egraph, roots.all(), &cost).map_err(|message| OptError::Extract {
            graph: g.name.clone(),
            message,
        })?;
    let optimized =
        convert::from_egraph(g, &egraph, &choice, &roots).map_err(|source| OptError::Invalid {
            graph: g.name.clone(),
            source,
        })?;
    let stats = Stats {
        eclasses: egraph.number_of_classes(),
        enodes: egraph.total_number_of_nodes(),
        iterations: runner.iterations.len(),
        stop_reason: format!("{:?}", runner.stop_reason),
        build_seconds,
        saturate_seconds,
        extract_seconds: t2.elapsed().as_secs_f64(),
        ..Default::default()
    };
    Ok((optimized, stats))
}
