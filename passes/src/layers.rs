//! Transformer layers found in a graph's structure, for the scheduler ([`crate::schedule`]).
//!
//! The graph alone decides, never weight names: a checkpoint may name its weights any way (the
//! DAMO layout, a renaming), and a name that happens to contain `layers.3.` proves nothing.
//!
//! Residual stream. A *residual add* is `s + y` where `y` depends on `s` through a node that
//! reads a weight: it adds a weighted sublayer's output back onto that sublayer's input. The
//! weight is what sets it apart from adds like `x + c·x³` inside a GELU, which also read their
//! own operand. Residual adds whose `s` is the previous one form a *chain* `r0 → r1 → … → rm`,
//! `r0` being the value the first one reads (the embeddings). A computed node that depends on
//! `r{k-1}` and not on `rk` is in *block* `k`, the sublayer `rk` closes (with its side effects,
//! e.g. the cache appends); nodes that depend on no `r` are the prelude's, those after `rm` the
//! epilogue's.
//!
//! Layers. How many blocks make a layer (attention and MLP: 2) is not assumed but found as the
//! period of the blocks' structure, because identical layers are exactly what the scheduler's
//! memo exploits. Each block gets a structural hash (ops, types, edges inside the block; no
//! names), and a chain is cut into maximal runs of one repeated sequence of hashes, greedily
//! from its start. Among the sequences that repeat at least twice the one covering the most
//! blocks wins, so layers `A A M` are not taken for layers `A`; on a tie the shortest, so
//! `A M A M` is two layers, not one of four blocks. Where nothing repeats, the rest of the
//! chain is one layer, as in a one-layer model. Each run is a *family*, numbered in graph
//! order. A wrong cut is never unsound (windows stitch back to an equivalent graph), only
//! slower or less fused.
//!
//! Anchors. A weight read only inside one layer anchors its readers to that layer; one read
//! outside every block (embeddings, final norm, LM head) is *outer*; one read by several layers
//! and nothing else anchors nothing, and every window that reads it gets a copy.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use vl3c_ir::{BinaryOp, Graph, Op};

/// Where a weight ties the nodes that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// Read only inside layer `index` of family `family`.
    Layer { family: usize, index: usize },
    /// Read outside every layer, or by no computed node.
    Outer,
    /// Read inside several layers and nowhere else.
    Shared,
}

impl Anchor {
    fn merge(self, other: Anchor) -> Anchor {
        match (self, other) {
            (Anchor::Outer, _) | (_, Anchor::Outer) => Anchor::Outer,
            (a, b) if a == b => a,
            _ => Anchor::Shared,
        }
    }
}

/// Zero-operand nodes and nodes that depend only on weights and constants: values no window
/// computes, copied into each window that reads them.
pub fn copied(g: &Graph) -> Vec<bool> {
    let mut wconst = vec![false; g.nodes.len()];
    let mut copied = vec![false; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        wconst[i] = match &node.op {
            Op::Weight { .. } | Op::Constant { .. } => true,
            _ if node.inputs.is_empty() => false,
            _ => node.inputs.iter().all(|m| wconst[m.index()]),
        };
        copied[i] = node.inputs.is_empty() || wconst[i];
    }
    copied
}

