//! Runs an engine's graphs: the reference executor's binding, checks and memory management,
//! with the engine claiming (through [`Accelerate`]) the nodes its plan lists — folds read from
//! `weights.bin`, matmuls on pre-laid-out weights through the packed kernels.

use crate::exec::shape::{broadcast_shape, expand};
use crate::exec::matmul::{gemm_f32, Layout};
use crate::exec::{execute_with, Accelerate, ExecError, Operands, Outputs, Tensor, WeightSource, WeightView};
use super::kernels::Kernels;
use crate::model::{GraphRunner, NamedTensors};
use memmap2::Mmap;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use vl3c_backends::cpu::{self, Backend, Epilogue, GemmMode, PackedBf16};
use vl3c_backends::engine::{Claim, Plan, TensorEntry, TensorLayout};
use vl3c_ir::{DType, Graph};

pub(crate) struct Runner {
    /// `weights.bin`, mapped; every tensor is a view into it.
    pub(crate) map: Mmap,
    pub(crate) plan: Plan,
    /// Per graph name: claimed node → what computes it.
    pub(crate) claims: HashMap<String, HashMap<usize, Kind>>,
    pub(crate) threads: usize,
    kernels: Option<Kernels>,
    /// Arithmetic of the bf16 GEMMs, shared with `Engine::set_gemm_mode` (0 auto, 1 exact, 2 bf16 dot).
    pub(crate) mode: Arc<AtomicU8>,
}

pub(crate) enum Kind {
    Fold(TensorEntry),
    Matmul(TensorEntry),
    Kernel(usize),
}

impl Runner {
    pub(crate) fn new(map: Mmap, plan: Plan, threads: usize, kernels: Option<Kernels>, mode: Arc<AtomicU8>) -> Runner {
        let claims = plan
            .graphs
            .iter()
            .map(|(g, gp)| {
                let c = gp
                    .claims
                    .iter()
                    .map(|c| match c {
                        Claim::Fold { node, tensor } => (*node, Kind::Fold(plan.tensors[tensor].clone())),
                        Claim::Matmul { node, tensor } => (*node, Kind::Matmul(plan.tensors[tensor].clone())),
                        Claim::Kernel { node, kernel } => (*node, Kind::Kernel(*kernel)),
                    })
                    .collect();
                (g.clone(), c)
            })
            .collect();
        Runner { map, plan, claims, threads: threads.max(1), kernels, mode }
    }

    fn bytes(&self, e: &TensorEntry) -> &[u8] {
        &self.map[e.offset as usize..(e.offset + e.bytes) as usize]
    }
}

impl WeightSource for Runner {
    /// The raw checkpoint weights the graphs still read, straight from the map (no copy).
    fn weight(&self, name: &str) -> Option<WeightView<'_>> {
        let e = self.plan.tensors.get(name).filter(|e| e.layout == TensorLayout::Raw)?;
        Some(WeightView { dtype: DType::from_str(&e.dtype).ok()?, shape: e.shape.clone(), bytes: self.bytes(e) })
    }
}

impl GraphRunner for Runner {
    fn run(&self, graph: &Graph, inputs: &NamedTensors, caches: &NamedTensors) -> Result<Outputs, ExecError> {
        let empty = HashMap::new();
        let claims = self.claims.get(&graph.name).unwrap_or(&empty);
        execute_with(graph, inputs, self, caches, &Accel { runner: self, claims })
    }
}

struct Accel<'r> {
    runner: &'r Runner,
    claims: &'r HashMap<usize, Kind>,
}

