//! The scheduler: optimizes a graph window by window, one window per transformer layer, so a
//! 7B model's graphs never become one huge e-graph and identical layers are saturated once.
//!
//! Partition. Weight-only subgraphs and zero-operand nodes (weights, constants, iotas, inputs,
//! cache reads) belong to no window: each window gets its own copy of the ones it reads. Every
//! other node gets a *level*: the prelude, layer `i` of a family, or the epilogue. `fwd` is the
//! latest level among a node's operands and the layers of the weights it reads; `bwd` is the
//! earliest level among its consumers.
//! Where they differ the node sits between two layers, and the residual stream value decides:
//! the *boundary* is the value that leaves the earlier layer's core (or, in the prelude, the one
//! read both by a layer's core and by its norm); what the boundary feeds before the next core
//! (the next layer's norm) moves to the later level, the rest stays early. So each layer window
//! reads the previous residual stream as an external input, and its nodes used elsewhere
//! become window outputs; cache appends stay in their window as effects.
//!
//! Which layer a weight belongs to comes from [`crate::layers`], which finds the residual stream
//! and the period of its blocks in the graph's structure; weight names play no part, so a
//! checkpoint named another way (the DAMO layout, any renaming) is scheduled alike.
//!
//! Shared prelude values (RoPE tables, attention masks, segment ids) stay in the prelude of the
//! stitched graph, but a window that reads one gets a copy of its definition (at most
//! [`INLINE_LIMIT`] nodes) so that rules which recognize a mask's construction still apply; the
//! copies are merged again when windows are stitched, which hash-conses every node.
//!
//! Memo. A window is a standalone graph whose external values are inputs `__ext{k}` and whose
//! weights and caches are renamed `w{k}` / `c{k}` in first-use order, so its text is the same for
//! every layer of a family. The text keys a memo: each distinct window is optimized once with
//! [`crate::optimize`] and re-instantiated with each layer's names.

use crate::cost::Target;
use crate::layers::{copied, weight_anchors, Anchor};
use crate::{optimize, Budget, OptError, Stats};
use std::collections::HashMap;
use std::time::Instant;
use vl3c_ir::{Graph, NodeId, Op};

/// A prelude value is copied into the windows that read it if its definition has at most this
/// many nodes.
pub const INLINE_LIMIT: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Prelude,
    /// (family rank in order of first appearance, layer index)
    Layer(usize, usize),
    Epilogue,
}

/// The partition of a graph into windows.
pub struct Plan {
    /// Per node; `None` for nodes copied into windows (weight-only subgraphs, zero-operand ops).
    pub level: Vec<Option<Level>>,
    /// Prelude nodes that windows copy rather than read as external inputs.
    pub inline: Vec<bool>,
    /// Nodes some other window reads (or graph outputs).
    pub exported: Vec<bool>,
    /// Levels in stitching order with a label each.
    pub windows: Vec<(Level, String)>,
    /// Every edge goes from a level to the same or a later one.
    pub monotone: bool,
}

/// The partition of `g` (see the module docs).
pub fn plan(g: &Graph) -> Plan {
    plan_with(g, &weight_anchors(g))
}