/// The anchor of every weight node (`None` for other nodes); see the module docs.
pub fn weight_anchors(g: &Graph) -> Vec<Option<Anchor>> {
    let n = g.nodes.len();
    let copied = copied(g);
    // A copied node that carries a weight; a computed node that reads one.
    let mut carries = vec![false; n];
    let mut reads = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        let w = node
            .inputs
            .iter()
            .any(|m| copied[m.index()] && carries[m.index()]);
        if copied[i] {
            carries[i] = w || matches!(node.op, Op::Weight { .. });
        } else {
            reads[i] = w;
        }
    }

    // Chains r0, r1, …, rm, in the order of their first residual add.
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut tail: HashMap<usize, usize> = HashMap::new();
    let mut residuals = Residuals {
        g,
        copied: &copied,
        reads: &reads,
        seen: vec![0; n],
        from_s: vec![0; n],
    };
    for i in 0..n {
        let Some(s) = residuals.operand(i) else {
            continue;
        };
        let c = tail.remove(&s).unwrap_or_else(|| {
            chains.push(vec![s]);
            chains.len() - 1
        });
        chains[c].push(i);
        tail.insert(i, c);
    }
    let mut on_stream: Vec<Option<(usize, usize)>> = vec![None; n];
    for (c, chain) in chains.iter().enumerate() {
        for (k, &r) in chain.iter().enumerate() {
            on_stream[r].get_or_insert((c, k));
        }
    }
    // The latest stream value each computed node depends on, strictly.
    let mut after: Vec<Option<(usize, usize)>> = vec![None; n];
    for (i, node) in g.nodes.iter().enumerate() {
        if !copied[i] {
            after[i] = node
                .inputs
                .iter()
                .filter(|m| !copied[m.index()])
                .filter_map(|m| on_stream[m.index()].or(after[m.index()]))
                .max();
        }
    }
    // Block k of chain c (0-based: the block that rk+1 closes).
    let block = |i: usize| after[i].filter(|&(c, k)| !copied[i] && k + 1 < chains[c].len());

    let hashes = block_hashes(g, &chains, &block);
    let mut layer: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut families = 0;
    for h in &hashes {
        let cut = runs(h);
        layer.push(
            cut.iter()
                .map(|&(run, idx)| (families + run, idx))
                .collect(),
        );
        families += cut.last().map_or(0, |&(run, _)| run + 1);
    }

    // Each copied node collects the levels of the computed nodes that read it, through copies.
    let mut anchor: Vec<Option<Anchor>> = vec![None; n];
    for i in (0..n).rev() {
        if copied[i] {
            continue;
        }
        let here = match block(i) {
            Some((c, k)) => Anchor::Layer {
                family: layer[c][k].0,
                index: layer[c][k].1,
            },
            None => Anchor::Outer,
        };
        for m in &g.nodes[i].inputs {
            let m = m.index();
            if copied[m] {
                anchor[m] = Some(anchor[m].map_or(here, |a| a.merge(here)));
            }
        }
    }
    for i in (0..n).rev() {
        if let (true, Some(a)) = (copied[i], anchor[i]) {
            for m in &g.nodes[i].inputs {
                let m = m.index();
                anchor[m] = Some(anchor[m].map_or(a, |b| b.merge(a)));
            }
        }
    }
    g.nodes
        .iter()
        .zip(anchor)
        .map(|(node, a)| matches!(node.op, Op::Weight { .. }).then(|| a.unwrap_or(Anchor::Outer)))
        .collect()
}

/// Finds residual adds; `seen` and `from_s` are scratch marks, one per node.
struct Residuals<'a> {
    g: &'a Graph,
    copied: &'a [bool],
    reads: &'a [bool],
    seen: Vec<usize>,
    from_s: Vec<usize>,
}

impl Residuals<'_> {
    /// If node `i` is a residual add, its stream operand.
    fn operand(&mut self, i: usize) -> Option<usize> {
        let node = &self.g.nodes[i];
        if !matches!(node.op, Op::Binary(BinaryOp::Add)) {
            return None;
        }
        let (a, b) = (node.inputs[0].index(), node.inputs[1].index());
        if self.copied[a] || self.copied[b] || a == b {
            return None;
        }
        let (s, y) = (a.min(b), a.max(b));
        // The ancestors of y that come after s (node order is topological), then those of them
        // that depend on s. Marks hold i + 1, so no clearing between adds.
        let mut found = vec![y];
        let mut stack = vec![y];
        self.seen[y] = i + 1;
        while let Some(x) = stack.pop() {
            for m in &self.g.nodes[x].inputs {
                let m = m.index();
                if m > s && !self.copied[m] && self.seen[m] != i + 1 {
                    self.seen[m] = i + 1;
                    found.push(m);
                    stack.push(m);
                }
            }
        }
        found.sort_unstable();
        self.from_s[s] = i + 1;
        for x in found {
            if self.g.nodes[x]
                .inputs
                .iter()
                .any(|m| self.from_s[m.index()] == i + 1)
            {
                if self.reads[x] {
                    return Some(s);
                }
                self.from_s[x] = i + 1;
            }
        }
        None
    }
}