impl Accelerate for Accel<'_> {
    fn claim(&self, graph: &Graph, node: usize) -> Option<Vec<bool>> {
        Some(match self.claims.get(&node)? {
            Kind::Fold(_) => super::plan::reads(graph, node, false),
            Kind::Matmul(_) => super::plan::reads(graph, node, true),
            Kind::Kernel(_) => vec![true; graph.nodes[node].inputs.len()],
        })
    }

    fn compute(&self, graph: &Graph, node: usize, ops: &dyn Operands) -> Result<Tensor, String> {
        let arity = graph.nodes[node].inputs.len();
        let e = match &self.claims[&node] {
            Kind::Fold(e) => {
                let dtype = DType::from_str(&e.dtype).map_err(|_| format!("stored dtype `{}`", e.dtype))?;
                return Tensor::from_bytes(dtype, &e.shape, self.runner.bytes(e));
            }
            Kind::Kernel(k) => {
                let kernels = self.runner.kernels.as_ref().ok_or("the engine has no kernels.o")?;
                let ops = (0..arity).map(|p| ops.get(p).map(|t| t.into_owned())).collect::<Result<Vec<_>, _>>();
                return kernels.run(*k, &ops.map_err(|e| e.to_string())?);
            }
            Kind::Matmul(e) => e,
        };
        let a = ops.get(0).map_err(|e| e.to_string())?;
        let epilogue = (2..arity)
            .map(|pos| ops.get(pos).map(|t| t.into_owned()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<Tensor>, String>>()?;
        self.matmul(&a, e, &epilogue)
    }
}

impl Accel<'_> {
    /// `a · W (+ epilogue operands, in order)`, `W` the stored `[k, n]` weight.
    fn matmul(&self, a: &Tensor, e: &TensorEntry, epilogue: &[Tensor]) -> Result<Tensor, String> {
        let (k, n) = (e.shape[0], e.shape[1]);
        if a.shape.last() != Some(&k) {
            return Err(format!("lhs {:?} does not end in the weight's k = {k}", a.shape));
        }
        let av = a.as_f32();
        let m = av.len().checked_div(k).unwrap_or(0);
        let mut shape = a.shape.clone();
        *shape.last_mut().expect("rank >= 1") = n;
        let mut c = vec![0f32; m * n];
        // Epilogue operands the kernel can fold into its stores: a [n] bias, a full residual.
        let bias = epilogue.first().filter(|b| b.numel() == n && b.shape.last() == Some(&n));
        let rest_from = bias.is_some() as usize;
        let residual = epilogue.get(rest_from).filter(|r| r.shape == shape && rest_from + 1 == epilogue.len());
        let (bias_v, res_v) = (bias.map(|b| b.as_f32()), residual.map(|r| r.as_f32()));
        let mut applied = 0;
        let bytes = self.runner.bytes(e);
        match e.layout {
            TensorLayout::PackedBf16 { .. } => {
                let w = PackedBf16::from_bytes(bytes, n, k).map_err(|e| e.to_string())?;
                if m == 1 {
                    cpu::gemv(&w, &av, &mut c, self.runner.threads);
                } else if m > 1 {
                    let ep = Epilogue { bias: bias_v.as_deref(), residual: res_v.as_deref(), accumulate: false };
                    let mode = match self.runner.mode.load(Ordering::Relaxed) {
                        1 => GemmMode::Exact,
                        2 => GemmMode::Bf16Dot,
                        3 => GemmMode::Amx,
                        _ => GemmMode::Auto,
                    };
                    cpu::gemm_with(&av, &w, &mut c, self.runner.threads, &ep, mode, Backend::Auto);
                    applied = bias.is_some() as usize + residual.is_some() as usize;
                }
            }
            TensorLayout::Raw => {
                let w: &[f32] = bytemuck::try_cast_slice(bytes).map_err(|e| format!("stored weight: {e}"))?;
                gemm_f32(&av, Layout::new(m, k, false), w, Layout::new(k, n, false), &mut c, m, k, n);
            }
        }
        // The rest of the epilogue as the reference's fused_matmul adds it: in order, broadcast.
        for t in &epilogue[applied..] {
            if broadcast_shape(&shape, &t.shape)? != shape {
                return Err(format!("epilogue operand {:?} widens the product {shape:?}", t.shape));
            }
            let tv = t.as_f32();
            let tv = expand(&tv, &t.shape, &shape)?;
            for (x, &y) in c.iter_mut().zip(tv.iter()) {
                *x += y;
            }
        }
        Ok(Tensor::f32(shape, c))
    }
}