/// [`plan`] with the weights anchored by `anchors` (per node, as [`weight_anchors`] gives).
pub fn plan_with(g: &Graph, anchors: &[Option<Anchor>]) -> Plan {
    let n = g.nodes.len();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate() {
        for inp in &node.inputs {
            consumers[inp.index()].push(i);
        }
    }
    let copied = copied(g);
    // Copied nodes: what layer weights they read, and whether they read any outer weight.
    let mut wlayer: Vec<Option<Level>> = vec![None; n];
    let mut plain = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        match anchors[i] {
            Some(Anchor::Layer { family, index }) => wlayer[i] = Some(Level::Layer(family, index)),
            Some(Anchor::Outer) => plain[i] = true,
            Some(Anchor::Shared) => {}
            None if copied[i] => {
                wlayer[i] = node
                    .inputs
                    .iter()
                    .filter_map(|m| wlayer[m.index()].clone())
                    .max();
                plain[i] = node.inputs.iter().any(|m| plain[m.index()]);
            }
            None => {}
        }
    }

    let mut fwd = vec![Level::Prelude; n];
    let mut anchored = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        if copied[i] {
            continue;
        }
        let from_inputs = node
            .inputs
            .iter()
            .filter(|m| !copied[m.index()])
            .map(|m| fwd[m.index()].clone())
            .max();
        let anchor = node
            .inputs
            .iter()
            .filter_map(|m| wlayer[m.index()].clone())
            .max();
        let reads_plain = node.inputs.iter().any(|m| plain[m.index()]);
        let mut level = from_inputs
            .clone()
            .into_iter()
            .chain(anchor.clone())
            .max()
            .unwrap_or(Level::Prelude);
        if reads_plain && level != Level::Prelude {
            level = Level::Epilogue;
        }
        anchored[i] = anchor.is_some() || reads_plain;
        fwd[i] = level;
    }
    let is_output: Vec<bool> = {
        let mut o = vec![false; n];
        for (_, id) in &g.outputs {
            o[id.index()] = true;
        }
        o
    };
    let mut bwd = fwd.clone();
    for i in (0..n).rev() {
        if copied[i] || anchored[i] {
            continue;
        }
        let mut best: Option<Level> = consumers[i]
            .iter()
            .filter(|&&c| !copied[c])
            .map(|&c| bwd[c].clone())
            .min();
        if is_output[i] {
            best = Some(best.map_or(Level::Epilogue, |b| b.min(Level::Epilogue)));
        }
        if matches!(g.nodes[i].op, Op::CacheAppend { .. }) {
            best = Some(best.map_or(fwd[i].clone(), |b| b.min(fwd[i].clone())));
        }
        bwd[i] = best.unwrap_or_else(|| fwd[i].clone()).max(fwd[i].clone());
    }
    let core = |i: usize| fwd[i] == bwd[i];
    let mut boundary = vec![false; n];
    let mut late = vec![false; n];
    let mut level: Vec<Option<Level>> = vec![None; n];
    for (i, node) in g.nodes.iter().enumerate() {
        if copied[i] {
            continue;
        }
        let ins: Vec<usize> = node
            .inputs
            .iter()
            .map(|m| m.index())
            .filter(|&m| !copied[m])
            .collect();
        if fwd[i] == Level::Prelude {
            // The prelude's residual stream: read by a layer's core and by its norm.
            let cons: Vec<usize> = consumers[i]
                .iter()
                .copied()
                .filter(|&c| !copied[c])
                .collect();
            boundary[i] = cons.iter().any(|&c| core(c) && fwd[c] != Level::Prelude)
                && cons.iter().any(|&c| !core(c));
        } else if !core(i) {
            boundary[i] = ins.iter().any(|&m| core(m) && fwd[m] == fwd[i]);
        }
        if !core(i) {
            late[i] = !boundary[i] && ins.iter().any(|&m| boundary[m] || late[m]);
        }
        level[i] = Some(if late[i] {
            bwd[i].clone()
        } else {
            fwd[i].clone()
        });
    }

    // Prelude values copied into readers: not a residual boundary, small definition.
    let mut inline = vec![false; n];
    for i in 0..n {
        if level[i] != Some(Level::Prelude) || boundary[i] {
            continue;
        }
        if !consumers[i]
            .iter()
            .any(|&c| !copied[c] && level[c] != level[i])
        {
            continue;
        }
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![i];
        let mut ok = true;
        while let Some(m) = stack.pop() {
            if copied[m] || !seen.insert(m) {
                continue;
            }
            if boundary[m] || late[m] || seen.len() > INLINE_LIMIT {
                ok = false;
                break;
            }
            stack.extend(g.nodes[m].inputs.iter().map(|x| x.index()));
        }
        inline[i] = ok;
    }
    // Ancestors of inlined values are copied along with them.
    for i in (0..n).rev() {
        if inline[i] {
            for m in &g.nodes[i].inputs {
                if !copied[m.index()] {
                    inline[m.index()] = true;
                }
            }
        }
    }

    let mut exported = is_output.clone();
    let mut monotone = true;
    for (i, node) in g.nodes.iter().enumerate() {
        for m in node.inputs.iter().map(|m| m.index()) {
            if copied[m] || copied[i] || level[m] == level[i] || inline[m] {
                continue;
            }
            exported[m] = true;
            if level[m] > level[i] {
                monotone = false;
            }
        }
    }
    let mut levels: Vec<Level> = level.iter().flatten().cloned().collect();
    levels.sort();
    levels.dedup();
    let windows = levels
        .into_iter()
        .map(|l| {
            let label = match &l {
                Level::Prelude => "prelude".to_string(),
                Level::Epilogue => "epilogue".to_string(),
                Level::Layer(f, i) => format!("family {f} layer {i}"),
            };
            (l, label)
        })
        .collect();
    Plan {
        level,
        inline,
        exported,
        windows,
        monotone,
    }
}

