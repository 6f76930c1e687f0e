//! `CacheAppend`: the new positions written into the KV cache in place. The cache is one
//! read-write buffer ([`CACHE`]), laid out `[.., capacity, ..]` along the append
//! axis; positions `[past_len, past_len + seq_len)` receive `new` and nothing else is touched, so
//! an append costs the new rows only (a copy of the whole cache per decode step would cost the
//! cache). `capacity` defaults to the appended length, the layout the cache state has in the IR;
//! an engine that allocates the cache once at its maximum passes that instead.

use super::chain::{global_index, kernel_name};
use super::elementwise::mem_ty;
use super::layout::{self, Index};
use super::{Template, NMSE_F32};
use crate::kir::{Access, Kernel, KernelBuilder};
use vl3c_ir::{Dim, Graph, Op, TensorType};

/// The cache buffer's name in every instance: one instance serves every cache of its shape, so
/// the buffer cannot be named after any one of them.
pub const CACHE: &str = "cache";

#[derive(Clone, Debug)]
pub struct CacheAppend {
    axis: usize,
    past: TensorType,
    new: TensorType,
    capacity: Dim,
    label: String,
}

impl CacheAppend {
    /// Appends `new` to a cache (currently `past`) along `axis`.
    pub fn new(axis: usize, past: TensorType, new: TensorType) -> Result<CacheAppend, String> {
        mem_ty(past.dtype)?;
        let mut graph = Graph::new("cache_append");
        let read = graph
            .add_source(Op::CacheRead { name: CACHE.into() }, past.clone())
            .map_err(|e| e.to_string())?;
        let appended = graph
            .add_source(Op::Input { name: "new".into() }, new.clone())
            .map_err(|e| e.to_string())?;
        let whole = graph
            .add(
                Op::CacheAppend {
                    name: CACHE.into(),
                    axis,
                },
                &[read, appended],
            )
            .map_err(|e| e.to_string())?;
        let capacity = graph.ty(whole).shape[axis].clone();
        let label = format!(
            "cache_append(axis={axis},past={},new={})",
            past.to_string().replace(' ', ""),
            new.to_string().replace(' ', "")
        );
        Ok(CacheAppend {
            axis,
            past,
            new,
            capacity,
            label,
        })
    }

    /// The cache buffer holds `capacity` positions along the axis (a symbol the engine binds).
    pub fn with_capacity(mut self, capacity: Dim) -> CacheAppend {
        self.label = format!("{},capacity={capacity})", self.label.trim_end_matches(')'));
        self.capacity = capacity;
        self
    }

    fn kernel(&self) -> Kernel {
        let mut b = KernelBuilder::new(
            kernel_name("cache_append", &self.label),
            [super::chain::BLOCK, 1, 1],
        );
        let elem = mem_ty(self.past.dtype).expect("checked in new");
        let cache = b.buffer(CACHE, elem, Access::ReadWrite);
        let new = b.buffer("new", elem, Access::Read);
        let dims = self
            .past
            .shape
            .iter()
            .chain(&self.new.shape)
            .chain([&self.capacity]);
        let syms = layout::declare_symbols(&mut b, &layout::symbols_of(dims));
        let new_shape = layout::dims(&self.new.shape, &syms);
        let total = layout::numel(&new_shape);
        let gid = global_index(&mut b, &total);
        b.if_(layout::lt(gid.clone(), total), |b| {
            let mut at = Index::flat(gid.clone()).get_multi(&new_shape);
            at[self.axis] = layout::add(
                at[self.axis].clone(),
                layout::dim(&self.past.shape[self.axis], &syms),
            );
            let mut cache_shape = new_shape.clone();
            cache_shape[self.axis] = layout::dim(&self.capacity, &syms);
            let dst = Index::multi(at).get_flat(b, &cache_shape);
            b.store(cache, dst, b.load(new, gid.clone()));
        });
        b.finish()
    }
}

impl Template for CacheAppend {
    fn op(&self) -> &'static str {
        "cache_append"
    }

    fn name(&self) -> String {
        self.label.clone()
    }

    fn kernels(&self) -> Vec<Kernel> {
        vec![self.kernel()]
    }

    /// The cache state after the append: a cache-read, the new input, the append (no outputs:
    /// the test compares the cache state).
    fn reference(&self) -> Graph {
        let mut graph = Graph::new("cache_append");
        let read = graph
            .add_source(Op::CacheRead { name: CACHE.into() }, self.past.clone())
            .expect("a source");
        let appended = graph
            .add_source(Op::Input { name: "new".into() }, self.new.clone())
            .expect("a source");
        graph
            .add(
                Op::CacheAppend {
                    name: CACHE.into(),
                    axis: self.axis,
                },
                &[read, appended],
            )
            .expect("checked in new");
        for s in layout::symbols_of(graph.nodes.iter().flat_map(|n| n.ty.shape.iter())) {
            graph.declare_symbol(&s, 0, i64::MAX / 4);
        }
        graph
    }

    /// A copy: exact.
    fn nmse_limit(&self) -> f64 {
        NMSE_F32
    }
}