/// A structural hash of every block of every chain: per node in order its op, dtype, constant
/// dims (symbolic ones are the same in every layer) and operands, each inside the block by its
/// position there.
fn block_hashes(
    g: &Graph,
    chains: &[Vec<usize>],
    block: &dyn Fn(usize) -> Option<(usize, usize)>,
) -> Vec<Vec<u64>> {
    let mut hashers: Vec<Vec<DefaultHasher>> = chains
        .iter()
        .map(|c| vec![DefaultHasher::new(); c.len() - 1])
        .collect();
    let mut counts: Vec<Vec<usize>> = chains.iter().map(|c| vec![0; c.len() - 1]).collect();
    let mut local = vec![0; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        let Some((c, k)) = block(i) else { continue };
        let h = &mut hashers[c][k];
        (node.op.mnemonic(), node.ty.dtype).hash(h);
        for d in &node.ty.shape {
            d.as_const().hash(h);
        }
        for m in &node.inputs {
            match block(m.index()) {
                Some(b) if b == (c, k) => local[m.index()].hash(h),
                _ => usize::MAX.hash(h),
            }
        }
        local[i] = counts[c][k];
        counts[c][k] += 1;
    }
    hashers
        .into_iter()
        .map(|hs| hs.iter().map(Hasher::finish).collect())
        .collect()
}

/// Cuts a sequence of block hashes into runs of repeated layers: per block, (run, layer index).
fn runs(blocks: &[u64]) -> Vec<(usize, usize)> {
    let m = blocks.len();
    let mut out = Vec::with_capacity(m);
    let mut start = 0;
    while start < m {
        let repeats = |p: usize, r: usize| {
            start + (r + 1) * p <= m && blocks[start + r * p..][..p] == blocks[start..][..p]
        };
        let reps = |p: usize| 1 + (1..).take_while(|&r| repeats(p, r)).count();
        let best = (1..=(m - start) / 2)
            .filter(|&p| reps(p) >= 2)
            .max_by_key(|&p| (reps(p) * p, std::cmp::Reverse(p)));
        let (p, r) = best.map_or((m - start, 1), |p| (p, reps(p)));
        let run = out.last().map_or(0, |&(run, _)| run + 1);
        out.extend((0..r * p).map(|b| (run, b / p)));
        start += r * p;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_find_the_layer_period() {
        let (a, b, m, n) = (1, 2, 3, 4);
        assert_eq!(runs(&[a, m]), [(0, 0), (0, 0)], "one layer");
        assert_eq!(
            runs(&[a, m, a, m, a, m]),
            [(0, 0), (0, 0), (0, 1), (0, 1), (0, 2), (0, 2)]
        );
        assert_eq!(
            runs(&[a, m, a, m, a, m, a, m]).iter().map(|r| r.1).max(),
            Some(3),
            "period 2, not 4"
        );
        assert_eq!(
            runs(&[a, a, m, a, a, m]),
            [(0, 0), (0, 0), (0, 0), (0, 1), (0, 1), (0, 1)],
            "period 3, not 1"
        );
        assert_eq!(
            runs(&[a, m, a, m, b, n, b, n, b, n]).into_iter().max(),
            Some((1, 2)),
            "two families"
        );
        assert_eq!(
            runs(&[a, m, a, m, a, n]),
            [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0)],
            "odd last layer"
        );
    }
}