/// One window as a standalone graph with placeholder names, and how to map it back.
pub struct Window {
    pub graph: Graph,
    /// `__ext{k}` → the node of the whole graph it stands for.
    pub ext: Vec<NodeId>,
    /// `out{k}` → the node of the whole graph it computes.
    pub outs: Vec<NodeId>,
    /// placeholder → real weight or cache name.
    pub names: HashMap<String, String>,
}

struct WindowBuilder<'a> {
    g: &'a Graph,
    plan: &'a Plan,
    level: &'a Level,
    w: Graph,
    map: HashMap<NodeId, NodeId>,
    ext: Vec<NodeId>,
    names: HashMap<String, String>,
    renamed: HashMap<String, String>,
}

impl WindowBuilder<'_> {
    fn placeholder(&mut self, prefix: &str, real: &str) -> String {
        if let Some(p) = self.renamed.get(real) {
            return p.clone();
        }
        let p = format!(
            "{prefix}{}",
            self.renamed
                .values()
                .filter(|v| v.starts_with(prefix))
                .count()
        );
        self.renamed.insert(real.to_string(), p.clone());
        self.names.insert(p.clone(), real.to_string());
        p
    }

    fn get(&mut self, id: NodeId) -> Result<NodeId, vl3c_ir::IrError> {
        if let Some(local) = self.map.get(&id) {
            return Ok(*local);
        }
        let i = id.index();
        let in_window = self.plan.level[i].as_ref() == Some(self.level);
        let local = if self.plan.level[i].is_none() || in_window || self.plan.inline[i] {
            self.emit(id)?
        } else {
            let k = self.ext.len();
            self.ext.push(id);
            self.w.add_source(
                Op::Input {
                    name: format!("__ext{k}"),
                },
                self.g.ty(id).clone(),
            )?
        };
        self.map.insert(id, local);
        Ok(local)
    }

    fn emit(&mut self, id: NodeId) -> Result<NodeId, vl3c_ir::IrError> {
        let node = &self.g.nodes[id.index()];
        let op = match &node.op {
            Op::Weight { name } => Op::Weight {
                name: self.placeholder("w", name),
            },
            Op::CacheRead { name } => Op::CacheRead {
                name: self.placeholder("c", name),
            },
            Op::CacheAppend { name, axis } => Op::CacheAppend {
                name: self.placeholder("c", name),
                axis: *axis,
            },
            op => op.clone(),
        };
        if op.is_source() {
            return self.w.add_source(op, node.ty.clone());
        }
        let inputs = node
            .inputs
            .iter()
            .map(|m| self.get(*m))
            .collect::<Result<Vec<_>, _>>()?;
        self.w.add(op, &inputs)
    }
}

pub fn build_window(g: &Graph, plan: &Plan, level: &Level) -> Result<Window, vl3c_ir::IrError> {
    let mut w = Graph::new("window");
    w.symbols = g.symbols.clone();
    let mut b = WindowBuilder {
        g,
        plan,
        level,
        w,
        map: HashMap::new(),
        ext: Vec::new(),
        names: HashMap::new(),
        renamed: HashMap::new(),
    };
    let mut outs = Vec::new();
    for id in g.node_ids() {
        if plan.level[id.index()].as_ref() != Some(level) {
            continue;
        }
        let local = b.get(id)?;
        if plan.exported[id.index()] {
            b.w.set_output(format!("out{}", outs.len()), local);
            outs.push(id);
        }
    }
    Ok(Window {
        graph: b.w,
        ext: b.ext,
        outs,
        names: b.names,
    })
}

/// Whether a window has anything to keep: outputs or cache appends.
fn has_roots(w: &Graph) -> bool {
    !w.outputs.is_empty()
        || w.nodes
            .iter()
            .any(|n| matches!(n.op, Op::CacheAppend { .. }))
}

/// Hash-consing graph builder for stitching.
struct Stitcher {
    g: Graph,
    cse: HashMap<(String, Vec<NodeId>), NodeId>,
}

impl Stitcher {
    fn add(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        ty: &vl3c_ir::TensorType,
    ) -> Result<NodeId, vl3c_ir::IrError> {
        let sig = if op.is_source() {
            format!("{} : {ty}", op.signature())
        } else {
            op.signature()
        };
        let key = (sig, inputs);
        if let Some(id) = self.cse.get(&key) {
            return Ok(*id);
        }
        let id = if op.is_source() {
            self.g.add_source(op, ty.clone())?
        } else {
            self.g.add(op, &key.1)?
        };
        self.cse.insert(key, id);
        Ok(id)
    }

    /// Copies a node of the original graph (a copied node, or one no window computed).
    fn copy(
        &mut self,
        src: &Graph,
        id: NodeId,
        val: &mut HashMap<NodeId, NodeId>,
    ) -> Result<NodeId, vl3c_ir::IrError> {
        if let Some(v) = val.get(&id) {
            return Ok(*v);
        }
        let node = &src.nodes[id.index()];
        let inputs = node
            .inputs
            .iter()
            .map(|m| self.copy(src, *m, val))
            .collect::<Result<Vec<_>, _>>()?;
        let v = self.add(node.op.clone(), inputs, &node.ty)?;
        val.insert(id, v);
        Ok(v)
    }
}

fn rename(op: &Op, names: &HashMap<String, String>) -> Op {
    let real = |n: &String| names.get(n).cloned().unwrap_or_else(|| n.clone());
    match op {
        Op::Weight { name } => Op::Weight { name: real(name) },
        Op::CacheRead { name } => Op::CacheRead { name: real(name) },
        Op::CacheAppend { name, axis } => Op::CacheAppend {
            name: real(name),
            axis: *axis,
        },
        op => op.clone(),
    }
}

fn add_stats(total: &mut Stats, s: &Stats) {
    total.eclasses += s.eclasses;
    total.enodes += s.enodes;
    total.iterations = total.iterations.max(s.iterations);
    total.build_seconds += s.build_seconds;
    total.saturate_seconds += s.saturate_seconds;
    total.extract_seconds += s.extract_seconds;
    if !s.stop_reason.is_empty() && !total.stop_reason.contains(&s.stop_reason) {
        if !total.stop_reason.is_empty() {
            total.stop_reason.push_str(", ");
        }
        total.stop_reason.push_str(&s.stop_reason);
    }
}

/// The optimized form of every distinct window, keyed by the window's canonical text.
#[derive(Default)]
pub struct Memo {
    entries: HashMap<String, Graph>,
}

impl Memo {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Optimizes `g` window by window (see the module docs) and stitches the result; falls back to
/// whole-graph [`optimize`] when the graph has no layer structure to exploit.
pub fn optimize_graph(
    g: &Graph,
    target: &Target,
    budget: &Budget,
) -> Result<(Graph, Stats), OptError> {
    optimize_graph_with(g, target, budget, &mut Memo::default())
}

/// [`optimize_graph`] with a memo shared across calls (e.g. the two vision graphs).
pub fn optimize_graph_with(
    g: &Graph,
    target: &Target,
    budget: &Budget,
    memo: &mut Memo,
) -> Result<(Graph, Stats), OptError> {
    let invalid = |source| OptError::Invalid {
        graph: g.name.clone(),
        source,
    };
    let t0 = Instant::now();
    let plan = plan(g);
    if !plan.monotone || plan.windows.len() < 2 {
        let (opt, mut stats) = optimize(g, target, budget)?;
        stats.windows = 1;
        stats.windows_optimized = 1;
        return Ok((opt, stats));
    }
    let windows = plan
        .windows
        .iter()
        .map(|(l, _)| build_window(g, &plan, l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let mut stats = Stats {
        build_seconds: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };

    let mut optimized = Vec::with_capacity(windows.len());
    for (w, (_, label)) in windows.iter().zip(&plan.windows) {
        if !has_roots(&w.graph) {
            optimized.push(None);
            continue;
        }
        stats.windows += 1;
        let key = w.graph.to_string();
        if !memo.entries.contains_key(&key) {
            let (opt, s) = optimize(&w.graph, target, budget).map_err(|e| match e {
                OptError::Extract { message, .. } => OptError::Extract {
                    graph: format!("{} ({label})", g.name),
                    message,
                },
                OptError::Invalid { source, .. } => OptError::Invalid {
                    graph: format!("{} ({label})", g.name),
                    source,
                },
            })?;
            add_stats(&mut stats, &s);
            stats.windows_optimized += 1;
            memo.entries.insert(key.clone(), opt);
        }
        optimized.push(Some(key));
    }

    let t1 = Instant::now();
    let mut st = Stitcher {
        g: Graph::new(g.name.clone()),
        cse: HashMap::new(),
    };
    st.g.symbols = g.symbols.clone();
    let mut val: HashMap<NodeId, NodeId> = HashMap::new();
    for (w, key) in windows.iter().zip(&optimized) {
        let Some(key) = key else { continue };
        let opt = &memo.entries[key];
        let mut local: Vec<NodeId> = Vec::with_capacity(opt.nodes.len());
        for node in &opt.nodes {
            let id = match &node.op {
                Op::Input { name } if name.starts_with("__ext") => {
                    let k: usize = name["__ext".len()..]
                        .parse()
                        .expect("window inputs are numbered");
                    st.copy(g, w.ext[k], &mut val).map_err(invalid)?
                }
                op => {
                    let inputs = node.inputs.iter().map(|m| local[m.index()]).collect();
                    st.add(rename(op, &w.names), inputs, &node.ty)
                        .map_err(invalid)?
                }
            };
            local.push(id);
        }
        for (name, id) in &opt.outputs {
            let k: usize = name["out".len()..]
                .parse()
                .expect("window outputs are numbered");
            val.insert(w.outs[k], local[id.index()]);
        }
    }
    for (name, id) in &g.outputs {
        let v = st.copy(g, *id, &mut val).map_err(invalid)?;
        st.g.set_output(name.clone(), v);
    }
    st.g.verify().map_err(invalid)?;
    stats.stitch_seconds = t1.elapsed().as_secs_f64();
    Ok((st.g, stats))
}

/// The optimized window (placeholder names) of layer `index` of the first layer family in `g`:
/// what every such layer of the stitched graph is an instance of.
pub fn optimized_layer_window(
    g: &Graph,
    index: usize,
    target: &Target,
    budget: &Budget,
) -> Result<Option<Graph>, OptError> {
    let plan = plan(g);
    let Some((level, _)) = plan
        .windows
        .iter()
        .find(|(l, _)| *l == Level::Layer(0, index))
    else {
        return Ok(None);
    };
    let w = build_window(g, &plan, level).map_err(|source| OptError::Invalid {
        graph: g.name.clone(),
        source,
    })?;
    let (opt, _) = optimize(&w.graph, target, budget)?;
    Ok(Some(opt))
}
